"""Writes attempt outcomes in batches: one statement per kind of outcome per flush.

Outcomes queue up while a flush is in flight, so the batch size follows the load:
one job per write when idle, hundreds under a burst. Every write is fenced by
``(id, lease)``; a refused write (the claim was lost) is logged, never applied.
An outcome that cannot be written (database down past the retry window) stays
queued and is tried again: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from backfill_sa.notify import done_channel_for
from backfill_sa.statements.worker_sql import (
    job_cancel_many,
    job_complete_many,
    job_dead_letter_many,
    job_retry_many,
)
from backfill_sa.worker.db import StatementRunner
from backfill_sa.worker.outcomes import Outcome, OutcomeKind

__all__ = ["Completer", "RunResult", "finish_params"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Counts of outcomes the database accepted during a run.

    Attributes:
        succeeded: jobs completed (kept as ``completed``, or deleted with no retention).
        retried: failed attempts rescheduled with backoff.
        returned: jobs cancelled by this worker's shutdown and given back to the
            queue at once, the attempt refunded (not failures: counted apart from
            ``retried``).
        snoozed: jobs rescheduled by ``Snooze`` (attempt given back).
        dead_lettered: jobs moved to the dead-letter queue.
        refused: outcome writes refused by the fence (claim lost meanwhile).
        rescued: stale claims returned by this worker's maintenance.
        cancelled: attempts that ended ``cancelled`` because cancelling was asked for.
    """

    succeeded: int = 0
    retried: int = 0
    returned: int = 0
    snoozed: int = 0
    dead_lettered: int = 0
    refused: int = 0
    rescued: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        """Jobs whose attempt ended (succeeded, retried, returned, snoozed,
        dead-lettered, cancelled)."""
        return (
            self.succeeded
            + self.retried
            + self.returned
            + self.snoozed
            + self.dead_lettered
            + self.cancelled
        )


def finish_params(outcomes: list[Outcome], done_channel: str) -> dict[str, object]:
    """Parameters of the finishing statements (complete, cancel) for ``outcomes``."""
    return {
        "ids": [o.job_id for o in outcomes],
        "leases": [o.lease for o in outcomes],
        "keeps_ms": [o.keep_ms for o in outcomes],
        "results": [o.result for o in outcomes],
        "errors": [o.error for o in outcomes],
        "done_channel": done_channel,
    }


@dataclass
class Completer:
    """Batches outcomes and writes them; ``flush()`` also runs on demand.

    Args:
        db: the worker's database (anything that runs the statements).
        result: counters updated with what the database accepted.
        on_written: called with the outcomes that were written (telemetry).
        done_channel: where finished jobs are announced (``wait_for_job`` listens);
            default: the channel of ``db``'s schema.
    """

    db: StatementRunner
    result: RunResult = field(default_factory=RunResult)
    on_written: Callable[[list[Outcome]], None] | None = None
    done_channel: str = ""
    _pending: list[Outcome] = field(default_factory=list)
    _unwritten: set[int] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if not self.done_channel:
            self.done_channel = done_channel_for(self.db.schema)

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome for the next flush.

        An outcome already settled in the handler's transaction (``committed`` set,
        see :class:`Outcome`) is only accounted for: counts and telemetry, no write.
        """
        if outcome.committed is not None:
            accepted = {outcome.job_id} if outcome.committed else set()
            self.record_written([outcome], accepted)
            return
        self._pending.append(outcome)
        self._unwritten.add(outcome.job_id)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Outcomes waiting to be written."""
        return len(self._pending)

    def unwritten_ids(self) -> set[int]:
        """Ids of jobs whose outcome is queued or being written (still claimed in the DB)."""
        return set(self._unwritten)

    def take_successes(self) -> list[Outcome]:
        """Remove and return the queued successes, for a fetch to write with its claim.

        The caller must hand them back with :meth:`record_written` (applied) or
        :meth:`restore` (not applied).
        """
        if not self._pending:
            return []
        taken = [o for o in self._pending if o.kind is OutcomeKind.SUCCEEDED]
        if taken:
            self._pending = [o for o in self._pending if o.kind is not OutcomeKind.SUCCEEDED]
        return taken

    def restore(self, outcomes: list[Outcome]) -> None:
        """Queue again outcomes taken by :meth:`take_successes` whose write failed."""
        self._pending[:0] = outcomes
        if outcomes:
            self._wake.set()

    def record_written(self, outcomes: list[Outcome], accepted_ids: set[int]) -> None:
        """Account for outcomes written by someone else (a fetch): counts, telemetry."""
        written = self._accepted(outcomes, accepted_ids)
        self._unwritten.difference_update(o.job_id for o in outcomes)
        if self.on_written is not None and written:
            self.on_written(written)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush whenever outcomes arrive, until ``stop`` is set and all is written."""
        while True:
            if not self._pending:
                if stop.is_set():
                    return
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                # Let a fetch that is about to claim take the successes along.
                await asyncio.sleep(0)
                continue
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("writing job outcomes failed; keeping them to retry")
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Write every queued outcome now.

        Raises:
            asyncpg.PostgresError, OSError: the database refused the write (the outcomes
                stay queued).
        """
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self._write(batch)
            except BaseException:
                self._pending[:0] = batch
                raise
            self._unwritten.difference_update(o.job_id for o in batch)

    async def _write(self, batch: list[Outcome]) -> None:
        done = [o for o in batch if o.kind is OutcomeKind.SUCCEEDED]
        again = [o for o in batch if o.kind in (OutcomeKind.RETRIED, OutcomeKind.SNOOZED)]
        dead = [o for o in batch if o.kind is OutcomeKind.DEAD]
        cancelled = [o for o in batch if o.kind is OutcomeKind.CANCELLED]
        written: list[Outcome] = []
        if done:
            rows = await self.db.execute(job_complete_many, finish_params(done, self.done_channel))
            written += self._accepted(done, {r[0] for r in rows})
        if cancelled:
            rows = await self.db.execute(
                job_cancel_many, finish_params(cancelled, self.done_channel)
            )
            written += self._accepted(cancelled, {r[0] for r in rows})
        if again:
            rows = await self.db.execute(
                job_retry_many,
                {
                    "ids": [o.job_id for o in again],
                    "leases": [o.lease for o in again],
                    "delays_ms": [o.delay_ms for o in again],
                    "errors": [o.error for o in again],
                    "refunds": [o.refund for o in again],
                    "keeps_ms": [o.keep_ms for o in again],
                },
            )
            # A job whose cancellation was asked for came back cancelled, not retried.
            stopped = {r[0] for r in rows if r[3] == "cancelled"}
            for outcome in again:
                if outcome.job_id in stopped:
                    outcome.kind = OutcomeKind.CANCELLED
            written += self._accepted(again, {r[0] for r in rows})
        if dead:
            rows = await self.db.execute(
                job_dead_letter_many,
                {
                    "ids": [o.job_id for o in dead],
                    "leases": [o.lease for o in dead],
                    "reasons": [o.reason for o in dead],
                    "errors": [o.error for o in dead],
                },
            )
            written += self._accepted(dead, {r[0] for r in rows})
        if self.on_written is not None and written:
            self.on_written(written)

    def _accepted(self, outcomes: list[Outcome], ids: set[int]) -> list[Outcome]:
        accepted = []
        for outcome in outcomes:
            if outcome.job_id in ids:
                accepted.append(outcome)
                if outcome.kind is OutcomeKind.SUCCEEDED:
                    self.result.succeeded += 1
                elif outcome.kind is OutcomeKind.RETRIED and outcome.shutdown:
                    self.result.returned += 1
                elif outcome.kind is OutcomeKind.RETRIED:
                    self.result.retried += 1
                elif outcome.kind is OutcomeKind.SNOOZED:
                    self.result.snoozed += 1
                elif outcome.kind is OutcomeKind.CANCELLED:
                    self.result.cancelled += 1
                else:
                    self.result.dead_lettered += 1
            else:
                self.result.refused += 1
                logger.warning(
                    "outcome refused: job %s lost its claim (lease %s) before the write",
                    outcome.job_id,
                    outcome.lease,
                    extra={
                        "job_id": outcome.job_id,
                        "task": outcome.task,
                        "queue": outcome.queue,
                        "attempt": outcome.attempt,
                        "outcome": outcome.kind.value,
                    },
                )
        return accepted
