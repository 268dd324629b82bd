"""Dead-letter queue administration: list, count, get, requeue, delete, purge, annotate.

Every function takes the caller's :class:`~sqlalchemy.orm.Session` (or, for the
``_async`` twin, :class:`~sqlalchemy.ext.asyncio.AsyncSession`) and joins its
transaction: nothing here commits. Commit to make the change stick; roll back to undo
it. Workers woken by a requeue hear about it only on commit.

The SQL lives in :mod:`backfill_sa.statements.dead_letter`; validation and result
reading live here once, so a sync function and its async twin differ only in the
``execute`` call.

Example::

    with Session(engine) as session, session.begin():
        entries = list_dead_letters(session, task="send_email", limit=20)
        result = requeue_dead_letters(session, [e.id for e in entries])
    print(result.job_ids, result.skipped_ids)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.errors import BackfillError, JobValidationError
from backfill_sa.models import DeadLetterJob, FailureReason
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.statements import dead_letter as sql
from backfill_sa.statements.dead_letter import DeadLetterFilter, RequeueOptions

__all__ = [
    "DeadLetterNotFoundError",
    "RequeueResult",
    "annotate_dead_letter",
    "annotate_dead_letter_async",
    "count_dead_letters",
    "count_dead_letters_async",
    "delete_dead_letters",
    "delete_dead_letters_async",
    "get_dead_letter",
    "get_dead_letter_async",
    "list_dead_letter_ids",
    "list_dead_letter_ids_async",
    "list_dead_letters",
    "list_dead_letters_async",
    "purge_dead_letters",
    "purge_dead_letters_async",
    "requeue_dead_letters",
    "requeue_dead_letters_async",
]

_SMALLINT_MAX = 32767
_QUEUE_MAX = 100


class DeadLetterNotFoundError(BackfillError, LookupError):
    """No dead-letter entry has the requested id."""

    def __init__(self, entry_id: int) -> None:
        self.entry_id = entry_id
        super().__init__(f"id: no dead-letter entry has id {entry_id}")


@dataclass(frozen=True)
class RequeueResult:
    """What :func:`requeue_dead_letters` did.

    Attributes:
        job_ids: ids of the new jobs, in the order of ``requeued_ids``.
        requeued_ids: dead-letter entry ids moved back into the jobs table (gone from
            the dead-letter queue).
        skipped_ids: entry ids left in the dead-letter queue because their
            ``job_key`` is held by a live job (or by another entry of the same call).
    """

    job_ids: tuple[int, ...]
    requeued_ids: tuple[int, ...]
    skipped_ids: tuple[int, ...]


# -- validation, shared by the sync and async functions ------------------------------


def _aware(field: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise JobValidationError(field, "must be a timezone-aware datetime")
    return value


def _filter(
    ids: Sequence[int] | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
) -> DeadLetterFilter:
    if ids is not None:
        if isinstance(ids, (str, bytes)) or any(
            isinstance(i, bool) or not isinstance(i, int) for i in ids
        ):
            raise JobValidationError("ids", "must be a sequence of integer entry ids")
        ids = tuple(ids)
    reason = failure_reason.value if isinstance(failure_reason, FailureReason) else failure_reason
    return DeadLetterFilter(
        ids=ids,
        task=task,
        queue=queue,
        failure_reason=reason,
        failed_after=_aware("failed_after", failed_after),
        failed_before=_aware("failed_before", failed_before),
    )


def _restricted(where: DeadLetterFilter, filters: str) -> DeadLetterFilter:
    if where.is_unrestricted():
        raise JobValidationError(
            "ids", f"give ids or at least one filter ({filters}); refusing to touch every entry"
        )
    return where


def _page(limit: int, offset: int) -> None:
    if limit < 1:
        raise JobValidationError("limit", "must be at least 1")
    if offset < 0:
        raise JobValidationError("offset", "must be zero or more")


def _requeue_options(
    run_at: dt.datetime | None, queue_override: str | None, max_attempts: int | None
) -> RequeueOptions:
    if queue_override is not None and not 1 <= len(queue_override) <= _QUEUE_MAX:
        raise JobValidationError("queue_override", f"must be 1 to {_QUEUE_MAX} characters")
    if max_attempts is not None and not 1 <= max_attempts <= _SMALLINT_MAX:
        raise JobValidationError("max_attempts", f"must be between 1 and {_SMALLINT_MAX}")
    return RequeueOptions(_aware("run_at", run_at), queue_override, max_attempts)


def _older_than(older_than: dt.timedelta) -> dt.timedelta:
    if older_than < dt.timedelta(0):
        raise JobValidationError("older_than", "must be zero or a positive duration")
    return older_than


def _requeue_result(result: Result[int, int | None, int]) -> RequeueResult:
    rows = result.all()
    moved = [(entry, job) for entry, job, _ in rows if job is not None]
    return RequeueResult(
        job_ids=tuple(job for _, job in moved),
        requeued_ids=tuple(entry for entry, _ in moved),
        skipped_ids=tuple(entry for entry, job, _ in rows if job is None),
    )


def _annotated(entry_id: int, result: Result[int]) -> None:
    if result.first() is None:
        raise DeadLetterNotFoundError(entry_id)


_REQUEUE_FILTERS = "task, queue, failure_reason"
_DELETE_FILTERS = "task, queue, failure_reason, failed_before"


# -- sync ------------------------------------------------------------------------------


def list_dead_letters(
    session: Session,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[DeadLetterJob]:
    """Return dead-letter entries matching every given filter, newest first.

    Args:
        session: the caller's session; its transaction is used, never committed.
        task: only entries of this task.
        queue: only entries from this queue.
        failure_reason: only entries with this :class:`FailureReason` (or its value).
        failed_after: only entries that failed at or after this time (timezone-aware).
        failed_before: only entries that failed strictly before this time.
        limit: at most this many entries (>= 1, default 100).
        offset: skip this many entries first (>= 0), for paging.

    Raises:
        JobValidationError: a naive datetime, ``limit < 1`` or ``offset < 0``.
    """
    where = _filter(
        task=task,
        queue=queue,
        failure_reason=failure_reason,
        failed_after=failed_after,
        failed_before=failed_before,
    )
    _page(limit, offset)
    return list(session.execute(sql.select_many(where, limit=limit, offset=offset)).scalars())


def count_dead_letters(
    session: Session,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
) -> int:
    """Return how many dead-letter entries match every given filter.

    The filters mean what they mean in :func:`list_dead_letters`.

    Raises:
        JobValidationError: a naive datetime.
    """
    where = _filter(
        task=task,
        queue=queue,
        failure_reason=failure_reason,
        failed_after=failed_after,
        failed_before=failed_before,
    )
    return session.execute(sql.count(where)).scalar_one()


def list_dead_letter_ids(
    session: Session,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
) -> list[int]:
    """Return the ids of every entry matching the filters, lowest first.

    For bulk work in chunks (the CLI's ``dlq requeue``/``delete`` with a progress
    bar): the filters mean what they mean in :func:`list_dead_letters`.

    Raises:
        JobValidationError: a naive datetime.
    """
    where = _filter(
        task=task,
        queue=queue,
        failure_reason=failure_reason,
        failed_after=failed_after,
        failed_before=failed_before,
    )
    return list(session.execute(sql.select_ids(where)).scalars())


def get_dead_letter(session: Session, id: int) -> DeadLetterJob | None:
    """Return the dead-letter entry with this id, or None when there is none."""
    return session.execute(sql.get(id)).scalar_one_or_none()


def requeue_dead_letters(
    session: Session,
    ids: Sequence[int] | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    run_at: dt.datetime | None = None,
    queue_override: str | None = None,
    max_attempts: int | None = None,
) -> RequeueResult:
    """Move dead-letter entries back into the jobs table, in one statement.

    Selects the entries with these ``ids`` (if given) that match every given filter.
    Each becomes a job with the entry's task, payload, priority, job_key, retry
    policy, last_error and original ``created_at``; ``attempts`` 0; state
    ``available``, or ``scheduled`` when ``run_at`` is in the future. The job's
    metadata keeps the entry's and gains ``{"backfill": {"requeued_count": n + 1,
    "last_requeued_at": iso, "dead_letter_notes": notes, "dead_letter_id": id,
    "original_job_id": id}}`` so that a second dead-lettering carries the count on.
    The entry leaves the dead-letter queue. An entry whose ``job_key`` is held by a
    live job stays where it is and is reported in ``skipped_ids``; if several
    selected entries share a key, the newest becomes the job and the rest are
    skipped. Workers of the job's queue are notified on commit.

    Args:
        session: the caller's session; its transaction is used, never committed.
        ids: dead-letter entry ids; ``None`` means "whatever the filters match".
        task: only entries of this task.
        queue: only entries from this queue.
        failure_reason: only entries with this :class:`FailureReason` (or its value).
        run_at: when the jobs may run (timezone-aware); default now.
        queue_override: put the jobs in this queue instead of their own.
        max_attempts: give the jobs this many attempts instead of their own.

    Raises:
        JobValidationError: neither ids nor a filter given, a naive ``run_at``,
            ``queue_override`` not 1-100 characters, ``max_attempts`` not 1-32767.
    """
    where = _restricted(
        _filter(ids, task=task, queue=queue, failure_reason=failure_reason), _REQUEUE_FILTERS
    )
    options = _requeue_options(run_at, queue_override, max_attempts)
    channel = channel_for(schema_of(session.connection()))
    return _requeue_result(session.execute(sql.requeue(where, options, channel=channel)))


def delete_dead_letters(
    session: Session,
    ids: Sequence[int] | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_before: dt.datetime | None = None,
) -> int:
    """Delete dead-letter entries; return how many were deleted.

    Deletes the entries with these ``ids`` (if given) that match every given filter.
    Entries loaded in ``session`` are marked deleted as well.

    Raises:
        JobValidationError: neither ids nor a filter given, or a naive ``failed_before``.
    """
    where = _restricted(
        _filter(
            ids, task=task, queue=queue, failure_reason=failure_reason, failed_before=failed_before
        ),
        _DELETE_FILTERS,
    )
    return len(session.execute(sql.delete_many(where)).all())


def purge_dead_letters(session: Session, *, older_than: dt.timedelta) -> int:
    """Delete entries that failed more than ``older_than`` ago; return how many.

    Ages are measured with the database clock.

    Raises:
        JobValidationError: ``older_than`` is negative.
    """
    return len(session.execute(sql.purge(_older_than(older_than))).all())


def annotate_dead_letter(session: Session, id: int, notes: str) -> None:
    """Replace the operator notes of one entry (carried into the job on requeue).

    Raises:
        DeadLetterNotFoundError: no entry has this id.
    """
    _annotated(id, session.execute(sql.annotate(id, notes)))


# -- async twins: same validation and statements, awaited execute ---------------------


async def list_dead_letters_async(
    session: AsyncSession,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[DeadLetterJob]:
    """Async twin of :func:`list_dead_letters`, for an :class:`AsyncSession`.

    Raises:
        JobValidationError: a naive datetime, ``limit < 1`` or ``offset < 0``.
    """
    where = _filter(
        task=task,
        queue=queue,
        failure_reason=failure_reason,
        failed_after=failed_after,
        failed_before=failed_before,
    )
    _page(limit, offset)
    result = await session.execute(sql.select_many(where, limit=limit, offset=offset))
    return list(result.scalars())


async def count_dead_letters_async(
    session: AsyncSession,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
) -> int:
    """Async twin of :func:`count_dead_letters`.

    Raises:
        JobValidationError: a naive datetime.
    """
    where = _filter(
        task=task,
        queue=queue,
        failure_reason=failure_reason,
        failed_after=failed_after,
        failed_before=failed_before,
    )
    return (await session.execute(sql.count(where))).scalar_one()


async def list_dead_letter_ids_async(
    session: AsyncSession,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_after: dt.datetime | None = None,
    failed_before: dt.datetime | None = None,
) -> list[int]:
    """Async twin of :func:`list_dead_letter_ids`.

    Raises:
        JobValidationError: a naive datetime.
    """
    where = _filter(
        task=task,
        queue=queue,
        failure_reason=failure_reason,
        failed_after=failed_after,
        failed_before=failed_before,
    )
    return list((await session.execute(sql.select_ids(where))).scalars())


async def get_dead_letter_async(session: AsyncSession, id: int) -> DeadLetterJob | None:
    """Async twin of :func:`get_dead_letter`: the entry with this id, or None."""
    return (await session.execute(sql.get(id))).scalar_one_or_none()


async def requeue_dead_letters_async(
    session: AsyncSession,
    ids: Sequence[int] | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    run_at: dt.datetime | None = None,
    queue_override: str | None = None,
    max_attempts: int | None = None,
) -> RequeueResult:
    """Async twin of :func:`requeue_dead_letters` (same semantics, same statement).

    Raises:
        JobValidationError: neither ids nor a filter given, a naive ``run_at``,
            ``queue_override`` not 1-100 characters, ``max_attempts`` not 1-32767.
    """
    where = _restricted(
        _filter(ids, task=task, queue=queue, failure_reason=failure_reason), _REQUEUE_FILTERS
    )
    options = _requeue_options(run_at, queue_override, max_attempts)
    channel = channel_for(schema_of(await session.connection()))
    return _requeue_result(await session.execute(sql.requeue(where, options, channel=channel)))


async def delete_dead_letters_async(
    session: AsyncSession,
    ids: Sequence[int] | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
    failure_reason: FailureReason | str | None = None,
    failed_before: dt.datetime | None = None,
) -> int:
    """Async twin of :func:`delete_dead_letters`; returns how many were deleted.

    Raises:
        JobValidationError: neither ids nor a filter given, or a naive ``failed_before``.
    """
    where = _restricted(
        _filter(
            ids, task=task, queue=queue, failure_reason=failure_reason, failed_before=failed_before
        ),
        _DELETE_FILTERS,
    )
    return len((await session.execute(sql.delete_many(where))).all())


async def purge_dead_letters_async(session: AsyncSession, *, older_than: dt.timedelta) -> int:
    """Async twin of :func:`purge_dead_letters`; returns how many were deleted.

    Raises:
        JobValidationError: ``older_than`` is negative.
    """
    return len((await session.execute(sql.purge(_older_than(older_than)))).all())


async def annotate_dead_letter_async(session: AsyncSession, id: int, notes: str) -> None:
    """Async twin of :func:`annotate_dead_letter`.

    Raises:
        DeadLetterNotFoundError: no entry has this id.
    """
    _annotated(id, await session.execute(sql.annotate(id, notes)))
