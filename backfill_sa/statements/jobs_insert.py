"""Statements that add jobs: one job, keyed upserts, batches; each wakes workers itself.

Every statement here inserts (or upserts) and issues ``pg_notify(:channel, queue)`` in
the same statement, so an enqueue is one round trip; PostgreSQL delivers the
notification only when the caller's transaction commits. Only jobs that are runnable
now (state ``available``) notify: scheduled ones are promoted by the worker.

The state is decided in SQL against the database clock: ``scheduled`` when
``run_at > now()``, else ``available``; a NULL ``run_at`` means ``now()``.

Bound parameters (names are the contract with :mod:`backfill_sa.job_writer`):
``new_task``, ``new_queue``, ``new_payload`` (JSON text), ``new_priority``,
``new_run_at`` (NULL = now), ``new_max_attempts``, ``new_job_key``,
``new_retry_policy`` (JSON text or NULL), ``new_metadata`` (JSON text) and
``channel``; the batch statement takes ``new_jobs`` (see :func:`encode_batch`), the
shared-options batch ``new_payloads`` (see :func:`encode_payloads`). No
parameter is named like a column: SQLAlchemy would take such a name passed to an
INSERT or UPDATE as an extra column value.

The statements are built once, at import, and never changed; SQLAlchemy compiles
each once per dialect and schema map and caches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from json.encoder import encode_basestring as _json_string
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Select,
    SmallInteger,
    Table,
    Text,
    bindparam,
    case,
    cast,
    column,
    false,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by, insert
from sqlalchemy.sql.selectable import CTE

from backfill_sa.tables import UNFINISHED_KEY_PREDICATE, jobs_table
from backfill_sa.validation import JobRow

__all__ = [
    "JOBS_INSERT_AFTER_RUNNING",
    "JOBS_INSERT_BATCH",
    "JOBS_INSERT_BATCH_SHARED",
    "JOBS_INSERT_DEDUPE",
    "JOBS_INSERT_PERIOD",
    "JOBS_INSERT_ONE",
    "JOBS_NOTIFY_IF_AVAILABLE",
    "JOBS_UPSERT_PRESERVE_RUN_AT",
    "JOBS_UPSERT_REPLACE",
    "encode_batch",
    "encode_payloads",
]

_jobs: Table = jobs_table
_c = _jobs.c
_TZ = DateTime(timezone=True)
_AVAILABLE = "available"
_SCHEDULED = "scheduled"
_RUNNING = "running"

_UNFINISHED_KEY = text(UNFINISHED_KEY_PREDICATE)
_channel = bindparam("channel", type_=Text)
_run_at = bindparam("new_run_at", type_=_TZ)
_job_key = bindparam("new_job_key", type_=Text)


def _state_for(run_at: ColumnElement[Any]) -> ColumnElement[str]:
    """``scheduled`` when ``run_at`` is in the future by the database clock."""
    return case((run_at > func.now(), literal(_SCHEDULED)), else_=literal(_AVAILABLE))


def _new_job_values(*, keyed: bool) -> dict[str, ColumnElement[Any]]:
    """Column values of a new job, from the single-job bound parameters."""
    values: dict[str, ColumnElement[Any]] = {
        "task": bindparam("new_task", type_=Text),
        "queue": bindparam("new_queue", type_=Text),
        "payload": cast(bindparam("new_payload", type_=Text), JSONB),
        "priority": bindparam("new_priority", type_=SmallInteger),
        "run_at": func.coalesce(_run_at, func.now()),
        "state": _state_for(_run_at),
        "max_attempts": bindparam("new_max_attempts", type_=SmallInteger),
        "retry_policy": cast(bindparam("new_retry_policy", type_=Text), JSONB),
        "metadata": cast(bindparam("new_metadata", type_=Text), JSONB),
    }
    if keyed:
        values["job_key"] = _job_key
    return values


def _notify(queue: ColumnElement[str], state: ColumnElement[str]) -> ColumnElement[bool]:
    """``pg_notify(channel, queue)`` for rows that are available now; true if sent.

    ``pg_notify`` returns ``void``, which neither drivers nor UNION handle well, so
    the statements return whether it ran instead.
    """
    sent = func.pg_notify(_channel, queue).is_not(None)
    return case((state == _AVAILABLE, sent), else_=false())


# Set only on upserts, by PostgreSQL: 0 on the row version an INSERT created, the
# upserting transaction's id on a row that ON CONFLICT DO UPDATE rewrote. The
# system column has no place in the model, hence the literal name.
_xmax = literal_column("xmax", type_=BigInteger)


def _returning_job(stmt: Any, *, with_inserted: bool) -> CTE:
    cols: list[ColumnElement[Any]] = [_c.id, _c.queue, _c.state]
    if with_inserted:
        cols.append((cast(_xmax, Text) == "0").label("inserted"))
    return stmt.returning(*cols).cte("ins")  # type: ignore[no-any-return]


def _select_notifying(ins: CTE, *, with_inserted: bool) -> Select[Any]:
    cols: list[ColumnElement[Any]] = [ins.c.id]
    if with_inserted:
        cols.append(ins.c.inserted)
    cols.append(_notify(ins.c.queue, ins.c.state).label("notified"))
    return select(*cols)


def _build_insert_one() -> Select[Any]:
    stmt = insert(_jobs).values(_new_job_values(keyed=False))
    return _select_notifying(_returning_job(stmt, with_inserted=False), with_inserted=False)


def _build_upsert(*, preserve_run_at: bool) -> Select[Any]:
    stmt = insert(_jobs).values(_new_job_values(keyed=True))
    new = stmt.excluded
    run_at: ColumnElement[Any] = new.run_at
    if preserve_run_at:
        # Graphile Worker's rule: keep the existing run_at unless the existing job
        # has already been attempted (it is waiting out a retry backoff).
        run_at = case((_c.attempts == 0, _c.run_at), else_=new.run_at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_c.job_key],
        index_where=_UNFINISHED_KEY,
        set_={
            _c.task: new.task,
            _c.queue: new.queue,
            _c.payload: new.payload,
            _c.priority: new.priority,
            _c.run_at: run_at,
            _c.state: _state_for(run_at),
            _c.max_attempts: new.max_attempts,
            _c.attempts: 0,
            _c.last_error: null(),
            _c.retry_policy: new.retry_policy,
            _c.metadata: new.metadata,
            _c.updated_at: func.now(),
        },
        # A running job is left to finish; the caller then takes its key over.
        where=_c.state != _RUNNING,
    )
    return _select_notifying(_returning_job(stmt, with_inserted=True), with_inserted=True)


def _build_insert_dedupe() -> Select[Any]:
    stmt = insert(_jobs).values(_new_job_values(keyed=True))
    stmt = stmt.on_conflict_do_nothing(index_elements=[_c.job_key], index_where=_UNFINISHED_KEY)
    ins = _returning_job(stmt, with_inserted=False)
    inserted = select(
        ins.c.id,
        true().label("inserted"),
        _notify(ins.c.queue, ins.c.state).label("notified"),
    )
    # The existing job, when the insert did nothing. It can be missing from this
    # statement's snapshot if its inserter committed while we waited: the caller
    # then runs the statement again.
    existing = select(_c.id, false(), false()).where(
        _c.job_key == _job_key,
        # Inline constants: the lookup then uses the partial unique index.
        _c.state.in_([literal_column(f"'{s}'") for s in (_AVAILABLE, _SCHEDULED, _RUNNING)]),
        ~select(ins.c.id).exists(),
    )
    return inserted.union_all(existing)  # type: ignore[return-value]


def _build_insert_period() -> Select[Any]:
    # As dedupe, but a finished job still retained (completed or cancelled) holds the
    # key too: the key stays taken until that job is pruned.
    finished: list[ColumnElement[str]] = [
        literal_column(f"'{s}'", Text) for s in ("completed", "cancelled")
    ]
    retained = select(_c.id).where(_c.job_key == _job_key, _c.state.in_(finished)).exists()
    values = _new_job_values(keyed=True)
    source = select(*(expr.label(name) for name, expr in values.items())).where(~retained)
    stmt = (
        insert(_jobs)
        .from_select(list(values), source)
        .on_conflict_do_nothing(index_elements=[_c.job_key], index_where=_UNFINISHED_KEY)
    )
    ins = _returning_job(stmt, with_inserted=False)
    inserted = select(
        ins.c.id,
        true().label("inserted"),
        _notify(ins.c.queue, ins.c.state).label("notified"),
    )
    # The holder: an unfinished job first, else the newest retained one.
    unfinished = _c.state.in_(
        [literal_column(f"'{s}'") for s in (_AVAILABLE, _SCHEDULED, _RUNNING)]
    )
    holder = (
        select(_c.id.label("id"), false().label("inserted"), false().label("notified"))
        .where(_c.job_key == _job_key, ~select(ins.c.id).exists())
        .order_by(case((unfinished, 0), else_=1), _c.id.desc())
        .limit(1)
        .subquery("holder")
    )
    return inserted.union_all(select(holder.c.id, holder.c.inserted, holder.c.notified))  # type: ignore[return-value]


def _build_insert_after_running() -> Select[Any]:
    # Graphile Worker's rule for a key held by a running job: take the key off the
    # running job and stop it from being retried (max_attempts = attempts made),
    # then insert the new job with the key. The insert reads the cleared rows, so
    # the key is off the old row before the new one claims it.
    cleared = (
        update(_jobs)
        .where(_c.job_key == _job_key, _c.state == _RUNNING)
        .values(
            job_key=null(),
            max_attempts=func.greatest(_c.attempts, 1),
            updated_at=func.now(),
        )
        .returning(_c.id)
        .cte("cleared")
    )
    gate = select(func.count().label("n")).select_from(cleared).subquery("gate")
    values = _new_job_values(keyed=True)
    source = select(*(expr.label(name) for name, expr in values.items())).select_from(gate)
    stmt = (
        insert(_jobs)
        .from_select(list(values), source)
        .on_conflict_do_nothing(index_elements=[_c.job_key], index_where=_UNFINISHED_KEY)
    )
    ins = _returning_job(stmt, with_inserted=False)
    return _select_notifying(ins, with_inserted=False)


def encode_batch(rows: Iterable[JobRow]) -> str:
    """Encode rows as the JSON document :data:`JOBS_INSERT_BATCH` takes.

    One array per job: ``[task, queue, payload, priority, run_at, max_attempts,
    retry_policy, metadata]``, with ``run_at`` as ISO 8601 text or null. The
    payload, retry policy and metadata are spliced in as the JSON texts they
    already are. One text parameter is far cheaper for the drivers to send than
    eight arrays, and PostgreSQL parses the whole document once.
    """
    return "[" + ",".join([_encode_row(row) for row in rows]) + "]"


def encode_payloads(payloads: list[str]) -> str:
    """The JSON array :data:`JOBS_INSERT_BATCH_SHARED` takes, from payload JSON texts."""
    return "[" + ",".join(payloads) + "]"


def _encode_row(row: JobRow) -> str:
    run_at = "null" if row.run_at is None else '"' + row.run_at.isoformat() + '"'
    return (
        f"[{_json_string(row.task)},{_json_string(row.queue)},{row.payload},{row.priority},"
        f"{run_at},{row.max_attempts},{row.retry_policy or 'null'},{row.metadata}]"
    )


def _build_insert_batch() -> Select[Any]:
    document = cast(bindparam("new_jobs", type_=Text), JSONB)
    elements = (
        func.jsonb_array_elements(document)
        .table_valued(column("job", JSONB), with_ordinality="ord")
        .render_derived(name="u")
    )
    job = elements.c.job
    run_at = cast(job[4].astext, _TZ)
    source = select(
        job[0].astext,
        job[1].astext,
        job[2],
        cast(job[3].astext, SmallInteger),
        func.coalesce(run_at, func.now()),
        _state_for(run_at),
        cast(job[5].astext, SmallInteger),
        func.nullif(job[6], cast(literal("null"), JSONB)),
        job[7],
    ).order_by(elements.c.ord)
    columns = [
        "task",
        "queue",
        "payload",
        "priority",
        "run_at",
        "state",
        "max_attempts",
        "retry_policy",
        "metadata",
    ]
    return _ids_and_woken(insert(_jobs).from_select(columns, source))


def _build_insert_batch_shared() -> Select[Any]:
    document = cast(bindparam("new_payloads", type_=Text), JSONB)
    elements = (
        func.jsonb_array_elements(document)
        .table_valued(column("payload", JSONB), with_ordinality="ord")
        .render_derived(name="u")
    )
    values = _new_job_values(keyed=False) | {"payload": elements.c.payload}
    source = (
        select(*(expr.label(name) for name, expr in values.items()))
        .select_from(elements)
        .order_by(elements.c.ord)
    )
    return _ids_and_woken(insert(_jobs).from_select(list(values), source))


def _ids_and_woken(stmt: Any) -> Select[Any]:
    """``(ids, woken)`` of a batch INSERT ... SELECT whose rows go in in input order.

    Rows inserted in input order (the sources ORDER BY their ordinality) take identity
    ids that ascend in input order, so the sorted id array maps back onto the input.
    Each queue with a job available now is notified once.
    """
    ins_cte = stmt.returning(_c.id, _c.queue, _c.state).cte("ins")
    ids = select(func.array_agg(aggregate_order_by(ins_cte.c.id, ins_cte.c.id)))
    queues = select(ins_cte.c.queue).where(ins_cte.c.state == _AVAILABLE).distinct()
    woken_queues = queues.subquery("woken_queues")
    notified = select(func.pg_notify(_channel, woken_queues.c.queue).label("n")).subquery("n")
    woken = select(func.count()).select_from(notified)
    return select(ids.scalar_subquery().label("ids"), woken.scalar_subquery().label("woken"))


def _build_notify_if_available() -> Select[Any]:
    return select(func.pg_notify(_channel, _c.queue)).where(
        _c.id == bindparam("id", type_=BigInteger), _c.state == _AVAILABLE
    )


JOBS_INSERT_ONE: Select[Any] = _build_insert_one()
"""Insert one job without a key; returns ``(id, notified)``."""

JOBS_UPSERT_REPLACE: Select[Any] = _build_upsert(preserve_run_at=False)
"""Insert a keyed job or replace the waiting job holding the key; returns
``(id, inserted, notified)``, or no row when the key is held by a running job."""

JOBS_UPSERT_PRESERVE_RUN_AT: Select[Any] = _build_upsert(preserve_run_at=True)
"""As :data:`JOBS_UPSERT_REPLACE`, keeping the existing job's ``run_at`` when that
job has not been attempted yet."""

JOBS_INSERT_DEDUPE: Select[Any] = _build_insert_dedupe()
"""Insert a keyed job unless any job holds the key; returns ``(id, inserted,
notified)`` for the new or the existing job (rarely no row: run it again)."""

JOBS_INSERT_PERIOD: Select[Any] = _build_insert_period()
"""Insert a keyed job unless any job holds the key, a retained finished job
included; returns ``(id, inserted, notified)`` for the new job or the holder
(rarely no row: run it again)."""

JOBS_INSERT_AFTER_RUNNING: Select[Any] = _build_insert_after_running()
"""Take the key off a running job (no more retries for it) and insert the new job;
returns ``(id, notified)``, or no row if another waiting job took the key meanwhile."""

JOBS_INSERT_BATCH: Select[Any] = _build_insert_batch()
"""Insert many jobs without keys from one JSON document (:func:`encode_batch`, bound
as ``new_jobs``); returns one row
``(ids, woken)``: the new ids in input order and the number of queues notified."""

JOBS_INSERT_BATCH_SHARED: Select[Any] = _build_insert_batch_shared()
"""Insert one job per payload, all with the same options: the single-job parameters
(no ``new_payload``, no key) plus ``new_payloads``, a JSON array of the payloads
(:func:`encode_payloads`); returns ``(ids, woken)`` as :data:`JOBS_INSERT_BATCH`."""

JOBS_NOTIFY_IF_AVAILABLE: Select[Any] = _build_notify_if_available()
"""Notify the job's queue if the job ``id`` is available now (ORM-added jobs)."""
