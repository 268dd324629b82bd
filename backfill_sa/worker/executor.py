"""Runs one claimed job's handler and turns what happened into an :class:`Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from backfill_sa.errors import UnknownTaskError
from backfill_sa.retry import RetryPolicy
from backfill_sa.states import FailureReason
from backfill_sa.tasks import JobContext, Task, TaskRegistry
from backfill_sa.telemetry import Outcome as TelemetryOutcome
from backfill_sa.telemetry import Telemetry
from backfill_sa.worker.outcomes import (
    Outcome,
    OutcomeKind,
    classify,
    encode_result,
    error_json,
    resolve_policy,
)

if TYPE_CHECKING:
    from backfill_sa.worker.transactional import TransactionalSessions

__all__ = ["Executor", "ShutdownCancelled"]

job_logger = logging.getLogger("backfill_sa.job")


class ShutdownCancelled(Exception):
    """The worker stopped before the handler finished; the job goes back to the queue."""


class Executor:
    """Runs handlers: ``async def`` in the event loop, plain ``def`` in a thread pool.

    Args:
        registry: the application's tasks.
        worker_id: this worker's id (put in each JobContext).
        threads: size of the pool for sync handlers (the total concurrency).
        telemetry: metrics and spans.
        rng: random source for retry jitter.
        retention: how long finished jobs are kept unless the task or queue says.
        queue_retention: per-queue retention.
        max_result_bytes: largest return value stored (JSON bytes).
        transactions: runs ``transactional=True`` tasks (None: the registry has none).
    """

    def __init__(
        self,
        registry: TaskRegistry,
        worker_id: str,
        threads: int,
        telemetry: Telemetry,
        rng: random.Random | None = None,
        *,
        retention: timedelta = timedelta(hours=24),
        queue_retention: Mapping[str, timedelta] = MappingProxyType({}),
        max_result_bytes: int = 65_536,
        transactions: TransactionalSessions | None = None,
    ) -> None:
        """Create the executor; the thread pool starts lazily."""
        self._transactions = transactions
        self._settled: dict[int, Outcome] = {}
        self.registry = registry
        self.worker_id = worker_id
        self.telemetry = telemetry
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._rng = rng or random.Random()
        self._policies: dict[str, RetryPolicy] = {}
        self._retention = retention
        self._queue_retention = queue_retention
        self._max_result_bytes = max_result_bytes
        self._keep_ms: dict[tuple[str, str], int] = {}
        self._contexts: dict[int, JobContext] = {}
        self._cancel_requested: set[int] = set()

    def keep_ms(self, task_name: str, queue: str) -> int:
        """Milliseconds a finished job of ``task_name`` in ``queue`` is kept."""
        key = (task_name, queue)
        keep = self._keep_ms.get(key)
        if keep is None:
            task = self.registry.get(task_name)
            retention = task.options.retention if task is not None else None
            if retention is None:
                retention = self._queue_retention.get(queue, self._retention)
            keep = self._keep_ms[key] = round(retention.total_seconds() * 1000)
        return keep

    def request_cancel(self, job_id: int) -> bool:
        """Record that cancelling ``job_id`` was asked for and tell its handler.

        The attempt then ends ``cancelled`` whatever the handler does. Returns whether
        the caller should cancel the job's asyncio task: yes for an ``async def``
        handler or one not started yet; no for a plain ``def`` handler running in a
        thread (it sees ``ctx.cancel_requested``; a thread cannot be interrupted).
        """
        self._cancel_requested.add(job_id)
        ctx = self._contexts.get(job_id)
        if ctx is None:
            return True
        ctx.cancel_event.set()
        task = self.registry.get(ctx.task)
        return task is not None and task.is_async

    def cancel_was_requested(self, job_id: int) -> bool:
        """Whether :meth:`request_cancel` was called for ``job_id`` (not yet forgotten)."""
        return job_id in self._cancel_requested

    def forget(self, job_id: int) -> None:
        """Drop what is kept about ``job_id`` once its outcome is queued."""
        self._cancel_requested.discard(job_id)

    def cancelled_outcome(self, job: Any, *, error: str | None = None) -> Outcome:
        """The outcome of an attempt that ended because its cancellation was asked for."""
        message = "cancelled on request"
        return Outcome(
            OutcomeKind.CANCELLED,
            job["id"],
            job["lease"],
            job["task"],
            job["queue"],
            error=error or error_json(None, job["attempts"], message=message),
            keep_ms=self.keep_ms(job["task"], job["queue"]),
            attempt=job["attempts"],
        )

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix="backfill-job"
            )
        return self._pool

    def close(self) -> None:
        """Release the thread pool without waiting for abandoned sync handlers."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _policy(self, stored: Any, task: Task | None) -> RetryPolicy:
        if isinstance(stored, dict) and stored:
            key = repr(sorted(stored.items()))
            policy = self._policies.get(key)
            if policy is None:
                policy = self._policies[key] = resolve_policy(stored, task)
            return policy
        return resolve_policy(None, task)

    async def run(self, job: Any) -> Outcome:
        """Run ``job`` (a claimed row) and return its outcome; never raises.

        The attempt runs inside a ``backfill.job`` telemetry span that continues the
        trace stored at enqueue. A cancellation of the surrounding task (worker
        shutdown) becomes a retry with no delay that gives the attempt back (the job
        did nothing wrong), carried out in a ``_Cancelled`` exception.
        """
        with self.telemetry.job_span(
            job_id=job["id"],
            task=job["task"],
            queue=job["queue"],
            attempt=job["attempts"],
            metadata=job["metadata"],
        ) as span:
            started = time.perf_counter()
            task = self.registry.get(job["task"])
            malformed = self._malformed(job, task)
            if malformed is not None:
                span.set_outcome(
                    TelemetryOutcome.DEAD_LETTERED, reason=FailureReason.INVALID_JOB.value
                )
                job_logger.warning(
                    "job %s (%s) is malformed: %s -> dead_lettered",
                    job["id"],
                    job["task"],
                    malformed,
                    extra=_job_fields(job),
                )
                return Outcome(
                    OutcomeKind.DEAD,
                    job["id"],
                    job["lease"],
                    job["task"],
                    job["queue"],
                    error=error_json(None, job["attempts"], message=malformed),
                    reason=FailureReason.INVALID_JOB.value,
                    duration=time.perf_counter() - started,
                    attempt=job["attempts"],
                )
            exc: BaseException | None
            value: object = None
            if task is None:
                exc = UnknownTaskError(job["task"])
            else:
                try:
                    value = await self._call(task, job)
                    exc = None
                except asyncio.CancelledError:
                    if job["id"] in self._cancel_requested:
                        outcome = self.cancelled_outcome(job)
                        outcome.duration = time.perf_counter() - started
                        span.set_outcome(TelemetryOutcome.CANCELLED)
                        return outcome
                    outcome = self._outcome(job, task, ShutdownCancelled("worker shut down"))
                    outcome.kind = OutcomeKind.RETRIED
                    outcome.delay_ms = 0
                    outcome.refund = 1
                    outcome.reason = None
                    outcome.shutdown = True
                    outcome.duration = time.perf_counter() - started
                    span.set_outcome(TelemetryOutcome.RETRIED)
                    raise _Cancelled(outcome) from None
                except Exception as error:
                    exc = error
                finally:
                    self._contexts.pop(job["id"], None)
            settled = self._settled.pop(job["id"], None)
            if settled is not None:
                # Completed (or refused) in the handler's own transaction.
                settled.duration = time.perf_counter() - started
                if settled.committed:
                    span.set_outcome(TelemetryOutcome.SUCCEEDED)
                return settled
            if job["id"] in self._cancel_requested:
                failure = None if exc is None else error_json(exc, job["attempts"])
                outcome = self.cancelled_outcome(job, error=failure)
                if value is not None:
                    outcome.result, _ = encode_result(
                        value, self._max_result_bytes, job["attempts"]
                    )
                outcome.duration = time.perf_counter() - started
                span.set_outcome(TelemetryOutcome.CANCELLED)
                return outcome
            outcome = self._success(job, value) if exc is None else self._outcome(job, task, exc)
            outcome.duration = time.perf_counter() - started
            span.set_outcome(
                TelemetryOutcome(outcome.kind.value),
                reason=outcome.reason,
                error=exc if outcome.kind is not OutcomeKind.SNOOZED else None,
            )
            if exc is not None and outcome.kind is not OutcomeKind.SNOOZED:
                # Inside the span: the record carries the job's trace and span ids.
                job_logger.warning(
                    "job %s (%s) attempt %s failed: %s -> %s",
                    job["id"],
                    job["task"],
                    job["attempts"],
                    type(exc).__name__,
                    outcome.kind.value,
                    extra=_job_fields(job),
                )
        return outcome

    def _malformed(self, job: Any, task: Task | None) -> str | None:
        """Say what is wrong with a row no enqueue of ours would write, or None.

        ``metadata`` must be an object (or empty) and ``retry_policy`` empty or a
        policy :meth:`RetryPolicy.from_json` accepts: rows written by other means
        (another application version, hand-written SQL) are checked before their
        handler runs, so that a bad row is dead-lettered instead of failing later.
        """
        metadata = job["metadata"]
        if metadata is not None and not isinstance(metadata, dict):
            return f"metadata must be a JSON object, not {type(metadata).__name__}"
        stored = job["retry_policy"]
        if stored is None or stored == {}:
            return None
        if not isinstance(stored, dict):
            return f"retry_policy must be a JSON object, not {type(stored).__name__}"
        try:
            self._policy(stored, task)
        except Exception as exc:
            return f"retry_policy is malformed: {exc}"
        return None

    def _success(self, job: Any, value: object) -> Outcome:
        """The outcome of an attempt whose handler returned ``value``."""
        outcome = self._outcome(job, None, None)
        if value is not None:
            outcome.result, outcome.error = encode_result(
                value, self._max_result_bytes, job["attempts"]
            )
        return outcome

    def _outcome(self, job: Any, task: Task | None, exc: BaseException | None) -> Outcome:
        keep_ms = self.keep_ms(job["task"], job["queue"])
        if exc is None:
            return Outcome(
                OutcomeKind.SUCCEEDED,
                job["id"],
                job["lease"],
                job["task"],
                job["queue"],
                attempt=job["attempts"],
                keep_ms=keep_ms,
            )
        outcome = classify(
            exc,
            job_id=job["id"],
            lease=job["lease"],
            task_name=job["task"],
            queue=job["queue"],
            attempt=job["attempts"],
            max_attempts=job["max_attempts"],
            task=task,
            policy=self._policy(job["retry_policy"], task),
            rng=self._rng,
            unknown_task=task is None,
        )
        outcome.keep_ms = keep_ms
        return outcome

    async def _call(self, task: Task, job: Any) -> object:
        ctx = self._context(task, job)
        self._contexts[job["id"]] = ctx
        if job["id"] in self._cancel_requested:
            ctx.cancel_event.set()
            raise asyncio.CancelledError
        payload = task.parse_payload(job["payload"])
        timeout = task.options.timeout
        if task.options.transactional:
            return await self._call_transactional(task, job, payload, ctx)
        if task.is_async:
            awaitable: Any = task.handler(payload, ctx)
        else:
            # In the job's context (its span is current there): log records and spans
            # made by a sync handler join the job's trace as an async handler's do.
            loop = asyncio.get_running_loop()
            run = contextvars.copy_context().run
            awaitable = loop.run_in_executor(
                self._thread_pool(), functools.partial(run, task.handler, payload, ctx)
            )
        if timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, timeout.total_seconds())

    async def _call_transactional(
        self, task: Task, job: Any, payload: Any, ctx: JobContext
    ) -> object:
        """Run a transactional task's handler; its job is completed in its transaction.

        The success outcome (committed, or refused by the fence) is kept for
        :meth:`run` in ``_settled``; nothing is kept when the handler raised or
        cancellation was asked for before the commit (the completer writes those).
        """
        transactions = self._transactions
        if transactions is None:
            raise RuntimeError(f"task {task.name!r} is transactional; the worker has no sessions")
        timeout = None if task.options.timeout is None else task.options.timeout.total_seconds()
        made: list[Outcome] = []

        def settle(value: object) -> Outcome | None:
            if job["id"] in self._cancel_requested:
                return None
            outcome = self._success(job, value)
            made.append(outcome)
            return outcome

        if task.is_async:

            async def call(with_session: JobContext) -> object:
                result: Any = task.handler(payload, with_session)
                return await asyncio.wait_for(result, timeout) if timeout else await result

            value, committed = await transactions.run_async(call, ctx, settle)
        else:
            running = asyncio.get_running_loop().run_in_executor(
                self._thread_pool(),
                functools.partial(transactions.run_sync, task.handler, payload, ctx, settle),
            )
            value, committed = await asyncio.wait_for(running, timeout)
        if committed is not None:
            made[0].committed = committed
            self._settled[job["id"]] = made[0]
        return value

    def _context(self, task: Task, job: Any) -> JobContext:
        metadata: Mapping[str, Any] = job["metadata"] or {}
        run_at: dt.datetime = job["run_at"]
        return JobContext(
            job_id=job["id"],
            task=job["task"],
            queue=job["queue"],
            attempt=job["attempts"],
            max_attempts=job["max_attempts"],
            priority=job["priority"],
            run_at=run_at,
            enqueued_at=job["created_at"],
            metadata=metadata,
            worker_id=self.worker_id,
            claimed_at=job["locked_at"],
            logger=logging.LoggerAdapter(job_logger, _job_fields(job)),
        )


def _job_fields(job: Any) -> dict[str, Any]:
    """The structured fields of every log record about a job (``extra=``)."""
    return {
        "job_id": job["id"],
        "task": job["task"],
        "queue": job["queue"],
        "attempt": job["attempts"],
    }


class _Cancelled(BaseException):
    """Carries the outcome of a job cancelled by shutdown out of :meth:`Executor.run`."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("cancelled by shutdown")
        self.outcome = outcome
