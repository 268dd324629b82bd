"""Asserting on enqueued jobs: ``enqueued_jobs``, ``assert_enqueued``, ``refute_enqueued``.

Only jobs waiting to run count (``available`` or ``scheduled``): a job a drain has
finished, whether its row was deleted or kept in a final state, is no longer
enqueued. The jobs are read through the test's session, so they are the ones its
transaction sees, committed or not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfill_sa.statements.jobs_drain import job_list_waiting

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = [
    "EnqueuedJob",
    "assert_enqueued",
    "assert_enqueued_async",
    "enqueued_jobs",
    "enqueued_jobs_async",
    "payload_matches",
    "refute_enqueued",
    "refute_enqueued_async",
]

_ANY: Any = object()


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """A job waiting to run, as :func:`enqueued_jobs` returns it.

    Attributes:
        id: the job's id.
        task: its task.
        queue: its queue.
        payload: its JSON payload.
        priority: its priority.
        run_at: when it may run.
        state: ``available`` or ``scheduled``.
        attempts: attempts made so far.
        max_attempts: attempts allowed.
        job_key: its key, if any.
        metadata: its metadata.
    """

    id: int
    task: str
    queue: str
    payload: Any
    priority: int
    run_at: dt.datetime
    state: str
    attempts: int
    max_attempts: int
    job_key: str | None
    metadata: Mapping[str, Any]

    def describe(self) -> str:
        """One line for failure messages."""
        return (
            f"#{self.id} task={self.task!r} queue={self.queue!r} priority={self.priority} "
            f"payload={self.payload!r} ({self.state}, run_at {self.run_at.isoformat()})"
        )


def payload_matches(expected: Any, actual: Any) -> bool:
    """Return whether ``actual`` holds ``expected``: objects partially, recursively.

    Every key of an expected object must be in the actual object with a matching
    value; extra keys are ignored. Anything else (lists, strings, numbers) must be
    equal.
    """
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and payload_matches(value, actual[key]) for key, value in expected.items()
        )
    return bool(expected == actual)


def _waiting(session: Session) -> list[EnqueuedJob]:
    from backfill_sa.models import Job

    conn = session.connection(bind_arguments={"mapper": Job})
    return [EnqueuedJob(**row._mapping) for row in conn.execute(job_list_waiting)]


@dataclass(frozen=True, slots=True)
class _Criteria:
    task: str | None
    payload: Any
    queue: str | None
    priority: int | None

    def select(self, jobs: list[EnqueuedJob]) -> list[EnqueuedJob]:
        return [
            job
            for job in jobs
            if (self.task is None or job.task == self.task)
            and (self.queue is None or job.queue == self.queue)
            and (self.priority is None or job.priority == self.priority)
            and (self.payload is _ANY or payload_matches(self.payload, job.payload))
        ]

    def describe(self) -> str:
        parts = []
        if self.task is not None:
            parts.append(f"task={self.task!r}")
        if self.payload is not _ANY:
            parts.append(f"payload matching {self.payload!r}")
        if self.queue is not None:
            parts.append(f"queue={self.queue!r}")
        if self.priority is not None:
            parts.append(f"priority={self.priority}")
        return ", ".join(parts) or "any job"


def _listing(jobs: list[EnqueuedJob]) -> str:
    if not jobs:
        return "no job is enqueued"
    return f"enqueued instead ({len(jobs)}):\n" + "\n".join(f"  {j.describe()}" for j in jobs)


def _check_enqueued(session: Session, criteria: _Criteria, count: int | None) -> list[EnqueuedJob]:
    everything = _waiting(session)
    found = criteria.select(everything)
    if (count is None and not found) or (count is not None and len(found) != count):
        wanted = "at least 1" if count is None else str(count)
        raise AssertionError(
            f"expected {wanted} enqueued job(s) with {criteria.describe()}, "
            f"found {len(found)}; {_listing(everything)}"
        )
    return found


def _check_not_enqueued(session: Session, criteria: _Criteria) -> None:
    found = criteria.select(_waiting(session))
    if found:
        raise AssertionError(
            f"expected no enqueued job with {criteria.describe()}, found {len(found)}:\n"
            + "\n".join(f"  {j.describe()}" for j in found)
        )


def enqueued_jobs(
    session: Session,
    *,
    task: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    priority: int | None = None,
) -> list[EnqueuedJob]:
    """Return the jobs waiting to run that match, oldest first.

    Args:
        session: the test's Session.
        task: only this task.
        payload: only jobs whose payload holds this (see :func:`payload_matches`).
        queue: only this queue.
        priority: only this priority.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused the query.
    """
    return _Criteria(task, payload, queue, priority).select(_waiting(session))


async def enqueued_jobs_async(
    session: AsyncSession,
    *,
    task: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    priority: int | None = None,
) -> list[EnqueuedJob]:
    """:func:`enqueued_jobs` for an AsyncSession.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refused the query.
    """
    jobs = await session.run_sync(_waiting)
    return _Criteria(task, payload, queue, priority).select(jobs)


def assert_enqueued(
    session: Session,
    *,
    task: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    priority: int | None = None,
    count: int | None = None,
) -> list[EnqueuedJob]:
    """Assert that jobs matching the criteria wait to run; return them.

    Args:
        session: the test's Session.
        task, payload, queue, priority: as for :func:`enqueued_jobs`; the payload
            matches partially.
        count: exactly this many must match; ``None``: at least one.

    Raises:
        AssertionError: the count is wrong; the message lists every enqueued job.

    Example::

        assert_enqueued(session, task="send_receipt", payload={"order_id": 42})
    """
    return _check_enqueued(session, _Criteria(task, payload, queue, priority), count)


async def assert_enqueued_async(
    session: AsyncSession,
    *,
    task: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    priority: int | None = None,
    count: int | None = None,
) -> list[EnqueuedJob]:
    """:func:`assert_enqueued` for an AsyncSession.

    Raises:
        AssertionError: the count is wrong; the message lists every enqueued job.
    """
    criteria = _Criteria(task, payload, queue, priority)
    return await session.run_sync(_check_enqueued, criteria, count)


def refute_enqueued(
    session: Session,
    *,
    task: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    priority: int | None = None,
) -> None:
    """Assert that no job matching the criteria waits to run.

    Raises:
        AssertionError: some do; the message lists them.
    """
    _check_not_enqueued(session, _Criteria(task, payload, queue, priority))


async def refute_enqueued_async(
    session: AsyncSession,
    *,
    task: str | None = None,
    payload: Any = _ANY,
    queue: str | None = None,
    priority: int | None = None,
) -> None:
    """:func:`refute_enqueued` for an AsyncSession.

    Raises:
        AssertionError: some do; the message lists them.
    """
    await session.run_sync(_check_not_enqueued, _Criteria(task, payload, queue, priority))
