"""Writing jobs through a sync Session: the one implementation behind every enqueue.

``enqueue`` calls :func:`write_job` / :func:`write_jobs` directly; ``enqueue_async``
runs the same functions on the AsyncSession's sync session (``run_sync``). Each uses
the session's own connection and transaction and never commits; the statements
come from :mod:`backfill_sa.statements.jobs_insert`. Each call is one producer span
(``send {queue}``) while its :class:`~backfill_sa.telemetry.Telemetry` traces, and
counts its jobs in ``backfill.jobs.enqueued`` while it meters; with neither (no
SDK) it only asks twice whether they are on. A job without a key is inserted
on a DBAPI cursor of that connection when nothing observes the engine's statements
(see :func:`direct_insert_one`); everything else goes through ``Connection.execute``.
:class:`~backfill_sa.client.BackfillClient` sends that same compiled insert straight to
its kept asyncpg connection (:func:`insert_values` gives its values).
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

from backfill_sa.errors import BackfillError, JobValidationError
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.schema_name import DEFAULT_SCHEMA
from backfill_sa.statements.jobs_insert import (
    JOBS_INSERT_AFTER_RUNNING,
    JOBS_INSERT_BATCH,
    JOBS_INSERT_BATCH_SHARED,
    JOBS_INSERT_DEDUPE,
    JOBS_INSERT_ONE,
    JOBS_INSERT_PERIOD,
    JOBS_UPSERT_PRESERVE_RUN_AT,
    JOBS_UPSERT_REPLACE,
    encode_batch,
    encode_payloads,
)
from backfill_sa.telemetry import Telemetry, current_trace_carrier
from backfill_sa.validation import JobRow, JobSpec

__all__ = [
    "BATCH_SIZE",
    "EnqueueOutcome",
    "EnqueueResult",
    "check_specs",
    "direct_insert_one",
    "insert_values",
    "write_checked_jobs",
    "write_batch",
    "write_job",
    "write_jobs",
]

BATCH_SIZE = 5000
"""Jobs per statement in ``enqueue_many``."""

# Each extra round of the keyed path needs another transaction to change the same
# key between two of our statements; a handful of rounds is already pathological.
_MAX_KEY_ROUNDS = 5


class EnqueueOutcome(str, enum.Enum):
    """What an enqueue did."""

    INSERTED = "inserted"
    """A new job was written."""
    REPLACED = "replaced"
    """A waiting job with the same key was updated in place (same id)."""
    UNCHANGED = "unchanged"
    """``unsafe_dedupe`` or ``period``: a job with the key exists; it was left alone."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The job's id and what the enqueue did to it."""

    id: int
    outcome: EnqueueOutcome


_INSERTED = EnqueueOutcome.INSERTED


def _connection(session: Session) -> Connection:
    from backfill_sa.models import Job  # a Session user has the ORM loaded anyway

    return session.connection(bind_arguments={"mapper": Job})


def _traced(row: JobRow, carrier: dict[str, str]) -> JobRow:
    """Return ``row`` with the caller's trace context added to its metadata."""
    if not carrier:
        return row
    metadata = json.loads(row.metadata)
    for key, value in carrier.items():
        metadata.setdefault(key, value)
    return row._replace(metadata=json.dumps(metadata, separators=(",", ":")))


def _params(row: JobRow, channel: str) -> dict[str, object]:
    return {
        "new_task": row.task,
        "new_queue": row.queue,
        "new_payload": row.payload,
        "new_priority": row.priority,
        "new_run_at": row.run_at,
        "new_max_attempts": row.max_attempts,
        "new_job_key": row.job_key,
        "new_retry_policy": row.retry_policy,
        "new_metadata": row.metadata,
        "new_serial_key": row.serial_key,
        "channel": channel,
    }


def _insert_one(conn: Connection, row: JobRow, channel: str) -> EnqueueResult:
    """Insert a job without a key (keyed jobs take :func:`_insert_keyed`)."""
    direct = direct_insert_one(conn)
    if direct is not None:
        return EnqueueResult(direct.execute(conn, (*row, channel)), _INSERTED)
    job_id: int = conn.execute(JOBS_INSERT_ONE, _params(row, channel)).scalar_one()
    return EnqueueResult(job_id, _INSERTED)


# --- the single insert on the DBAPI connection -----------------------------------
#
# One job per transaction spends more time in SQLAlchemy's per-execution layers
# (execution context, parameter processing, result set-up) than in the driver. For
# the drivers we support (asyncpg; psycopg, whose async dialect has the same driver
# name and a DBAPI-style cursor too), and only while nothing observes the statements
# (no event listeners, no echo), JOBS_INSERT_ONE is compiled once per DBAPI
# connection and schema and run on a plain DBAPI cursor of the caller's connection:
# the same connection, transaction and savepoint, the same SQL, one statement.

_DIRECT_DRIVERS = frozenset({"asyncpg", "psycopg"})
_INFO_KEY = "backfill_sa.insert_one"
"""Key of the compiled statements in ``Connection.info`` (per DBAPI connection)."""

# Where each bound parameter comes from in ``(*JobRow, channel)``; the statement's
# literal constants follow those eleven values.
_SOURCE_INDEX = {
    "new_task": 0,
    "new_queue": 1,
    "new_payload": 2,
    "new_priority": 3,
    "new_run_at": 4,
    "new_max_attempts": 5,
    "new_job_key": 6,
    "new_retry_policy": 7,
    "new_metadata": 8,
    "new_serial_key": 9,
    "channel": 10,
}


class _DirectStatement(NamedTuple):
    """:data:`JOBS_INSERT_ONE` compiled for one dialect and schema."""

    sql: str
    constants: tuple[object, ...]
    """Values of the statement's literal bound parameters (``'available'``, ...)."""
    pick: Callable[[tuple[object, ...]], tuple[object, ...]]
    """The driver's parameters, in statement order, from ``(*row, channel, *constants)``."""
    names: tuple[str, ...] | None
    """Parameter names for a named paramstyle (psycopg); ``None`` when positional."""

    def arguments(self, values: tuple[object, ...]) -> Any:
        """The driver's parameters for ``values`` (:func:`insert_values`): a tuple in
        statement order, or a dict for a named paramstyle."""
        picked = self.pick((*values, *self.constants))
        return picked if self.names is None else dict(zip(self.names, picked, strict=True))

    def execute(self, conn: Connection, values: tuple[object, ...]) -> int:
        """Run the insert on ``conn``'s DBAPI connection; return the new job's id.

        Raises:
            sqlalchemy.exc.DBAPIError: the driver raised (wrapped as SQLAlchemy does).
        """
        params = self.arguments(values)
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection is None:  # pragma: no cover - a live Connection has one
            raise BackfillError("enqueue: the session's connection is closed")
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, params)
            found = cursor.fetchone()
        except conn.dialect.loaded_dbapi.Error as error:
            disconnected = conn.dialect.is_disconnect(error, dbapi_connection, cursor)
            if disconnected:
                conn.invalidate(error)
            raise DBAPIError.instance(
                self.sql,
                params,
                error,
                conn.dialect.loaded_dbapi.Error,
                hide_parameters=conn.engine.hide_parameters,
                connection_invalidated=disconnected,
                dialect=conn.dialect,
            ) from error
        finally:
            cursor.close()
        if found is None:  # pragma: no cover - INSERT ... RETURNING always returns
            raise BackfillError("enqueue: the insert returned no row")
        return int(found[0])


def direct_insert_one(conn: Connection) -> _DirectStatement | None:
    """The compiled single insert for ``conn``, or ``None`` to go through SQLAlchemy.

    ``None`` when the driver is not one of ours or when something watches the
    engine's statements (event listeners such as tracing instrumentation, or echo):
    they must see the statement, so it takes the ordinary ``Connection.execute``.
    """
    # SQLAlchemy's own flags (no public API says "no listeners, no echo").
    if (
        conn._has_events
        or conn.engine._has_events
        or conn._echo
        or conn.dialect.driver not in _DIRECT_DRIVERS
    ):
        return None
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    target = translate.get(DEFAULT_SCHEMA, DEFAULT_SCHEMA)
    info = conn.info
    compiled: dict[object, _DirectStatement] | None = info.get(_INFO_KEY)
    if compiled is None:
        compiled = info[_INFO_KEY] = {}
    statement = compiled.get(target)
    if statement is None:
        statement = compiled[target] = _compile_direct(conn, target)
    return statement


def _compile_direct(conn: Connection, target: str | None) -> _DirectStatement:
    translate = None if target == DEFAULT_SCHEMA else {DEFAULT_SCHEMA: target}
    compiled = JOBS_INSERT_ONE.compile(
        dialect=conn.dialect,
        schema_translate_map=translate,
        render_schema_translate=translate is not None,
    )
    defaults = compiled.construct_params(dict.fromkeys(_SOURCE_INDEX))
    names = tuple(compiled.positiontup) if compiled.positiontup else tuple(defaults)
    constant_names = [name for name in names if name not in _SOURCE_INDEX]
    offset = len(_SOURCE_INDEX)
    index = {name: offset + i for i, name in enumerate(constant_names)} | _SOURCE_INDEX
    order = [index[name] for name in names]
    # The statement binds a dozen parameters, so itemgetter always returns a tuple.
    pick: Callable[[tuple[object, ...]], tuple[object, ...]] = itemgetter(*order)
    return _DirectStatement(
        sql=compiled.string,
        constants=tuple(defaults[name] for name in constant_names),
        pick=pick,
        names=None if compiled.positional else names,
    )


def _insert_keyed(
    conn: Connection, spec: JobSpec, channel: str, carrier: dict[str, str]
) -> EnqueueResult:
    params = _params(_traced(spec.row, carrier), channel)
    if spec.job_key_mode in ("unsafe_dedupe", "period"):
        statement = (
            JOBS_INSERT_DEDUPE if spec.job_key_mode == "unsafe_dedupe" else JOBS_INSERT_PERIOD
        )
        for _ in range(_MAX_KEY_ROUNDS):
            found = conn.execute(statement, params).first()
            if found is not None:
                outcome = _INSERTED if found.inserted else EnqueueOutcome.UNCHANGED
                return EnqueueResult(found.id, outcome)
    else:
        upsert = (
            JOBS_UPSERT_PRESERVE_RUN_AT
            if spec.job_key_mode == "preserve_run_at"
            else JOBS_UPSERT_REPLACE
        )
        for _ in range(_MAX_KEY_ROUNDS):
            found = conn.execute(upsert, params).first()
            if found is not None:
                outcome = _INSERTED if found.inserted else EnqueueOutcome.REPLACED
                return EnqueueResult(found.id, outcome)
            # The key is held by a running job: take it over (second statement).
            taken = conn.execute(JOBS_INSERT_AFTER_RUNNING, params).first()
            if taken is not None:
                return EnqueueResult(taken.id, _INSERTED)
    raise BackfillError(
        f"job_key: {spec.row.job_key!r} kept changing under concurrent enqueues; try again"
    )


def _insert_batch(conn: Connection, rows: list[JobRow], channel: str) -> list[EnqueueResult]:
    if len(rows) == 1:
        return [_insert_one(conn, rows[0], channel)]
    params = {"new_jobs": encode_batch(rows), "channel": channel}
    ids: list[int] = conn.execute(JOBS_INSERT_BATCH, params).one().ids
    if len(ids) != len(rows):
        raise BackfillError(f"enqueue_many: wrote {len(ids)} jobs for {len(rows)} specs")
    return [EnqueueResult(job_id, _INSERTED) for job_id in ids]


def insert_values(spec: JobSpec, channel: str) -> tuple[object, ...]:
    """The values of a job without a key for :data:`JOBS_INSERT_ONE`, as
    :func:`write_job` sends them: the spec's row with the caller's trace context added
    to its metadata, then the NOTIFY channel."""
    return (*_traced(spec.row, current_trace_carrier()), channel)


def write_job(session: Session, spec: JobSpec, telemetry: Telemetry) -> EnqueueResult:
    """Write one job in ``session``'s transaction (see ``enqueue``)."""
    conn = _connection(session)
    channel = channel_for(schema_of(conn))
    row = spec.row
    if telemetry.tracing:
        with telemetry.enqueue_span(row.task, row.queue) as span:
            result = _write_one(conn, spec, channel, telemetry.trace_carrier())
            span.set_job_id(result.id)
    else:
        result = _write_one(conn, spec, channel, current_trace_carrier())
    if telemetry.metering:
        telemetry.record_enqueue(row.task, row.queue, result.outcome.value)
    return result


def _write_one(
    conn: Connection, spec: JobSpec, channel: str, carrier: dict[str, str]
) -> EnqueueResult:
    if spec.row.job_key is None:
        return _insert_one(conn, _traced(spec.row, carrier), channel)
    return _insert_keyed(conn, spec, channel, carrier)


def write_jobs(
    session: Session, specs: Iterable[JobSpec], telemetry: Telemetry
) -> list[EnqueueResult]:
    """Write many jobs in ``session``'s transaction (see ``enqueue_many``).

    Raises:
        JobValidationError: an item is not a JobSpec (before any SQL).
    """
    return write_checked_jobs(session, check_specs(specs), telemetry)


def write_batch(
    session: Session, spec: JobSpec, payloads: list[str], telemetry: Telemetry
) -> list[EnqueueResult]:
    """Write one job per payload text (``batch_payloads``), each with ``spec``'s other
    values, in ``session``'s transaction: one statement per :data:`BATCH_SIZE` jobs
    (see ``enqueue_batch``).

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    if not payloads:
        return []
    row = spec.row
    if telemetry.tracing:
        with telemetry.enqueue_span(row.task, row.queue, count=len(payloads), batch=True):
            results = _insert_shared(session, spec, payloads, telemetry.trace_carrier())
    else:
        results = _insert_shared(session, spec, payloads, current_trace_carrier())
    if telemetry.metering:
        telemetry.record_enqueued({(row.task, row.queue, _INSERTED.value): len(results)})
    return results


def _insert_shared(
    session: Session, spec: JobSpec, payloads: list[str], carrier: dict[str, str]
) -> list[EnqueueResult]:
    conn = _connection(session)
    params = _params(_traced(spec.row, carrier), channel_for(schema_of(conn)))
    del params["new_payload"], params["new_job_key"]
    results: list[EnqueueResult] = []
    for start in range(0, len(payloads), BATCH_SIZE):
        params["new_payloads"] = encode_payloads(payloads[start : start + BATCH_SIZE])
        ids: list[int] = conn.execute(JOBS_INSERT_BATCH_SHARED, params).one().ids
        results += [EnqueueResult(job_id, _INSERTED) for job_id in ids]
    if len(results) != len(payloads):
        raise BackfillError(f"enqueue_batch: wrote {len(results)} jobs for {len(payloads)}")
    return results


def write_checked_jobs(
    session: Session, checked: list[JobSpec], telemetry: Telemetry
) -> list[EnqueueResult]:
    """:func:`write_jobs` for specs that :func:`check_specs` has already returned.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    if not checked:
        return []
    if telemetry.tracing:
        tasks = {spec.row.task for spec in checked}
        queues = {spec.row.queue for spec in checked}
        with telemetry.enqueue_span(
            tasks.pop() if len(tasks) == 1 else None,
            queues.pop() if len(queues) == 1 else None,
            count=len(checked),
            batch=True,
        ):
            results = _insert_specs(session, checked, telemetry.trace_carrier())
    else:
        results = _insert_specs(session, checked, current_trace_carrier())
    if telemetry.metering:
        telemetry.record_enqueued(
            Counter(
                (spec.row.task, spec.row.queue, result.outcome.value)
                for spec, result in zip(checked, results, strict=True)
            )
        )
    return results


def _insert_specs(
    session: Session, checked: list[JobSpec], carrier: dict[str, str]
) -> list[EnqueueResult]:
    conn = _connection(session)
    channel = channel_for(schema_of(conn))
    rows = [spec.row for spec in checked]
    if carrier:
        rows = [_traced(row, carrier) for row in rows]
    results: list[EnqueueResult] = []
    pending: list[JobRow] = []
    for spec, row in zip(checked, rows, strict=True):
        if row.job_key is None:
            pending.append(row)
            if len(pending) == BATCH_SIZE:
                results += _insert_batch(conn, pending, channel)
                pending = []
        else:
            # Keyed jobs depend on the rows already there: one at a time, in order.
            if pending:
                results += _insert_batch(conn, pending, channel)
                pending = []
            results.append(_insert_keyed(conn, spec, channel, carrier))
    if pending:
        results += _insert_batch(conn, pending, channel)
    return results


def check_specs(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """Return ``specs`` as a list.

    Raises:
        JobValidationError: an item is not a JobSpec.
    """
    checked = list(specs)
    if all(map(isinstance, checked, repeat(JobSpec))):
        return checked
    for index, spec in enumerate(checked):
        if not isinstance(spec, JobSpec):
            raise JobValidationError(f"specs[{index}]", "must be a JobSpec")
    return checked  # pragma: no cover - the loop above raises
