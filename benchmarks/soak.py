"""Soak: a steady enqueue rate for minutes, with workers keeping up; is anything growing?

``python -m benchmarks soak --minutes 10`` (``nox -s soak`` runs one minute). The
harness enqueues ``--rate`` latency jobs a second (a batch every 100 ms, each in its
own committed transaction, on a fixed timetable so that a slow batch does not lower
the rate) into database ``bench_soak`` while ``--workers`` worker processes
(``python -m backfill_sa worker``) run them. It reports:

* throughput over time: jobs started per interval, from the handlers' own clock;
* each worker's RSS after warm-up and at the end (goal: within 10%);
* size of ``jobs`` and ``dead_letter_jobs``, heap and indexes, at start and end, and of
  ``jobs`` every interval (goal: bounded once autovacuum runs: a table that only sees
  inserts and deletes of kept-up work reuses its space; the report says when the
  server's ``autovacuum`` is off, since the table can then only grow);
* pickup latency (enqueue call to handler start) p50 and p99, overall and per interval.

Not a test: it asserts nothing, and on a shared machine its figures are noisy.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

from benchmarks.adapters.ours import SCHEMA, OursAdapter
from benchmarks.database import Server
from benchmarks.measurement import percentile
from benchmarks.payloads import latency_payload
from benchmarks.processes import WorkerError, WorkerGroup

__all__ = ["SoakReport", "SoakSettings", "render_soak", "run_soak", "write_soak"]

MB = 1024 * 1024
TICK_S = 0.1
WARMUP = "warmup"


@dataclass(frozen=True)
class SoakSettings:
    """What one soak run does.

    Attributes:
        minutes: how long jobs are enqueued.
        rate: jobs enqueued per second.
        workers: worker processes.
        concurrency: jobs each worker runs at once.
        interval_s: width of a throughput interval, in seconds.
        log_dir: where worker logs and the latency file go.
    """

    minutes: float
    rate: int
    workers: int
    concurrency: int
    interval_s: float
    log_dir: Path


@dataclass
class SoakReport:
    """The figures of one soak run (see the module docstring)."""

    settings: dict[str, Any]
    enqueued: int = 0
    ran: int = 0
    left_unfinished: int = 0
    intervals: list[dict[str, float]] = field(default_factory=list)
    rss_mb_start: list[float] = field(default_factory=list)
    rss_mb_end: list[float] = field(default_factory=list)
    sizes_start: dict[str, int] = field(default_factory=dict)
    sizes_end: dict[str, int] = field(default_factory=dict)
    jobs_kb_over_time: list[tuple[float, int]] = field(default_factory=list)
    vacuum_end: dict[str, Any] = field(default_factory=dict)
    pickup_p50_ms: float = 0.0
    pickup_p99_ms: float = 0.0
    pickup_max_ms: float = 0.0


class _SoakAdapter(OursAdapter):
    """backfill_sa in its own database ``bench_soak``, apart from the workload runs."""

    database: ClassVar[str] = "bench_soak"


def _sizes(adapter: OursAdapter) -> dict[str, int]:
    """Heap and index bytes of jobs and dead_letter_jobs."""
    found: dict[str, int] = {}
    with adapter.server.connect(adapter.database) as conn:
        for table in ("jobs", "dead_letter_jobs"):
            row = conn.execute(
                "SELECT pg_table_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass)",
                {"t": f"{SCHEMA}.{table}"},
            ).fetchone()
            assert row is not None
            found[f"{table}.table"] = int(str(row[0]))
            found[f"{table}.indexes"] = int(str(row[1]))
    return found


def _vacuum_facts(adapter: OursAdapter) -> dict[str, Any]:
    """Dead tuples of ``jobs`` and how often autovacuum has run on it."""
    with adapter.server.connect(adapter.database) as conn:
        row = conn.execute(
            "SELECT current_setting('autovacuum'), n_live_tup, n_dead_tup, autovacuum_count,"
            " last_autovacuum::text"
            " FROM pg_stat_user_tables WHERE schemaname = %(s)s AND relname = 'jobs'",
            {"s": SCHEMA},
        ).fetchone()
    if row is None:
        return {}
    names = ("autovacuum", "live", "dead", "autovacuum_count", "last_autovacuum")
    return dict(zip(names, row, strict=True))


def _rss_mb(pid: int) -> float:
    """The resident set size of ``pid`` now (not its peak), in MB."""
    return float(psutil.Process(pid).memory_info().rss) / MB


def _unfinished(adapter: OursAdapter) -> int:
    with adapter.server.connect(adapter.database) as conn:
        row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.jobs").fetchone()
        assert row is not None
        return int(str(row[0]))


def _read(path: Path) -> list[tuple[str, float, float]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), float(parts[2])))
    return rows


async def _wait_for_lines(path: Path, want: int, group: WorkerGroup, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(_read(path)) < want:
        group.check_alive()
        if time.monotonic() > deadline:
            raise WorkerError(f"soak: the workers ran too few jobs\n{group.log_tail()}")
        await asyncio.sleep(0.05)


async def run_soak(server: Server, settings: SoakSettings) -> SoakReport:
    """Run one soak and return its report.

    Raises:
        WorkerError: a worker exited, or the workers fell behind by more than a minute.
        psycopg.Error: the server cannot be reached.
    """
    report = SoakReport(settings={**asdict(settings), "log_dir": str(settings.log_dir)})
    adapter = _SoakAdapter(server)
    await adapter.setup()
    latency_file = settings.log_dir / "soak-latency.txt"
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    latency_file.unlink(missing_ok=True)
    spec = adapter.worker({"bench": settings.concurrency}, latency_file)
    try:
        with WorkerGroup(spec, settings.workers, settings.log_dir, "soak") as group:
            warm = [latency_payload(time.time(), WARMUP) for _ in range(settings.workers * 20)]
            await adapter.enqueue_batch("latency", warm)
            await _wait_for_lines(latency_file, len(warm), group, 60.0)
            report.rss_mb_start = [_rss_mb(pid) for pid in group.pids]
            report.sizes_start = _sizes(adapter)
            per_tick = max(1, round(settings.rate * TICK_S))
            ticks = round(settings.minutes * 60 / TICK_S)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for tick in range(ticks):
                delay = start + tick * TICK_S - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                await adapter.enqueue_batch(
                    "latency", [latency_payload(now, "soak") for _ in range(per_tick)]
                )
                report.enqueued += per_tick
                if tick % round(1 / TICK_S) == 0:
                    group.check_alive()
                if tick % round(settings.interval_s / TICK_S) == 0:
                    table_kb = _sizes(adapter)["jobs.table"] // 1024
                    report.jobs_kb_over_time.append((round(tick * TICK_S, 1), table_kb))
            await _wait_for_lines(latency_file, len(warm) + report.enqueued, group, 60.0)
            report.rss_mb_end = [_rss_mb(pid) for pid in group.pids]
            report.left_unfinished = _unfinished(adapter)
            report.sizes_end = _sizes(adapter)
            report.vacuum_end = _vacuum_facts(adapter)
    finally:
        await adapter.close()
        adapter.teardown()
    rows = [(t0, started) for label, t0, started in _read(latency_file) if label == "soak"]
    report.ran = len(rows)
    pickups = [started - t0 for t0, started in rows]
    report.pickup_p50_ms = percentile(pickups, 50) * 1000
    report.pickup_p99_ms = percentile(pickups, 99) * 1000
    report.pickup_max_ms = max(pickups) * 1000
    first = min(t0 for t0, _ in rows)
    buckets: dict[int, list[float]] = {}
    for t0, started in rows:
        buckets.setdefault(int((started - first) // settings.interval_s), []).append(started - t0)
    for index in sorted(buckets):
        values = buckets[index]
        report.intervals.append(
            {
                "from_s": index * settings.interval_s,
                "jobs_per_s": len(values) / settings.interval_s,
                "pickup_p50_ms": percentile(values, 50) * 1000,
                "pickup_p99_ms": percentile(values, 99) * 1000,
            }
        )
    return report


def render_soak(report: SoakReport) -> str:
    """The report as text: settings, intervals, RSS, sizes, pickup latency."""
    s = report.settings
    lines = [
        f"soak: {s['minutes']} min at {s['rate']} jobs/s, {s['workers']} workers"
        f" x concurrency {s['concurrency']}",
        f"enqueued {report.enqueued}, ran {report.ran}, left unfinished {report.left_unfinished}",
        "",
        f"{'from s':>8} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    lines += [
        f"{i['from_s']:>8.0f} {i['jobs_per_s']:>8.1f} {i['pickup_p50_ms']:>8.1f}"
        f" {i['pickup_p99_ms']:>8.1f}"
        for i in report.intervals
    ]
    lines.append("")
    for n, (a, b) in enumerate(zip(report.rss_mb_start, report.rss_mb_end, strict=True)):
        lines.append(f"worker {n} RSS: {a:.1f} MB -> {b:.1f} MB ({(b - a) / a * 100:+.1f}%)")
    for key, before in report.sizes_start.items():
        after = report.sizes_end.get(key, 0)
        lines.append(f"{key}: {before / 1024:.0f} kB -> {after / 1024:.0f} kB")
    lines.append(
        "jobs table over time (s: kB): "
        + ", ".join(f"{at:.0f}: {kb}" for at, kb in report.jobs_kb_over_time)
    )
    lines.append(f"jobs at the end (pg_stat_user_tables): {report.vacuum_end}")
    if report.vacuum_end.get("autovacuum") == "off":
        lines.append(
            "note: autovacuum is off on this server, so dead row versions are never"
            " cleaned up and the jobs table can only grow; sizes say nothing about bloat"
        )
    lines.append(
        f"pickup latency: p50 {report.pickup_p50_ms:.1f} ms, p99 {report.pickup_p99_ms:.1f} ms,"
        f" max {report.pickup_max_ms:.1f} ms"
    )
    return "\n".join(lines) + "\n"


def write_soak(report: SoakReport, path: Path) -> None:
    """Write the report as JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")
