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

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TypedDict

from backfill_sa.job_writer import (
    BATCH_SIZE,
    EnqueueOutcome,
    EnqueueResult,
    check_specs,
    write_batch,
    write_checked_jobs,
    write_job,
    write_jobs,
)
from backfill_sa.priority import BULK, FAST, Priority
from backfill_sa.retry import RetryPolicy
from backfill_sa.validation import DEFAULT_MAX_PAYLOAD_BYTES, JobKeyMode, JobSpec, batch_payloads

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session
    from typing_extensions import Unpack

__all__ = [
    "BATCH_SIZE",
    "EnqueueOptions",
    "EnqueueOutcome",
    "EnqueueResult",
    "JobSpec",
    "enqueue",
    "enqueue_async",
    "enqueue_batch",
    "enqueue_batch_async",
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
      job's id. Finished jobs (kept for their retention) hold no key.
    * ``period``: as ``unsafe_dedupe``, but a finished job still kept for its
      retention holds the key too, so the key stays taken until it is pruned
      (uniqueness over a period; see ``docs/enqueue.md``).

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
        job_key_mode: ``"replace"``, ``"preserve_run_at"``, ``"unsafe_dedupe"`` or
            ``"period"``.
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
    return write_job(session, spec)


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
    return await session.run_sync(write_job, spec)


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
    return write_jobs(session, specs)


async def enqueue_many_async(
    session: AsyncSession, specs: Iterable[JobSpec]
) -> list[EnqueueResult]:
    """:func:`enqueue_many` for an AsyncSession.

    Raises:
        JobValidationError: an item is not a JobSpec (checked before any SQL).
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    checked = check_specs(specs)
    return await session.run_sync(write_checked_jobs, checked)


def enqueue_batch(
    session: Session,
    task: str,
    payloads: Iterable[object],
    *,
    queue: str = BULK,
    priority: int = Priority.BULK_DEFAULT,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    metadata: Mapping[str, object] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[EnqueueResult]:
    """Add one job per payload, all for ``task`` with the same options, in
    ``session``'s current transaction: the fast path for bulk loads.

    The options are validated once and each payload is serialised and checked as
    :func:`enqueue` would; then the jobs go in like :func:`enqueue_many`'s, one
    statement per :data:`BATCH_SIZE` jobs. Nothing is written unless every payload
    is valid. For per-job options or a ``job_key``, use :func:`enqueue_many` with
    :class:`JobSpec` items.

    Args:
        session: the caller's Session.
        task: task handler name (1-200 characters).
        payloads: the jobs' JSON values, in order; ``None`` stores ``{}``.
        queue, priority, run_at, max_attempts, retry, metadata, max_payload_bytes:
            as for :func:`enqueue`, applied to every job.

    Returns:
        One result per payload, in the order given (all ``INSERTED``).

    Raises:
        JobValidationError: an option breaks a rule, or a payload does (the field
            is ``payloads[i]``, with the path inside it); raised before any SQL.
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    template = JobSpec(
        task,
        None,
        queue,
        priority,
        run_at,
        max_attempts,
        retry,
        metadata=metadata,
        max_payload_bytes=max_payload_bytes,
    )
    texts = batch_payloads(template, payloads)
    return write_batch(session, template, texts)


async def enqueue_batch_async(
    session: AsyncSession,
    task: str,
    payloads: Iterable[object],
    *,
    queue: str = BULK,
    priority: int = Priority.BULK_DEFAULT,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    metadata: Mapping[str, object] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[EnqueueResult]:
    """:func:`enqueue_batch` for an AsyncSession (same arguments and rules).

    Raises:
        JobValidationError: an option or a payload breaks a rule; before any SQL.
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    template = JobSpec(
        task,
        None,
        queue,
        priority,
        run_at,
        max_attempts,
        retry,
        metadata=metadata,
        max_payload_bytes=max_payload_bytes,
    )
    texts = batch_payloads(template, payloads)
    return await session.run_sync(write_batch, template, texts)


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
