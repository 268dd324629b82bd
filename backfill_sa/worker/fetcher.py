"""QueueFetcher: one queue's claim loop, from a free slot to a running job.

A fetcher claims a batch sized to its queue's free slots with one statement (the
previous batch's successes are deleted in the same statement), starts a task per job,
and sleeps until a NOTIFY, a freed slot, or the poll interval wakes it. A claim whose
reply was lost with the connection is given back before the next claim.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from dataclasses import dataclass
from typing import Any

from backfill_sa.statements.worker_sql import (
    job_claim_batch,
    job_complete_and_claim,
    job_release_orphans,
)
from backfill_sa.telemetry import Telemetry
from backfill_sa.worker.completer import Completer, finish_params
from backfill_sa.worker.db import Database, Record, is_transient
from backfill_sa.worker.executor import Executor, _Cancelled
from backfill_sa.worker.maintenance import Promoter
from backfill_sa.worker.outcomes import Outcome, OutcomeKind, error_json

__all__ = ["MAX_BACKOFF", "FetchServices", "QueueFetcher", "backoff", "wait_any"]

logger = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
"""Longest pause, in seconds, between claims while the database keeps failing."""


def backoff(poll_interval: float, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` failed rounds in a row (at least one).

    The poll interval doubled per failure, capped at :data:`MAX_BACKOFF` (never below
    the poll interval), times a jitter of 0.5 to 1.5 so that workers that lost the
    same server do not all come back in step.
    """
    base: float = min(max(MAX_BACKOFF, poll_interval), poll_interval * 2 ** min(failures - 1, 30))
    jitter: float = (rng or random).uniform(0.5, 1.5)
    return base * jitter


async def wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Return when any of ``events`` is set or ``timeout`` seconds pass."""
    for event in events:
        if event.is_set():
            return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@dataclass(frozen=True)
class FetchServices:
    """What every fetcher of one run shares.

    Attributes:
        worker_id: this worker's id (``locked_by`` of its claims).
        db: the worker's database.
        executor: runs the handlers.
        completer: writes outcomes; hands successes back for the next claim.
        promoter: makes due scheduled jobs available (burst runs call it directly).
        telemetry: metrics and spans.
        poll_interval: seconds between claims when nothing wakes the fetcher.
        batch_size: most jobs claimed at once.
        stop: set when the worker stops claiming.
    """

    worker_id: str
    db: Database
    executor: Executor
    completer: Completer
    promoter: Promoter
    telemetry: Telemetry
    poll_interval: float
    batch_size: int
    stop: asyncio.Event


class QueueFetcher:
    """Claims and starts the jobs of one queue, never more at once than its capacity.

    Args:
        name: the queue.
        capacity: the most jobs of this queue running at once in this process.
    """

    def __init__(self, name: str, capacity: int) -> None:
        """Create an idle fetcher; :meth:`run` starts claiming."""
        self.name = name
        self.capacity = capacity
        self.running: dict[asyncio.Task[Outcome], int] = {}
        """Tasks of the jobs running now, with their job ids."""
        self.wake = asyncio.Event()
        """Set by a NOTIFY for this queue (or promotion): claim now."""
        self.slot = asyncio.Event()
        """Set when a job finishes or the capacity changes."""
        self.peak = 0
        """Most jobs seen running at once."""
        self.orphans_possible = False
        """A claim failed in a way that may have committed: give back before claiming."""

    def set_capacity(self, capacity: int) -> None:
        """Change how many jobs may run at once (a ``queues`` row's override)."""
        if capacity != self.capacity:
            self.capacity = capacity
            self.slot.set()

    async def run(self, services: FetchServices, *, burst: bool) -> None:
        """Claim and start jobs until ``services.stop`` is set (or, in a burst, until
        nothing of this queue is due, running or waiting to be written).

        Raises:
            asyncpg.PostgresError: in a burst, a claim failed for a reason other than
                a transient connection error.
        """
        stop = services.stop
        completer = services.completer
        params: dict[str, Any] = {
            "claim_queue": self.name,
            "worker_id": services.worker_id,
            "limit": 0,
        }
        checked_idle = False
        failures = 0  # failed rounds in a row: the pause grows while the database is away
        while not stop.is_set():
            # A claim whose reply was lost may have committed: give its jobs back
            # before claiming again (one try per round, so a stop is never held up).
            if self.orphans_possible and not await self._release_orphans(services):
                failures += 1
                await wait_any(stop, timeout=backoff(services.poll_interval, failures))
                continue
            free = self.capacity - len(self.running)
            if free <= 0:
                self.slot.clear()
                await wait_any(self.slot, stop)
                continue
            limit = min(free, services.batch_size)
            params["limit"] = limit
            self.wake.clear()
            done = completer.take_successes()
            try:
                rows = await self._claim(services.db, params, done, completer)
            except asyncio.CancelledError:
                completer.restore(done)
                raise
            except Exception as exc:
                completer.restore(done)
                transient = is_transient(exc)
                if burst and not transient:
                    raise  # a burst run reports a broken claim instead of looping on it
                failures += 1
                if transient:
                    self.orphans_possible = True
                    logger.warning("claiming from queue %r failed: %r", self.name, exc)
                else:
                    logger.exception("claiming from queue %r failed", self.name)
                await wait_any(stop, timeout=backoff(services.poll_interval, failures))
                continue
            failures = 0
            if rows:
                checked_idle = False
                self._dispatch(rows, services.executor, completer)
                services.telemetry.record_claimed(rows, claimed_at=rows[0]["locked_at"])
                if len(rows) == limit:
                    continue
            if burst:
                if rows:
                    continue
                if self.running:
                    self.slot.clear()
                    await wait_any(self.slot, stop)
                    continue
                if checked_idle:
                    return
                # Outcomes such as Snooze(0) make jobs available again once written.
                await completer.flush()
                await services.promoter.run_once()
                checked_idle = True
                continue
            await wait_any(self.wake, stop, timeout=services.poll_interval)

    async def _claim(
        self,
        db: Database,
        params: dict[str, Any],
        done: list[Outcome],
        completer: Completer,
    ) -> list[Record]:
        """Claim a batch; write ``done`` successes in the same statement if any."""
        if not done:
            return list(await db.execute(job_claim_batch, params, retry=False))
        finished = finish_params(done, completer.done_channel)
        params.update(finished)
        try:
            result = await db.execute(job_complete_and_claim, params, retry=False)
        finally:
            for name in finished:
                del params[name]
        claimed = [r for r in result if r["done_id"] is None]
        completer.record_written(done, {r["done_id"] for r in result if r["done_id"] is not None})
        return claimed

    def _dispatch(self, rows: Any, executor: Executor, completer: Completer) -> None:
        loop = asyncio.get_running_loop()
        for row in rows:
            task = loop.create_task(executor.run(row))
            self.running[task] = row["id"]
            task.add_done_callback(functools.partial(self._job_done, executor, completer, row))
        self.peak = max(self.peak, len(self.running))

    def _job_done(
        self, executor: Executor, completer: Completer, row: Any, task: asyncio.Task[Outcome]
    ) -> None:
        del self.running[task]
        if task.cancelled() and executor.cancel_was_requested(row["id"]):
            outcome = executor.cancelled_outcome(row)
        elif task.cancelled():
            # Cancelled before the handler started: give the job back untouched.
            outcome = Outcome(
                OutcomeKind.RETRIED,
                row["id"],
                row["lease"],
                row["task"],
                row["queue"],
                error=error_json(None, row["attempts"], message="worker shut down"),
                refund=1,
                keep_ms=executor.keep_ms(row["task"], row["queue"]),
            )
        else:
            exc = task.exception()
            if exc is None:
                outcome = task.result()
            elif isinstance(exc, _Cancelled):
                outcome = exc.outcome
            else:  # pragma: no cover - Executor.run never raises anything else
                logger.error("job %s: executor failed", row["id"], exc_info=exc)
                outcome = Outcome(
                    OutcomeKind.RETRIED,
                    row["id"],
                    row["lease"],
                    row["task"],
                    row["queue"],
                    delay_ms=1000,
                    error=error_json(exc, row["attempts"]),
                    keep_ms=executor.keep_ms(row["task"], row["queue"]),
                )
        executor.forget(row["id"])
        completer.add(outcome)
        self.slot.set()

    async def _release_orphans(self, services: FetchServices) -> bool:
        """Give back claims whose reply was lost with the connection; return success.

        One try, no internal retries: the fetcher tries again next round (and claims
        nothing meanwhile), so a stop is never held up by a dead database.
        """
        known = set(self.running.values()) | services.completer.unwritten_ids()
        try:
            rows = await services.db.execute(
                job_release_orphans,
                {
                    "worker_id": services.worker_id,
                    "claim_queue": self.name,
                    "known_ids": sorted(known),
                },
                retry=False,
            )
        except Exception as exc:
            logger.warning("releasing orphaned claims of queue %r failed: %r", self.name, exc)
            return False
        self.orphans_possible = False
        if rows:
            logger.warning("released %d claims whose reply was lost", len(rows))
        return True
