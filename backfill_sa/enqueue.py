"""Enqueue jobs inside the caller's own transaction, for Session and AsyncSession.

A job is written through the session's own connection, in its open transaction:
nothing here commits, rolls back or opens another connection. Rolling back drops the
job; committing makes it visible and wakes the workers, because the insert statement
itself issues ``pg_notify`` and PostgreSQL delivers it only on commit::

    with Session(engine) as session, session.begin():
        session.add(Order(id=42))
        enqueue(session, "send_receipt", {"order_id": 42}, queue="fast")

The async functions run the very same code on the AsyncSession's underlying sync
session (``AsyncSession.run_sync``), so the two APIs cannot drift apart.

Adding a :class:`~backfill_sa.models.Job` ORM-style (``session.add(Job(...))``) is
validated the same way and wakes workers on commit: importing this module registers
the mapper listeners that do it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict
from typing import cast as type_cast

from sqlalchemy import Connection, DateTime, case, event, func, literal
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session

from backfill_sa.errors import BackfillError, JobValidationError
from backfill_sa.models import Job, JobState
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.priority import BULK, FAST, Priority
from backfill_sa.retry import RetryPolicy
from backfill_sa.statements.jobs_insert import (
    JOBS_INSERT_AFTER_RUNNING,
    JOBS_INSERT_BATCH,
    JOBS_INSERT_DEDUPE,
    JOBS_INSERT_ONE,
    JOBS_NOTIFY_IF_AVAILABLE,
    JOBS_UPSERT_PRESERVE_RUN_AT,
    JOBS_UPSERT_REPLACE,
    encode_batch,
)
from backfill_sa.validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    JobKeyMode,
    JobRow,
    JobSpec,
)

if TYPE_CHECKING:
    import datetime as dt

    from typing_extensions import Unpack

__all__ = [
    "BATCH_SIZE",
    "EnqueueOptions",
    "EnqueueOutcome",
    "EnqueueResult",
    "JobSpec",
    "enqueue",
    "enqueue_async",
    "enqueue_bulk",
    "enqueue_bulk_async",
    "enqueue_critical",
    "enqueue_critical_async",
    "enqueue_emergency",
    "enqueue_emergency_async",
    "enqueue_fast",
    "enqueue_fast_async",
    "enqueue_many",
    "enqueue_many_async",
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
    """``unsafe_dedupe``: a job with the key exists; it was left alone."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The job's id and what the enqueue did to it."""

    id: int
    outcome: EnqueueOutcome


_INSERTED = EnqueueOutcome.INSERTED


class EnqueueOptions(TypedDict, total=False):
    """Keyword options the ``enqueue_fast``/``_bulk``/``_critical``/``_emergency``
    helpers pass on to :func:`enqueue` (see there)."""

    run_at: dt.datetime | None
    max_attempts: int | None
    retry: RetryPolicy | None
    job_key: str | None
    job_key_mode: JobKeyMode
    metadata: Mapping[str, object] | None
    max_payload_bytes: int


# --- execution: one implementation, on a sync Session ---------------------------


def _connection(session: Session) -> Connection:
    return session.connection(bind_arguments={"mapper": Job})


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
        "channel": channel,
    }


def _insert_one(conn: Connection, row: JobRow, channel: str) -> EnqueueResult:
    if row.job_key is not None:
        raise AssertionError("keyed jobs take _insert_keyed")
    job_id: int = conn.execute(JOBS_INSERT_ONE, _params(row, channel)).scalar_one()
    return EnqueueResult(job_id, _INSERTED)


def _insert_keyed(conn: Connection, spec: JobSpec, channel: str) -> EnqueueResult:
    params = _params(spec.row, channel)
    if spec.job_key_mode == "unsafe_dedupe":
        for _ in range(_MAX_KEY_ROUNDS):
            found = conn.execute(JOBS_INSERT_DEDUPE, params).first()
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


def _enqueue_spec(session: Session, spec: JobSpec) -> EnqueueResult:
    conn = _connection(session)
    channel = channel_for(schema_of(conn))
    if spec.row.job_key is None:
        return _insert_one(conn, spec.row, channel)
    return _insert_keyed(conn, spec, channel)


def _enqueue_specs(session: Session, specs: Iterable[JobSpec]) -> list[EnqueueResult]:
    checked = _check_specs(specs)
    if not checked:
        return []
    conn = _connection(session)
    channel = channel_for(schema_of(conn))
    results: list[EnqueueResult] = []
    pending: list[JobRow] = []
    for spec in checked:
        row = spec.row
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
            results.append(_insert_keyed(conn, spec, channel))
    if pending:
        results += _insert_batch(conn, pending, channel)
    return results


def _check_specs(specs: Iterable[JobSpec]) -> list[JobSpec]:
    checked = list(specs)
    for index, spec in enumerate(checked):
        if not isinstance(spec, JobSpec):
            raise JobValidationError(f"specs[{index}]", "must be a JobSpec")
    return checked


# --- public API -----------------------------------------------------------------


def enqueue(
    session: Session,
    task: str,
    payload: object = None,
    *,
    queue: str = BULK,
    priority: int = Priority.BULK_DEFAULT,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    job_key: str | None = None,
    job_key_mode: JobKeyMode = "replace",
    metadata: Mapping[str, object] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> EnqueueResult:
    """Add a job in ``session``'s current transaction; it runs once that commits.

    One statement inserts the job and issues the NOTIFY that wakes workers on commit
    (only for jobs runnable now: a future ``run_at`` makes the job ``scheduled``,
    decided by the database clock). The session is not committed or flushed.

    With a ``job_key``, an unfinished job holding the same key decides the outcome,
    as in Graphile Worker:

    * ``replace`` (default): a waiting job (``available`` or ``scheduled``) is
      updated in place: task, payload, queue, priority, run_at, max_attempts, retry
      policy and metadata take the new values, ``attempts`` goes back to 0 and
      ``last_error`` to null -> ``REPLACED`` (same id).
    * ``preserve_run_at``: the same, but the waiting job keeps its ``run_at`` unless
      it has already been attempted (it is waiting out a retry), in which case the
      new ``run_at`` applies -> ``REPLACED``.
    * In both modes, when the job holding the key is **running**, it is left to
      finish but loses the key and will not be retried (its ``max_attempts`` is
      set to the attempts it has made, so a failure sends it to the dead-letter
      queue), and a new job with the key is inserted -> ``INSERTED`` (new id). This
      takes a second statement; every other case is one statement.
    * ``unsafe_dedupe``: if any job holds the key, running or not, it is left
      untouched and the new arguments are dropped -> ``UNCHANGED`` with the existing
      job's id. Finished jobs have left the table, so they hold no key.

    Args:
        session: the caller's Session; its transaction is begun if needed.
        task: task handler name (1-200 characters).
        payload: the job's JSON value; ``None`` stores ``{}``.
        queue: queue name (1-100 characters), default ``"bulk"``.
        priority: lower runs first; a :class:`~backfill_sa.Priority` or any smallint.
        run_at: earliest run time (timezone-aware); ``None`` means now.
        max_attempts: attempts in all (1-32767); ``None``: ``retry.max_attempts``
            when ``retry`` is given, else 8.
        retry: backoff for this job (stored as ``retry.to_json()``).
        job_key: idempotency key (1-512 characters), unique among unfinished jobs.
        job_key_mode: ``"replace"``, ``"preserve_run_at"`` or ``"unsafe_dedupe"``.
        metadata: a JSON object (trace context, tags); ``None`` stores ``{}``.
        max_payload_bytes: limit on the serialised payload and metadata (1 MiB).

    Returns:
        The job's id and whether it was inserted, replaced or left unchanged.

    Raises:
        JobValidationError: an argument breaks a rule (the error names the field,
            with the path inside the payload); raised before any SQL, nothing written.
        sqlalchemy.exc.DBAPIError: the database refused the statement.
    """
    spec = JobSpec(
        task,
        payload,
        queue,
        priority,
        run_at,
        max_attempts,
        retry,
        job_key,
        job_key_mode,
        metadata,
        max_payload_bytes=max_payload_bytes,
    )
    return _enqueue_spec(session, spec)


async def enqueue_async(
    session: AsyncSession,
    task: str,
    payload: object = None,
    *,
    queue: str = BULK,
    priority: int = Priority.BULK_DEFAULT,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    job_key: str | None = None,
    job_key_mode: JobKeyMode = "replace",
    metadata: Mapping[str, object] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> EnqueueResult:
    """Add a job in an :class:`~sqlalchemy.ext.asyncio.AsyncSession`'s transaction.

    Exactly :func:`enqueue` (same arguments, rules and ``job_key`` behaviour) for
    async code.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
        sqlalchemy.exc.DBAPIError: the database refused the statement.
    """
    spec = JobSpec(
        task,
        payload,
        queue,
        priority,
        run_at,
        max_attempts,
        retry,
        job_key,
        job_key_mode,
        metadata,
        max_payload_bytes=max_payload_bytes,
    )
    return await session.run_sync(_enqueue_spec, spec)


def enqueue_many(session: Session, specs: Iterable[JobSpec]) -> list[EnqueueResult]:
    """Add many jobs in ``session``'s current transaction, in batched statements.

    Jobs without a ``job_key`` go in batches of up to :data:`BATCH_SIZE` (5,000),
    one statement per batch that also notifies each queue with runnable jobs once.
    Jobs with a key take :func:`enqueue`'s keyed path, one at a time, in order.

    Args:
        session: the caller's Session.
        specs: the jobs, validated when each :class:`JobSpec` was created.

    Returns:
        One result per spec, in the order given.

    Raises:
        JobValidationError: an item is not a JobSpec (checked before any SQL).
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    return _enqueue_specs(session, specs)


async def enqueue_many_async(
    session: AsyncSession, specs: Iterable[JobSpec]
) -> list[EnqueueResult]:
    """:func:`enqueue_many` for an AsyncSession.

    Raises:
        JobValidationError: an item is not a JobSpec (checked before any SQL).
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    checked = _check_specs(specs)
    return await session.run_sync(_enqueue_specs, checked)


def enqueue_fast(
    session: Session, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """Enqueue on queue ``fast`` at ``Priority.FAST_DEFAULT`` (-5); see :func:`enqueue`.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return enqueue(session, task, payload, queue=FAST, priority=Priority.FAST_DEFAULT, **options)


def enqueue_bulk(
    session: Session, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """Enqueue on queue ``bulk`` at ``Priority.BULK_DEFAULT`` (0); see :func:`enqueue`.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return enqueue(session, task, payload, queue=BULK, priority=Priority.BULK_DEFAULT, **options)


def enqueue_critical(
    session: Session, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """Enqueue on queue ``fast`` at ``Priority.FAST_HIGH`` (-10); see :func:`enqueue`.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return enqueue(session, task, payload, queue=FAST, priority=Priority.FAST_HIGH, **options)


def enqueue_emergency(
    session: Session, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """Enqueue on queue ``fast`` at ``Priority.EMERGENCY`` (-20); see :func:`enqueue`.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return enqueue(session, task, payload, queue=FAST, priority=Priority.EMERGENCY, **options)


async def enqueue_fast_async(
    session: AsyncSession, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """:func:`enqueue_fast` for an AsyncSession.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return await enqueue_async(
        session, task, payload, queue=FAST, priority=Priority.FAST_DEFAULT, **options
    )


async def enqueue_bulk_async(
    session: AsyncSession, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """:func:`enqueue_bulk` for an AsyncSession.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return await enqueue_async(
        session, task, payload, queue=BULK, priority=Priority.BULK_DEFAULT, **options
    )


async def enqueue_critical_async(
    session: AsyncSession, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """:func:`enqueue_critical` for an AsyncSession.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return await enqueue_async(
        session, task, payload, queue=FAST, priority=Priority.FAST_HIGH, **options
    )


async def enqueue_emergency_async(
    session: AsyncSession, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
) -> EnqueueResult:
    """:func:`enqueue_emergency` for an AsyncSession.

    Raises:
        JobValidationError: an argument breaks a rule; raised before any SQL.
    """
    return await enqueue_async(
        session, task, payload, queue=FAST, priority=Priority.EMERGENCY, **options
    )


# --- ORM path: session.add(Job(...)) ---------------------------------------------


def _retry_of(value: object) -> RetryPolicy | None:
    if value is None or isinstance(value, RetryPolicy):
        return value
    if isinstance(value, dict):
        return RetryPolicy.from_json(value)
    raise JobValidationError(
        "retry_policy", "must be a RetryPolicy, a dict from RetryPolicy.to_json(), or None"
    )


def _validate_added_job(_mapper: Mapper[Job], _conn: Connection, target: Job) -> None:
    """Validate a Job added ORM-style and fill in its defaults, before its INSERT."""
    retry = _retry_of(target.retry_policy)
    spec = JobSpec(
        target.task,
        target.payload,
        BULK if target.queue is None else target.queue,
        Priority.BULK_DEFAULT if target.priority is None else target.priority,
        target.run_at,
        target.max_attempts,
        retry,
        target.job_key,
        metadata=target.meta,
    )
    row = spec.row
    target.task, target.queue, target.priority = row.task, row.queue, row.priority
    target.max_attempts, target.job_key = row.max_attempts, row.job_key
    target.retry_policy = None if retry is None else retry.to_json()
    if target.payload is None:
        target.payload = {}
    if target.meta is None:
        target.meta = {}
    if target.state is not None:
        if target.state not in {s.value for s in JobState}:
            raise JobValidationError("state", "must be 'available', 'scheduled' or 'running'")
        return
    if row.run_at is None:
        target.state = JobState.AVAILABLE.value
    else:
        target.run_at = row.run_at
        # Decided by the database clock, as on the enqueue() path.
        type_cast(Any, target).state = case(
            (literal(row.run_at, DateTime(timezone=True)) > func.now(), "scheduled"),
            else_="available",
        )


def _notify_added_job(_mapper: Mapper[Job], conn: Connection, target: Job) -> None:
    """Wake workers on commit when the Job just inserted is runnable now."""
    conn.execute(
        JOBS_NOTIFY_IF_AVAILABLE, {"id": target.id, "channel": channel_for(schema_of(conn))}
    )


event.listen(Job, "before_insert", _validate_added_job)
event.listen(Job, "after_insert", _notify_added_job)
