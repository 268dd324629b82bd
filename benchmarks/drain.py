"""Drain measurement (W3, W5, W6): start workers on a loaded queue, time until none unfinished.

The clock starts at the first poll that sees the count drop (so interpreter start-up
and imports are not counted) and stops at the first poll that sees none left; the jobs
counted are those still unfinished at the start, so the rate is exact up to one poll
interval at the end. Worker CPU and PostgreSQL CPU are read at the same two instants.
Once the drain runs, each poll only probes whether any job is left (an exact count of
20,000 index entries 20 times a second would cost the server a noticeable share of a
core on a small machine), and polls never use parallel workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.adapters import Adapter, Poller
from benchmarks.measurement import PostgresCpu, ProcessMeter, busy_cpu_seconds, own_cpu_seconds
from benchmarks.processes import WorkerError, WorkerGroup

__all__ = ["DrainResult", "measure_drain"]

MB = 1024 * 1024


@dataclass(frozen=True)
class DrainResult:
    """What one drain measured.

    Attributes:
        jobs: jobs finished between the two instants.
        seconds: time between them.
        jobs_per_s: ``jobs / seconds``.
        worker_cpu_s: user + system CPU of all workers in between.
        pg_cpu_s: PostgreSQL CPU in between (None when not measurable).
        cpu_ms_per_job: ``(worker + PostgreSQL CPU) / jobs`` in ms (worker only if no PG).
        worker_peak_rss_mb: the largest worker's peak RSS.
        startup_s: from spawning the workers to the first finished job seen.
        workers: worker processes.
        event_loop: the workers' event loop.
        includes_startup: True when the drain ended before any progress was seen, so
            the interval is measured from the spawn instead.
        other_cpu_s: CPU the rest of the machine used meanwhile (other processes, the
            server's background processes, the harness's polls): noise when large.
        machine_cpu_s: all CPU used on the machine meanwhile.
        transactions_per_job: transactions the workers committed or rolled back in the
            database from their start to their exit (``pg_stat_database``, the harness's
            polls subtracted), per job: the round trips that cost most on this machine.
    """

    jobs: int
    seconds: float
    jobs_per_s: float
    worker_cpu_s: float
    pg_cpu_s: float | None
    cpu_ms_per_job: float
    worker_peak_rss_mb: float
    startup_s: float
    workers: int
    event_loop: str
    includes_startup: bool
    other_cpu_s: float
    machine_cpu_s: float
    transactions_per_job: float

    def as_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class _Counting:
    """A poller that counts the queries it sends (to subtract them from the database's
    transaction counter)."""

    def __init__(self, inner: Poller) -> None:
        self.inner = inner
        self.queries = 0

    @property
    def backend_pid(self) -> int:
        return self.inner.backend_pid

    def unfinished(self) -> int:
        self.queries += 1
        return self.inner.unfinished()

    def any_unfinished(self) -> bool:
        self.queries += 1
        return self.inner.any_unfinished()

    def close(self) -> None:
        self.inner.close()


def _transactions(adapter: Adapter) -> int:
    """Transactions committed or rolled back in the adapter's database so far."""
    with adapter.server.connect(adapter.database) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    return int(str(row[0])) if row else 0


def _wait_for(
    poller: Poller,
    group: WorkerGroup,
    meters: list[ProcessMeter],
    *,
    below: int | None,
    poll_interval: float,
    stall_timeout: float,
) -> tuple[int, float]:
    """Poll until fewer than ``below`` jobs are unfinished (exact counts), or, with
    ``below=None``, until none is (a cheap existence probe per poll, and an exact count
    every couple of seconds to notice a stall). Return the last count and the time."""
    last = poller.unfinished()
    last_change = next_count = time.perf_counter()
    while True:
        if below is None:
            if not poller.any_unfinished():
                return 0, time.perf_counter()
            count = last
            now = time.perf_counter()
            if now >= next_count:
                count, next_count = poller.unfinished(), now + 2.0
        else:
            count = poller.unfinished()
            now = time.perf_counter()
            if count < below:
                return count, now
        for meter in meters:
            meter.sample_rss()
        if count != last:
            last, last_change = count, now
        elif now - last_change > stall_timeout:
            raise WorkerError(
                f"no progress for {stall_timeout:.0f} s with {count} jobs unfinished\n"
                f"{group.log_tail()}"
            )
        group.check_alive()
        time.sleep(poll_interval)


def measure_drain(
    adapter: Adapter,
    *,
    queues: Mapping[str, int],
    workers: int,
    log_dir: Path,
    tag: str,
    poller: Poller | None = None,
    poll_interval: float = 0.05,
    stall_timeout: float = 60.0,
    on_start: Callable[[list[int]], None] | None = None,
) -> DrainResult:
    """Drain the jobs already queued with ``workers`` processes serving ``queues``.

    Args:
        adapter: the library under test, with its jobs loaded.
        queues: queue name -> concurrency per worker.
        workers: worker processes to start.
        log_dir: where the workers' output goes.
        tag: name for the log files.
        poller: what counts unfinished jobs (default: the adapter's).
        poll_interval: seconds between counts.
        stall_timeout: give up after this long without the count changing.
        on_start: called with the worker pids once progress is first seen (profilers).

    Raises:
        WorkerError: a worker exited or made no progress.
        ValueError: nothing was queued.
    """
    own_poller = poller is None
    counter = _Counting(adapter.open_poller() if poller is None else poller)
    try:
        initial = counter.unfinished()
        if initial == 0:
            raise ValueError("drain: no unfinished jobs to drain")
        pg = PostgresCpu.attach(
            counter.backend_pid, adapter.database, exclude=[counter.backend_pid]
        )
        spec = adapter.worker(queues, log_dir / f"{tag}-latency.txt")
        xact0 = _transactions(adapter)
        polls0 = counter.queries
        with WorkerGroup(spec, workers, log_dir, tag) as group:
            meters = [ProcessMeter(pid) for pid in group.pids]
            spawned = time.perf_counter()
            pg_spawn = pg.seconds() if pg else None
            remaining, started = _wait_for(
                counter,
                group,
                meters,
                below=initial,
                poll_interval=poll_interval,
                stall_timeout=stall_timeout,
            )
            includes_startup = remaining == 0
            cpu0 = 0.0 if includes_startup else sum(m.cpu_seconds() for m in meters)
            pg0 = pg_spawn if includes_startup else (pg.seconds() if pg else None)
            busy0, harness0 = busy_cpu_seconds(), own_cpu_seconds()
            if on_start is not None:
                on_start(group.pids)
            jobs = initial if includes_startup else remaining
            begin = spawned if includes_startup else started
            _, ended = _wait_for(
                counter,
                group,
                meters,
                below=None,
                poll_interval=poll_interval,
                stall_timeout=stall_timeout,
            )
            cpu1 = sum(m.cpu_seconds() for m in meters)
            pg1 = pg.seconds() if pg else None
            busy = busy_cpu_seconds() - busy0
            harness = own_cpu_seconds() - harness0
            peak = max(m.peak_rss() for m in meters)
        # The workers have exited, so their statistics are flushed.
        transactions = _transactions(adapter) - xact0 - (counter.queries - polls0) - 1
    finally:
        if own_poller:
            counter.inner.close()
    seconds = ended - begin
    worker_cpu = cpu1 - cpu0
    pg_cpu = pg1 - pg0 if pg1 is not None and pg0 is not None else None
    other = busy - worker_cpu - (pg_cpu or 0.0) - harness
    return DrainResult(
        jobs=jobs,
        seconds=seconds,
        jobs_per_s=jobs / seconds if seconds > 0 else float("inf"),
        worker_cpu_s=worker_cpu,
        pg_cpu_s=pg_cpu,
        cpu_ms_per_job=(worker_cpu + (pg_cpu or 0.0)) * 1000 / jobs,
        worker_peak_rss_mb=peak / MB,
        startup_s=started - spawned,
        workers=workers,
        event_loop=spec.event_loop,
        includes_startup=includes_startup,
        other_cpu_s=max(0.0, other),
        transactions_per_job=transactions / initial,
        machine_cpu_s=busy,
    )
