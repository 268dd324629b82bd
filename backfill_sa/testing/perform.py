"""``perform``: one handler run as the worker would, without a job in the database."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backfill_sa.tasks import TaskRegistry
from backfill_sa.telemetry import Telemetry
from backfill_sa.testing.blocking import run_blocking
from backfill_sa.testing.drain import WORKER_ID
from backfill_sa.worker.executor import Executor
from backfill_sa.worker.outcomes import OutcomeKind

__all__ = ["PerformResult", "perform", "perform_async"]


@dataclass(frozen=True, slots=True)
class PerformResult:
    """How one :func:`perform` run ended, as the worker would have classified it.

    Attributes:
        outcome: ``succeeded``, ``retried``, ``snoozed`` or ``dead_lettered``.
        reason: the dead-letter reason, if dead-lettered.
        error: the error the worker would store (``type``, ``message``,
            ``traceback``, ``attempt``), else None.
        delay: the backoff before the next attempt (retried, snoozed), else None.
        result: what the handler returned, as the worker would store it (decoded
            JSON), else None.
    """

    outcome: str
    reason: str | None = None
    error: Mapping[str, Any] | None = None
    delay: dt.timedelta | None = None
    result: Any = None

    @property
    def succeeded(self) -> bool:
        """Whether the handler returned."""
        return self.outcome == OutcomeKind.SUCCEEDED.value


async def _perform_body(
    registry: TaskRegistry,
    task: str,
    payload: Any,
    *,
    attempt: int,
    max_attempts: int,
    job_id: int,
    queue: str | None,
    metadata: Mapping[str, Any] | None,
) -> PerformResult:
    registered = registry.get(task)
    now = dt.datetime.now(dt.timezone.utc)
    job = {
        "id": job_id,
        "task": task,
        "queue": queue or (registered.options.queue if registered else "bulk"),
        "payload": payload if payload is not None else {},
        "priority": registered.options.priority if registered else 0,
        "run_at": now,
        "attempts": attempt,
        "max_attempts": max_attempts,
        "lease": 1,
        "retry_policy": None,
        "metadata": dict(metadata) if metadata else None,
        "created_at": now,
        "locked_at": now,
    }
    executor = Executor(registry, WORKER_ID, 1, Telemetry())
    try:
        outcome = await executor.run(job)
    finally:
        executor.close()
    delay = (
        dt.timedelta(milliseconds=outcome.delay_ms)
        if outcome.kind in (OutcomeKind.RETRIED, OutcomeKind.SNOOZED)
        else None
    )
    return PerformResult(
        outcome=outcome.kind.value,
        reason=outcome.reason,
        error=None if outcome.error is None else json.loads(outcome.error),
        delay=delay,
        result=None if outcome.result is None else json.loads(outcome.result),
    )


def perform(
    registry: TaskRegistry,
    task: str,
    payload: Any = None,
    *,
    attempt: int = 1,
    max_attempts: int = 8,
    job_id: int = 0,
    queue: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PerformResult:
    """Run one handler directly, as the worker would, without a job in the database.

    The worker's executor builds the :class:`~backfill_sa.tasks.JobContext`, applies
    the task's ``parse`` hook and timeout, and classifies what the handler raised
    with the task's ``retry_on``/``give_up_on`` and retry policy.

    Args:
        registry: the application's tasks.
        task: the task to run (an unknown one ends ``retried`` or, on the last
            attempt, ``dead_lettered`` with ``unknown_task``, as in a worker).
        payload: the job's payload (``None``: ``{}``).
        attempt: the attempt number the handler sees (``ctx.attempt``).
        max_attempts: attempts allowed in all (``ctx.max_attempts``).
        job_id: ``ctx.job_id``.
        queue: ``ctx.queue`` (default: the task's queue).
        metadata: ``ctx.metadata``.

    Returns:
        The outcome the worker would write.

    Example::

        assert perform(registry, "send_receipt", {"order_id": 42}).succeeded
    """
    return run_blocking(
        _perform_body(
            registry,
            task,
            payload,
            attempt=attempt,
            max_attempts=max_attempts,
            job_id=job_id,
            queue=queue,
            metadata=metadata,
        )
    )


async def perform_async(
    registry: TaskRegistry,
    task: str,
    payload: Any = None,
    *,
    attempt: int = 1,
    max_attempts: int = 8,
    job_id: int = 0,
    queue: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PerformResult:
    """:func:`perform` from async code (same arguments)."""
    return await _perform_body(
        registry,
        task,
        payload,
        attempt=attempt,
        max_attempts=max_attempts,
        job_id=job_id,
        queue=queue,
        metadata=metadata,
    )
