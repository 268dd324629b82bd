"""Runs one claimed job's handler and turns what happened into an :class:`Outcome`."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backfill_sa.errors import UnknownTaskError
from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import JobContext, Task, TaskRegistry
from backfill_sa.telemetry import Outcome as TelemetryOutcome
from backfill_sa.telemetry import Telemetry
from backfill_sa.worker.outcomes import Outcome, OutcomeKind, classify, resolve_policy

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
    """

    def __init__(
        self,
        registry: TaskRegistry,
        worker_id: str,
        threads: int,
        telemetry: Telemetry,
        rng: random.Random | None = None,
    ) -> None:
        """Create the executor; the thread pool starts lazily."""
        self.registry = registry
        self.worker_id = worker_id
        self.telemetry = telemetry
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._rng = rng or random.Random()
        self._policies: dict[str, RetryPolicy] = {}

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
            exc: BaseException | None
            if task is None:
                exc = UnknownTaskError(job["task"])
            else:
                try:
                    await self._call(task, job)
                    exc = None
                except asyncio.CancelledError:
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
            outcome = self._outcome(job, task, exc)
            outcome.duration = time.perf_counter() - started
            span.set_outcome(
                TelemetryOutcome(outcome.kind.value),
                reason=outcome.reason,
                error=exc if outcome.kind is not OutcomeKind.SNOOZED else None,
            )
        if exc is not None and outcome.kind is not OutcomeKind.SNOOZED:
            job_logger.warning(
                "job %s (%s) attempt %s failed: %s -> %s",
                job["id"],
                job["task"],
                job["attempts"],
                type(exc).__name__,
                outcome.kind.value,
                extra={"job_id": job["id"], "task": job["task"], "queue": job["queue"]},
            )
        return outcome

    def _outcome(self, job: Any, task: Task | None, exc: BaseException | None) -> Outcome:
        if exc is None:
            return Outcome(
                OutcomeKind.SUCCEEDED, job["id"], job["lease"], job["task"], job["queue"]
            )
        return classify(
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

    async def _call(self, task: Task, job: Any) -> None:
        ctx = self._context(task, job)
        payload = task.parse_payload(job["payload"])
        timeout = task.options.timeout
        if task.is_async:
            awaitable: Any = task.handler(payload, ctx)
        else:
            loop = asyncio.get_running_loop()
            awaitable = loop.run_in_executor(
                self._thread_pool(), functools.partial(task.handler, payload, ctx)
            )
        if timeout is None:
            await awaitable
        else:
            await asyncio.wait_for(awaitable, timeout.total_seconds())

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
            logger=logging.LoggerAdapter(
                job_logger,
                {
                    "job_id": job["id"],
                    "task": job["task"],
                    "queue": job["queue"],
                    "attempt": job["attempts"],
                },
            ),
        )


class _Cancelled(BaseException):
    """Carries the outcome of a job cancelled by shutdown out of :meth:`Executor.run`."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("cancelled by shutdown")
        self.outcome = outcome
