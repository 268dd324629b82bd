"""The demo's results: what it measured and verified, its progress bar, and its report."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = ["DemoSummary", "percentile", "progress_bar", "report"]


@dataclasses.dataclass(frozen=True)
class DemoSummary:
    """What the demo measured and verified.

    Attributes:
        jobs: jobs committed (orders' jobs, latency probes and the failing job).
        succeeded: jobs whose handler succeeded, the requeued one included.
        retried: failed attempts the worker rescheduled.
        dead_lettered: jobs the worker moved to the dead-letter queue.
        requeued: dead-letter entries moved back to the jobs table.
        left_in_jobs: jobs still waiting or running at the end (expected 0).
        left_in_dlq: entries still in the dead-letter queue at the end (expected 0).
        rolled_back_visible: order rows plus jobs of the rolled-back transaction
            found afterwards (expected 0).
        bulk_jobs: the orders' jobs, committed while the worker ran.
        bulk_seconds: from the first order commit to the last of those jobs done.
        jobs_per_second: ``bulk_jobs / bulk_seconds``.
        idle_p50_ms: median pickup latency of jobs committed one at a time to an
            idle worker (commit to handler start), milliseconds.
        idle_p99_ms: 99th percentile of the same.
        load_p50_ms: median pickup latency of the orders' jobs (includes queueing
            behind the backlog), milliseconds.
        load_p99_ms: 99th percentile of the same.
    """

    jobs: int
    succeeded: int
    retried: int
    dead_lettered: int
    requeued: int
    left_in_jobs: int
    left_in_dlq: int
    rolled_back_visible: int
    bulk_jobs: int
    bulk_seconds: float
    idle_p50_ms: float
    idle_p99_ms: float
    load_p50_ms: float
    load_p99_ms: float

    @property
    def jobs_per_second(self) -> float:
        """Throughput of the orders' jobs: ``bulk_jobs / bulk_seconds``."""
        return self.bulk_jobs / max(self.bulk_seconds, 1e-9)

    @property
    def ok(self) -> bool:
        """Whether every job ended where the demo expects it."""
        return (
            self.succeeded == self.jobs
            and self.dead_lettered == 1
            and self.requeued == 1
            and self.left_in_jobs == 0
            and self.left_in_dlq == 0
            and self.rolled_back_visible == 0
        )


async def progress_bar(
    done: Callable[[], int], total: int, out: TextIO, stop: asyncio.Event
) -> None:
    """Draw ``[####....] done/total jobs  rate/s`` on ``out`` until ``stop`` is set.

    Redrawn in place with ``\\r`` every 100 ms on a terminal; elsewhere (CI, a pipe)
    only the final state is written.
    """
    started = time.monotonic()
    live = out.isatty()

    def draw(end: str) -> None:
        count = min(done(), total)
        filled = int(30 * count / total)
        rate = count / max(time.monotonic() - started, 1e-9)
        out.write(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {count}/{total} jobs  {rate:,.0f}/s{end}"
        )
        out.flush()

    while not stop.is_set():
        if live:
            draw("")
        await asyncio.sleep(0.1)
    draw("\n")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank ``fraction`` percentile of ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(
    summary: DemoSummary,
    *,
    attempts: Sequence[tuple[int, float, str]],
    max_attempts: int,
    orders: int,
    transactions: int,
    probes: int,
    out: TextIO,
) -> None:
    """Print steps 3 to 6 of the story and the summary to ``out``.

    Args:
        summary: what was measured and verified.
        attempts: the failing job's attempts: (number, monotonic time, outcome).
        max_attempts: its retry policy's attempts.
        orders: orders committed.
        transactions: transactions they were committed in.
        probes: latency probes committed one at a time.
        out: where to print.
    """

    def say(line: str) -> None:
        print(line, file=out)

    say(
        f"  3. committed {summary.bulk_jobs + 1} jobs with {orders} orders in {transactions}"
        " transactions, each job with its order (queues fast and bulk, priorities -10 to 5)"
    )
    seen = "neither is there" if summary.rolled_back_visible == 0 else "BUT SOMETHING IS VISIBLE"
    say(f"  4. rolled back a transaction holding an order and its job: {seen}")
    say("  5. notify_warehouse keeps failing (3 attempts, backoff 100 ms x2):")
    previous: float | None = None
    for attempt, moment, outcome in attempts:
        gap = "" if previous is None else f" ({(moment - previous) * 1000:.0f} ms later)"
        say(f"       attempt {attempt}{gap}: {outcome}")
        previous = moment
        if outcome == "failed" and attempt == max_attempts:
            say("       -> dead-lettered (max_attempts_exceeded)")
            say("       -> warehouse fixed; requeued from the DLQ:")
            previous = None
    say(f"  6. committed {probes} ping jobs one at a time to time the pickup of an idle worker")
    say("Summary")
    say(
        f"  throughput      {summary.jobs_per_second:,.0f} jobs/s ({summary.bulk_jobs} jobs in"
        f" {summary.bulk_seconds:.2f} s, first order commit to last job done)"
    )
    say(
        f"  pickup latency  idle worker: p50 {summary.idle_p50_ms:.1f} ms,"
        f" p99 {summary.idle_p99_ms:.1f} ms; while the orders poured in:"
        f" p50 {summary.load_p50_ms:.0f} ms, p99 {summary.load_p99_ms:.0f} ms"
        " (commit to handler start)"
    )
    say(
        f"  ended           succeeded {summary.succeeded} of {summary.jobs};"
        f" dead-lettered {summary.dead_lettered}, requeued {summary.requeued} and succeeded;"
        f" failed attempts retried {summary.retried};"
        f" left in jobs {summary.left_in_jobs}, left in DLQ {summary.left_in_dlq}"
    )
    say("  OK" if summary.ok else "  NOT OK: some job did not end where expected")
