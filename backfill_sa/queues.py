"""Control queues from Python: pause, resume, and statistics.

Every function takes the caller's :class:`~sqlalchemy.orm.Session` (or, for the
``_async`` flavour, :class:`~sqlalchemy.ext.asyncio.AsyncSession`) and joins its
transaction: nothing here commits, and a pause takes effect when the caller commits
(workers stop claiming from the queue at their next claim; a claim checks the
``queues`` row in the same statement). The async flavour runs the same body through
``AsyncSession.run_sync``. The SQL lives in :mod:`backfill_sa.statements.jobs_api`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.errors import JobValidationError
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.statements import jobs_api as sql
from backfill_sa.states import JobState

__all__ = [
    "QueueSettings",
    "QueueStats",
    "finished_jobs_estimate",
    "finished_jobs_estimate_async",
    "pause_queue",
    "pause_queue_async",
    "queue_stats",
    "queue_stats_async",
    "resume_queue",
    "resume_queue_async",
]

_QUEUE_MAX = 100


@dataclass(frozen=True)
class QueueSettings:
    """A queue's settings row after :func:`pause_queue` or :func:`resume_queue`."""

    name: str
    paused: bool
    concurrency: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class QueueStats:
    """Counts of one queue's jobs.

    Attributes:
        name: the queue.
        available: jobs waiting to be claimed (exact).
        scheduled: jobs waiting for a future ``run_at`` or a retry backoff (exact).
        running: jobs claimed by a worker (exact).
        oldest_available_age: how long the longest-waiting due job has been due
            (exact; None when none is).
        paused: whether workers claim nothing from the queue.
        concurrency: the per-worker concurrency override, if any.
        completed: retained ``completed`` jobs, exact, when asked for with
            ``include_finished=True``; else None.
        cancelled: retained ``cancelled`` jobs, likewise.
    """

    name: str
    available: int
    scheduled: int
    running: int
    oldest_available_age: timedelta | None
    paused: bool
    concurrency: int | None
    completed: int | None = None
    cancelled: int | None = None


def _queue_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= _QUEUE_MAX:
        raise JobValidationError("name", f"must be a string of 1 to {_QUEUE_MAX} characters")
    return name


def _set_paused(session: Session, name: str, paused: bool) -> QueueSettings:
    queue = _queue_name(name)
    row = session.execute(sql.queue_set_paused(queue, paused)).mappings().one()
    if not paused:
        channel = channel_for(schema_of(session.connection()))
        session.execute(sql.job_notify(channel, queue))
    return QueueSettings(**row)


def pause_queue(session: Session, name: str) -> QueueSettings:
    """Stop workers claiming jobs of queue ``name`` (from the caller's commit on).

    Running jobs finish; waiting jobs stay waiting. Creates the queue's settings row
    if there is none.

    Raises:
        JobValidationError: ``name`` is not 1-100 characters.
    """
    return _set_paused(session, name, True)


def resume_queue(session: Session, name: str) -> QueueSettings:
    """Let workers claim from queue ``name`` again; they are woken on commit.

    Raises:
        JobValidationError: ``name`` is not 1-100 characters.
    """
    return _set_paused(session, name, False)


def queue_stats(
    session: Session, name: str | None = None, *, include_finished: bool = False
) -> list[QueueStats]:
    """Return job counts of every known queue (or of queue ``name``), by name.

    A queue is known when it has unfinished jobs or a settings row. The counts of
    unfinished jobs are exact and cheap: each state is counted through its own
    partial index, whatever the number of retained finished rows.
    ``include_finished=True`` adds exact counts of retained ``completed`` and
    ``cancelled`` jobs, which reads every retained row (up to a retention period's
    worth); :func:`finished_jobs_estimate` is the cheap, estimated alternative.

    Raises:
        JobValidationError: ``name`` is given and is not 1-100 characters.
    """
    queue = None if name is None else _queue_name(name)
    rows = session.execute(sql.queue_counts(queue)).mappings().all()
    finished: dict[tuple[str, str], int] = {}
    if include_finished:
        for row in session.execute(sql.queue_finished_counts(queue)).mappings():
            finished[(row["name"], row["state"])] = int(row["n"])
    stats = {
        row["name"]: QueueStats(
            name=row["name"],
            available=int(row["available"]),
            scheduled=int(row["scheduled"]),
            running=int(row["running"]),
            oldest_available_age=(
                None
                if row["oldest_available_age_seconds"] is None
                else timedelta(seconds=float(row["oldest_available_age_seconds"]))
            ),
            paused=bool(row["paused"]),
            concurrency=row["concurrency"],
            completed=finished.get((row["name"], JobState.COMPLETED.value), 0)
            if include_finished
            else None,
            cancelled=finished.get((row["name"], JobState.CANCELLED.value), 0)
            if include_finished
            else None,
        )
        for row in rows
    }
    for queue_name, _state in finished:  # queues with finished jobs only
        if queue_name not in stats:
            stats[queue_name] = QueueStats(
                name=queue_name,
                available=0,
                scheduled=0,
                running=0,
                oldest_available_age=None,
                paused=False,
                concurrency=None,
                completed=finished.get((queue_name, JobState.COMPLETED.value), 0),
                cancelled=finished.get((queue_name, JobState.CANCELLED.value), 0),
            )
    return [stats[key] for key in sorted(stats)]


def finished_jobs_estimate(session: Session) -> int:
    """Return PostgreSQL's **estimate** of retained finished jobs in all queues.

    It is the entry count of the pruning index as of the last VACUUM or ANALYZE
    (autovacuum keeps it recent on a busy table), read from the catalogue: free,
    and possibly off by the jobs finished or pruned since. 0 before any statistics.
    """
    schema = schema_of(session.connection())
    value = session.execute(sql.queue_finished_estimate(schema)).scalar_one_or_none()
    return int(value or 0)


async def pause_queue_async(session: AsyncSession, name: str) -> QueueSettings:
    """:func:`pause_queue` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`pause_queue`.
    """
    return await session.run_sync(pause_queue, name)


async def resume_queue_async(session: AsyncSession, name: str) -> QueueSettings:
    """:func:`resume_queue` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`resume_queue`.
    """
    return await session.run_sync(resume_queue, name)


async def queue_stats_async(
    session: AsyncSession, name: str | None = None, *, include_finished: bool = False
) -> list[QueueStats]:
    """:func:`queue_stats` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`queue_stats`.
    """
    return await session.run_sync(lambda s: queue_stats(s, name, include_finished=include_finished))


async def finished_jobs_estimate_async(session: AsyncSession) -> int:
    """:func:`finished_jobs_estimate` for an AsyncSession (an estimate)."""
    return await session.run_sync(finished_jobs_estimate)
