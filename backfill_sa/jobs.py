"""Look jobs up and control them from Python: get, list, cancel, retry, wait.

Every function takes the caller's :class:`~sqlalchemy.orm.Session` (or, for the
``_async`` flavour, :class:`~sqlalchemy.ext.asyncio.AsyncSession`) and joins its
transaction: nothing here commits. The async flavour runs the same body through
``AsyncSession.run_sync``, so the two cannot drift apart. Notifications (a cancel
reaching the worker, a waiter woken) are delivered when the caller commits.
The SQL lives in :mod:`backfill_sa.statements.jobs_api`.

Example::

    with Session(engine) as session, session.begin():
        job = enqueue(session, "report", {"day": "2026-12-03"})
    ...
    with Session(engine) as session:
        info = get_job(session, job.id)   # JobInfo(state=JobState.COMPLETED, result=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.config import DEFAULT_RETENTION
from backfill_sa.errors import BackfillError, JobValidationError
from backfill_sa.notify import cancel_channel_for, channel_for, done_channel_for, schema_of
from backfill_sa.statements import jobs_api as sql
from backfill_sa.states import FINISHED_STATES, JobState

__all__ = [
    "DEAD_LETTERED",
    "CancelOutcome",
    "CancelResult",
    "JobInfo",
    "JobWaitTimeoutError",
    "RetryOutcome",
    "RetryResult",
    "cancel_job",
    "cancel_job_async",
    "get_job",
    "get_job_async",
    "list_jobs",
    "list_jobs_async",
    "retry_job",
    "retry_job_async",
    "wait_for_job",
]

DEAD_LETTERED: Literal["dead_lettered"] = "dead_lettered"
""":attr:`JobInfo.state` of a job that failed for good (it lives in the dead-letter
queue, not in ``jobs``)."""

_BIGINT_MAX = 2**63 - 1
_LIST_MAX = 10_000


class JobWaitTimeoutError(BackfillError, TimeoutError):
    """:func:`wait_for_job` gave up: the job had not finished within the timeout."""

    def __init__(self, job_id: int, timeout: timedelta) -> None:
        self.job_id = job_id
        self.timeout = timeout
        super().__init__(f"job {job_id} did not finish within {timeout}")


@dataclass(frozen=True)
class JobInfo:
    """A job as :func:`get_job` and :func:`list_jobs` see it.

    Attributes:
        id: the job's id.
        task: task name.
        queue: queue name.
        state: a :class:`~backfill_sa.states.JobState`, or :data:`DEAD_LETTERED` for a
            job that failed for good (then ``dead_letter_id`` names its entry).
        priority: lower runs first.
        payload: the JSON arguments.
        attempts: attempts started so far.
        max_attempts: attempts allowed.
        job_key: idempotency key, if any.
        result: the handler's return value (JSON), once ``completed``; None when it
            returned None or the value could not be stored (then ``last_error`` says
            why, with type ``backfill_sa.ResultNotStored``).
        last_error: the last failure: ``type``, ``message``, ``traceback``, ``attempt``.
        metadata: the job's metadata (trace context, tags).
        run_at: earliest time the job may run (its last run_at once finished).
        created_at: when it was enqueued.
        updated_at: last change.
        locked_by: the worker running it (or that ran it last).
        locked_at: when that worker claimed it.
        finished_at: when it became ``completed`` or ``cancelled`` (or was
            dead-lettered).
        prune_at: when a finished job is deleted (end of its retention).
        cancel_requested_at: when :func:`cancel_job` was called for it.
        dead_letter_id: id of its dead-letter entry, for a dead-lettered job.
        failure_reason: why it was dead-lettered.
    """

    id: int
    task: str
    queue: str
    state: JobState | Literal["dead_lettered"]
    priority: int
    payload: Any
    attempts: int
    max_attempts: int
    job_key: str | None
    result: Any
    last_error: Any
    metadata: Mapping[str, Any]
    run_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    locked_by: str | None = None
    locked_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    prune_at: dt.datetime | None = None
    cancel_requested_at: dt.datetime | None = None
    dead_letter_id: int | None = None
    failure_reason: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job will not run again (completed, cancelled or dead-lettered)."""
        return self.state == DEAD_LETTERED or self.state in FINISHED_STATES


class CancelOutcome(str, enum.Enum):
    """What :func:`cancel_job` did."""

    CANCELLED = "cancelled"
    """The job was waiting; it is ``cancelled`` now (on commit)."""
    REQUESTED = "requested"
    """The job is running; its worker is asked to stop it (on commit). It ends
    ``cancelled`` and is not retried."""
    ALREADY_FINISHED = "already_finished"
    """The job had finished (or cancellation was already asked); nothing changed."""
    NOT_FOUND = "not_found"
    """No job has this id (never existed, pruned, or dead-lettered)."""


@dataclass(frozen=True)
class CancelResult:
    """The answer of :func:`cancel_job`.

    Attributes:
        job_id: the id asked about.
        outcome: what was done.
        state: the job's state after the call (None when not found).
    """

    job_id: int
    outcome: CancelOutcome
    state: JobState | None


class RetryOutcome(str, enum.Enum):
    """What :func:`retry_job` did."""

    MADE_AVAILABLE = "made_available"
    """The job was scheduled; it is available now (workers woken on commit)."""
    NOT_SCHEDULED = "not_scheduled"
    """The job is not scheduled (already available, running or finished); unchanged."""
    NOT_FOUND = "not_found"
    """No job has this id."""


@dataclass(frozen=True)
class RetryResult:
    """The answer of :func:`retry_job`: the id, what was done, the state after."""

    job_id: int
    outcome: RetryOutcome
    state: JobState | None


# -- validation and row reading, shared by every flavour -----------------------------


def _job_id(value: object, field: str = "id") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _BIGINT_MAX:
        raise JobValidationError(field, f"must be a whole number from 1 to {_BIGINT_MAX}")
    return value


def _retention(value: object) -> timedelta:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise JobValidationError("retention", "must be a timedelta of zero or more")
    return value


def _info(row: RowMapping) -> JobInfo:
    return JobInfo(
        id=row["id"],
        task=row["task"],
        queue=row["queue"],
        state=JobState(row["state"]),
        priority=row["priority"],
        payload=row["payload"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        job_key=row["job_key"],
        result=row["result"],
        last_error=row["last_error"],
        metadata=row["metadata"] or {},
        run_at=row["run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        locked_by=row["locked_by"],
        locked_at=row["locked_at"],
        finished_at=row["finished_at"],
        prune_at=row["prune_at"],
        cancel_requested_at=row["cancel_requested_at"],
    )


def _dead_info(job_id: int, row: RowMapping) -> JobInfo:
    return JobInfo(
        id=job_id,
        task=row["task"],
        queue=row["queue"],
        state=DEAD_LETTERED,
        priority=row["priority"],
        payload=row["payload"],
        attempts=row["failure_count"],
        max_attempts=row["max_attempts"],
        job_key=row["job_key"],
        result=None,
        last_error=row["last_error"],
        metadata=row["metadata"] or {},
        run_at=row["original_run_at"],
        created_at=row["original_created_at"],
        updated_at=row["failed_at"],
        finished_at=row["failed_at"],
        dead_letter_id=row["id"],
        failure_reason=row["failure_reason"],
    )


# -- the operations (sync bodies; the async flavours run them through run_sync) ------


def get_job(session: Session, id: int) -> JobInfo | None:
    """Return the job with this id, or None.

    A finished job is found until its retention ends. A job that failed for good is
    found in the dead-letter queue: its :attr:`JobInfo.state` is
    :data:`DEAD_LETTERED` and :attr:`JobInfo.dead_letter_id` names the entry (until
    the entry is requeued, deleted or purged).

    Raises:
        JobValidationError: ``id`` is not a positive whole number.
    """
    job_id = _job_id(id)
    row = session.execute(sql.job_get(job_id)).mappings().one_or_none()
    if row is not None:
        return _info(row)
    dead = session.execute(sql.dead_letter_find_by_job(job_id)).mappings().one_or_none()
    return None if dead is None else _dead_info(job_id, dead)


def list_jobs(
    session: Session,
    *,
    state: JobState | str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 100,
    after: int | None = None,
) -> list[JobInfo]:
    """Return jobs in id order, ``limit`` at a time: pass the last id as ``after`` for
    the next page (keyset pagination: stable while jobs come and go).

    Lists the ``jobs`` table (waiting, running, and finished jobs still retained);
    dead-lettered jobs are listed by :func:`backfill_sa.dlq.list_dead_letters`.

    Args:
        session: the caller's session.
        state: only jobs in this state.
        queue: only jobs of this queue.
        task: only jobs of this task.
        limit: most jobs returned (1 to 10,000).
        after: only jobs with an id above this one.

    Raises:
        JobValidationError: ``state`` is not a job state, ``limit`` is out of range,
            or ``after`` is not a whole number.
    """
    where = _list_filter(state, queue, task)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _LIST_MAX:
        raise JobValidationError("limit", f"must be a whole number from 1 to {_LIST_MAX}")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
        raise JobValidationError("after", "must be a job id (a whole number) or None")
    rows = session.execute(sql.job_list(where, limit=limit, after=after)).mappings()
    return [_info(row) for row in rows]


def _list_filter(
    state: JobState | str | None, queue: str | None, task: str | None
) -> sql.JobListFilter:
    if state is not None:
        try:
            state = JobState(state)
        except ValueError:
            names = ", ".join(s.value for s in JobState)
            raise JobValidationError("state", f"must be one of {names}") from None
    return sql.JobListFilter(state=state, queue=queue, task=task)


def cancel_job(
    session: Session, id: int, *, retention: timedelta = DEFAULT_RETENTION
) -> CancelResult:
    """Cancel a job: at once if it waits, by asking its worker if it runs.

    * ``available`` or ``scheduled``: it becomes ``cancelled`` (kept ``retention``,
      then pruned), and will not run.
    * ``running``: ``cancel_requested_at`` is set and the worker running it is
      notified (on commit; workers also look every heartbeat interval). The handler
      sees ``ctx.cancel_requested``; an ``async def`` handler is cancelled at its
      next ``await``. The attempt ends ``cancelled`` whatever the handler does, is
      never retried, and is kept for the worker's retention.
    * finished (or already asked): nothing changes; the outcome says so.

    The row is locked until the caller's transaction ends.

    Args:
        session: the caller's session.
        id: the job's id.
        retention: how long a waiting job cancelled here is kept (24 h).

    Raises:
        JobValidationError: ``id`` or ``retention`` breaks its rule.
    """
    job_id = _job_id(id)
    keep = _retention(retention)
    row = session.execute(sql.job_lock_state(job_id)).mappings().one_or_none()
    if row is None:
        return CancelResult(job_id, CancelOutcome.NOT_FOUND, None)
    state = JobState(row["state"])
    schema = schema_of(session.connection())
    if state in (JobState.AVAILABLE, JobState.SCHEDULED):
        session.execute(sql.job_cancel_waiting(job_id, keep)).one()
        session.execute(sql.job_notify(done_channel_for(schema), str(job_id)))
        return CancelResult(job_id, CancelOutcome.CANCELLED, JobState.CANCELLED)
    if state is JobState.RUNNING and row["cancel_requested_at"] is None:
        session.execute(sql.job_cancel_running(job_id)).one()
        session.execute(sql.job_notify(cancel_channel_for(schema), str(job_id)))
        return CancelResult(job_id, CancelOutcome.REQUESTED, JobState.RUNNING)
    return CancelResult(job_id, CancelOutcome.ALREADY_FINISHED, state)


def retry_job(session: Session, id: int) -> RetryResult:
    """Make a scheduled job (including one waiting out a retry backoff) available now.

    Its attempts are unchanged; workers of its queue are woken on commit. A job in
    any other state is left alone and the outcome says so.

    Raises:
        JobValidationError: ``id`` is not a positive whole number.
    """
    job_id = _job_id(id)
    row = session.execute(sql.job_retry_now(job_id)).one_or_none()
    if row is not None:
        channel = channel_for(schema_of(session.connection()))
        session.execute(sql.job_notify(channel, row.queue))
        return RetryResult(job_id, RetryOutcome.MADE_AVAILABLE, JobState.AVAILABLE)
    found = session.execute(sql.job_get(job_id)).mappings().one_or_none()
    if found is None:
        return RetryResult(job_id, RetryOutcome.NOT_FOUND, None)
    return RetryResult(job_id, RetryOutcome.NOT_SCHEDULED, JobState(found["state"]))


async def get_job_async(session: AsyncSession, id: int) -> JobInfo | None:
    """:func:`get_job` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`get_job`.
    """
    return await session.run_sync(get_job, id)


async def list_jobs_async(
    session: AsyncSession,
    *,
    state: JobState | str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int = 100,
    after: int | None = None,
) -> list[JobInfo]:
    """:func:`list_jobs` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`list_jobs`.
    """
    return await session.run_sync(
        lambda s: list_jobs(s, state=state, queue=queue, task=task, limit=limit, after=after)
    )


async def cancel_job_async(
    session: AsyncSession, id: int, *, retention: timedelta = DEFAULT_RETENTION
) -> CancelResult:
    """:func:`cancel_job` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`cancel_job`.
    """
    return await session.run_sync(lambda s: cancel_job(s, id, retention=retention))


async def retry_job_async(session: AsyncSession, id: int) -> RetryResult:
    """:func:`retry_job` for an AsyncSession.

    Raises:
        JobValidationError: as :func:`retry_job`.
    """
    return await session.run_sync(retry_job, id)


async def wait_for_job(
    engine: AsyncEngine,
    id: int,
    *,
    timeout: timedelta,
    recheck: timedelta = timedelta(seconds=5),
) -> JobInfo | None:
    """Wait until the job finishes and return it; None if no such job exists.

    Marks the job as waited for (``notify_finished``) and listens on the schema's
    finish channel (workers send one notification per batch of finished jobs that
    someone waits for, naming them) on a connection of its own, so it needs an
    engine, not a session: a session's open transaction would hold notifications
    back. It looks the job up after listening starts (no finish can slip between),
    whenever a notification names it, and every ``recheck`` in case a notification
    was missed (a retry that ended ``cancelled`` sends none). A job that is pruned
    (retention 0) while waited for comes back as None.

    Args:
        engine: an engine using the asyncpg driver (others are polled every
            ``recheck``).
        id: the job's id.
        timeout: how long to wait.
        recheck: how often to look the job up without a notification.

    Raises:
        JobValidationError: ``id`` breaks its rule, ``timeout`` or ``recheck`` is not
            a positive timedelta.
        JobWaitTimeoutError: the job had not finished within ``timeout``.
    """
    job_id = _job_id(id)
    for name, value in (("timeout", timeout), ("recheck", recheck)):
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise JobValidationError(name, "must be a timedelta above zero")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds()
    woken = asyncio.Event()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "" or str(job_id) in payload.split(","):
            woken.set()

    async with engine.connect() as opened:
        conn = await opened.execution_options(isolation_level="AUTOCOMMIT")
        channel = done_channel_for(schema_of(conn))
        driver: Any = (await conn.get_raw_connection()).driver_connection
        listening = hasattr(driver, "add_listener")  # asyncpg
        if listening:
            await driver.add_listener(channel, on_notify)
            # Workers announce only the jobs someone waits for.
            await conn.execute(sql.job_watch(job_id))
        try:
            while True:
                woken.clear()
                info = await _look_up(conn, job_id)
                if info is None or info.finished:
                    return info
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise JobWaitTimeoutError(job_id, timeout)
                wait = min(remaining, recheck.total_seconds())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), wait)
        finally:
            if listening:
                await driver.remove_listener(channel, on_notify)


async def _look_up(conn: AsyncConnection, job_id: int) -> JobInfo | None:
    return await conn.run_sync(lambda sync_conn: get_job(Session(bind=sync_conn), job_id))
