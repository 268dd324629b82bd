"""Running jobs inside a test's transaction: ``drain`` and inline mode.

Jobs are claimed with the worker's claim, run by the worker's
:class:`~backfill_sa.worker.executor.Executor` (payload parsing, timeouts, the
:class:`~backfill_sa.tasks.JobContext`, classification of errors into retry, snooze
or dead letter) and their outcomes written by the worker's
:class:`~backfill_sa.worker.completer.Completer` with the worker's statements, all
through the test's own session: a drained job ends exactly as a worker would leave
it, and the test's rollback undoes it with everything else.

Sync and async share one body (:func:`_drain_body`); the sync flavour runs it in
an event loop of its own, the async flavour in the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql.elements import ClauseElement

from backfill_sa.notify import schema_of
from backfill_sa.statements import jobs_runtime, workers
from backfill_sa.statements.jobs_drain import job_claim_next, job_make_due
from backfill_sa.tasks import TaskRegistry
from backfill_sa.telemetry import Telemetry
from backfill_sa.testing.blocking import run_blocking
from backfill_sa.worker.completer import Completer
from backfill_sa.worker.executor import Executor
from backfill_sa.worker.outcomes import Outcome, OutcomeKind

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from backfill_sa.statements.rendered import RenderedSql

__all__ = [
    "WORKER_ID",
    "DrainResult",
    "DrainedJob",
    "InlineMode",
    "JobFailed",
    "drain",
    "drain_async",
]

WORKER_ID = "backfill-testing"
"""The ``worker_id`` drained jobs are claimed under (``ctx.worker_id``)."""

DEFAULT_MAX_JOBS = 1000
"""Attempts one drain runs at most before it stops with an AssertionError."""


class JobFailed(AssertionError):
    """A job run by ``drain(raise_errors=True)`` or in inline mode did not succeed.

    The outcome was written first (the job is retried or dead-lettered as a worker
    would leave it); the message carries the handler's error and traceback.

    Attributes:
        jobs: the attempts that failed.
    """

    def __init__(self, jobs: Sequence[DrainedJob]) -> None:
        """Describe the failed attempts ``jobs``."""
        self.jobs = tuple(jobs)
        lines = []
        for job in self.jobs:
            error = job.error or {}
            lines.append(
                f"job {job.job_id} ({job.task!r}, attempt {job.attempt}) -> {job.outcome}"
                f"{f' ({job.reason})' if job.reason else ''}: "
                f"{error.get('type', '?')}: {error.get('message', '')}"
            )
            if error.get("traceback"):
                lines.append(str(error["traceback"]).rstrip())
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class DrainedJob:
    """One attempt a drain ran, and how it ended.

    Attributes:
        job_id: the job's id.
        task: its task.
        queue: its queue.
        attempt: the attempt's number (1 for the first).
        outcome: ``succeeded``, ``retried``, ``snoozed``, ``dead_lettered`` or
            ``cancelled``.
        reason: the dead-letter reason, if dead-lettered.
        error: the stored error (``type``, ``message``, ``traceback``, ``attempt``)
            of a failed attempt (or of a result that could not be stored), else None.
        result: what the handler returned, as stored (decoded JSON), else None.
    """

    job_id: int
    task: str
    queue: str
    attempt: int
    outcome: str
    reason: str | None = None
    error: Mapping[str, Any] | None = None
    result: Any = None


@dataclass(frozen=True, slots=True)
class DrainResult:
    """Counts by outcome of the attempts a drain ran (compare with ``==``).

    Attributes:
        succeeded: attempts whose handler returned.
        retried: attempts that failed and were rescheduled with backoff.
        snoozed: attempts that raised ``Snooze``.
        dead_lettered: attempts that moved their job to the dead-letter queue.
        cancelled: attempts whose job ended ``cancelled`` (its cancellation was asked
            for while it ran).
        jobs: every attempt, in the order run (not compared by ``==``).
    """

    succeeded: int = 0
    retried: int = 0
    snoozed: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    jobs: tuple[DrainedJob, ...] = field(default=(), compare=False)

    @property
    def total(self) -> int:
        """Attempts run."""
        return self.succeeded + self.retried + self.snoozed + self.dead_lettered + self.cancelled

    @classmethod
    def of(cls, jobs: Sequence[DrainedJob]) -> DrainResult:
        """Count ``jobs`` by outcome."""
        counts = {kind.value: 0 for kind in OutcomeKind}
        for job in jobs:
            counts[job.outcome] += 1
        return cls(
            succeeded=counts[OutcomeKind.SUCCEEDED.value],
            retried=counts[OutcomeKind.RETRIED.value],
            snoozed=counts[OutcomeKind.SNOOZED.value],
            dead_lettered=counts[OutcomeKind.DEAD.value],
            cancelled=counts[OutcomeKind.CANCELLED.value],
            jobs=tuple(jobs),
        )


# -- the database side: sync functions of a Session, run directly or through run_sync --


def _connection(session: Session) -> Connection:
    from backfill_sa.models import Job

    return session.connection(bind_arguments={"mapper": Job})


def _claim(session: Session, queue: str | None, ids: list[int] | None) -> dict[str, Any] | None:
    statement = job_claim_next(queue=queue is not None, ids=ids is not None)
    params: dict[str, Any] = {"limit": 1, "worker_id": WORKER_ID}
    if queue is not None:
        params["claim_queue"] = queue
    if ids is not None:
        params["ids"] = ids
    row = _connection(session).execute(statement, params).first()
    return None if row is None else dict(row._mapping)


def _schema(session: Session) -> str:
    return schema_of(_connection(session))


def _make_due(session: Session, queue: str | None, ids: list[int] | None) -> None:
    statement = job_make_due(queue=queue is not None, ids=ids is not None)
    params: dict[str, Any] = {}
    if queue is not None:
        params["claim_queue"] = queue
    if ids is not None:
        params["ids"] = ids
    _connection(session).execute(statement, params).all()


_RUNTIME = {
    name: getattr(module, name)
    for module in (jobs_runtime, workers)
    for name in module.__all__
    if isinstance(getattr(module, name), ClauseElement)
}
"""The worker's Core statements by name: a RenderedSql's ``name`` is its builder's."""


def _run_statement(session: Session, name: str, params: Mapping[str, Any]) -> list[Any]:
    return list(_connection(session).execute(_RUNTIME[name], dict(params)).all())


Call = Callable[..., Awaitable[Any]]
"""Runs a sync function of a Session (``fn(session, *args)``) in the right flavour."""


def _sync_call(session: Session) -> Call:
    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(session, *args)

    return call


def _async_call(session: AsyncSession) -> Call:
    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return await session.run_sync(fn, *args)

    return call


@dataclass
class _SessionStatements:
    """The completer's database: the worker's statements, through the test's session."""

    call: Call
    schema: str

    async def execute(
        self,
        statement: RenderedSql,
        params: Mapping[str, Any] | None = None,
        *,
        retry: bool = True,
    ) -> Sequence[Any]:
        rows: list[Any] = await self.call(_run_statement, statement.name, params or {})
        return rows


def _drained(job: Mapping[str, Any], outcome: Outcome) -> DrainedJob:
    return DrainedJob(
        job_id=outcome.job_id,
        task=outcome.task,
        queue=outcome.queue,
        attempt=int(job["attempts"]),
        outcome=outcome.kind.value,
        reason=outcome.reason,
        error=None if outcome.error is None else json.loads(outcome.error),
        result=None if outcome.result is None else json.loads(outcome.result),
    )


async def _drain_body(
    call: Call,
    registry: TaskRegistry,
    *,
    queue: str | None,
    ids: list[int] | None,
    retries: bool,
    scheduled: bool,
    raise_errors: bool,
    max_jobs: int,
    telemetry: Telemetry | None,
) -> DrainResult:
    executor = Executor(registry, WORKER_ID, 1, telemetry or Telemetry())
    written: list[Outcome] = []
    schema: str = await call(_schema)
    completer = Completer(_SessionStatements(call, schema), on_written=written.extend)
    ran: list[DrainedJob] = []
    try:
        while True:
            if scheduled:
                await call(_make_due, queue, ids)
            job = await call(_claim, queue, ids)
            if job is None:
                break
            if len(ran) >= max_jobs:
                raise AssertionError(
                    f"drain ran {max_jobs} attempts and jobs are still due "
                    "(a job that enqueues itself, or one that always snoozes?); "
                    "raise max_jobs if that many are expected"
                )
            outcome = await executor.run(job)
            completer.add(outcome)
            await completer.flush()
            if not any(o is outcome for o in written):
                continue  # the write was refused: nothing happened to the job
            ran.append(_drained(job, outcome))
            if retries and outcome.kind is OutcomeKind.RETRIED:
                await call(_make_due, None, [outcome.job_id])
    finally:
        executor.close()
    result = DrainResult.of(ran)
    failed = [j for j in ran if j.outcome in ("retried", "dead_lettered")]
    if raise_errors and failed:
        raise JobFailed(failed)
    return result


def drain(
    session: Session,
    registry: TaskRegistry,
    queue: str | None = None,
    *,
    retries: bool = False,
    scheduled: bool = False,
    raise_errors: bool = False,
    max_jobs: int = DEFAULT_MAX_JOBS,
    telemetry: Telemetry | None = None,
) -> DrainResult:
    """Run the due jobs through their real handlers, inside ``session``'s transaction.

    Jobs are claimed one at a time (lowest priority first, as a worker would), run,
    and their outcome written before the next claim, so jobs that handlers enqueue
    run in the same drain. Paused queues are left alone.

    Args:
        session: the test's Session (its transaction holds the jobs).
        registry: the application's tasks.
        queue: only this queue; ``None``: every queue.
        retries: run a failed job again at once (its backoff skipped) until it
            succeeds or is dead-lettered; otherwise it stays scheduled.
        scheduled: also run jobs whose ``run_at`` is in the future (and snoozed
            ones), as if their time had come.
        raise_errors: raise :class:`JobFailed` at the end if an attempt failed.
        max_jobs: attempts after which the drain stops with an AssertionError.
        telemetry: where metrics and spans go (default: the global providers).

    Returns:
        Counts by outcome, with every attempt in ``jobs``.

    Raises:
        JobFailed: ``raise_errors`` and an attempt was retried or dead-lettered.
        AssertionError: more than ``max_jobs`` attempts were due.
        sqlalchemy.exc.DBAPIError: the database refused a statement.

    Example::

        enqueue(session, "send_receipt", {"order_id": 42})
        assert drain(session, registry) == DrainResult(succeeded=1)
    """
    return run_blocking(
        _drain_body(
            _sync_call(session),
            registry,
            queue=queue,
            ids=None,
            retries=retries,
            scheduled=scheduled,
            raise_errors=raise_errors,
            max_jobs=max_jobs,
            telemetry=telemetry,
        )
    )


async def drain_async(
    session: AsyncSession,
    registry: TaskRegistry,
    queue: str | None = None,
    *,
    retries: bool = False,
    scheduled: bool = False,
    raise_errors: bool = False,
    max_jobs: int = DEFAULT_MAX_JOBS,
    telemetry: Telemetry | None = None,
) -> DrainResult:
    """:func:`drain` for an AsyncSession (same arguments).

    Raises:
        JobFailed: ``raise_errors`` and an attempt was retried or dead-lettered.
        AssertionError: more than ``max_jobs`` attempts were due.
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    return await _drain_body(
        _async_call(session),
        registry,
        queue=queue,
        ids=None,
        retries=retries,
        scheduled=scheduled,
        raise_errors=raise_errors,
        max_jobs=max_jobs,
        telemetry=telemetry,
    )


# -- inline mode --------------------------------------------------------------------


@dataclass(frozen=True)
class InlineMode:
    """The enqueue hook of inline mode: each enqueue runs its jobs at once.

    Stored in ``session.info`` (see :func:`backfill_sa.testing.inline`), so it applies
    to one session or one sessionmaker's sessions. Jobs due now run before the
    enqueue returns, through :func:`drain` restricted to them; jobs with a future
    ``run_at`` wait for a drain. A job that fails raises :class:`JobFailed` from
    the enqueue (after its outcome was written) unless ``raise_errors`` is False.

    Attributes:
        registry: the application's tasks.
        raise_errors: raise :class:`JobFailed` when an inline job fails.
    """

    registry: TaskRegistry
    raise_errors: bool = True

    def after_enqueue(self, session: Session, job_ids: list[int]) -> None:
        """Run the jobs just enqueued through ``session`` (sync).

        Raises:
            JobFailed: a job failed and ``raise_errors`` is set.
        """
        if job_ids:
            run_blocking(self._run(_sync_call(session), job_ids))

    async def after_enqueue_async(self, session: AsyncSession, job_ids: list[int]) -> None:
        """Run the jobs just enqueued through ``session`` (async).

        Raises:
            JobFailed: a job failed and ``raise_errors`` is set.
        """
        if job_ids:
            await self._run(_async_call(session), job_ids)

    async def _run(self, call: Call, job_ids: list[int]) -> DrainResult:
        return await _drain_body(
            call,
            self.registry,
            queue=None,
            ids=job_ids,
            retries=False,
            scheduled=False,
            raise_errors=self.raise_errors,
            max_jobs=DEFAULT_MAX_JOBS,
            telemetry=None,
        )
