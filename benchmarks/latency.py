"""Pickup latency (W4, W7): from just before the enqueue call to the handler's first line.

One worker runs idle (warmed up by one job per queue), the harness enqueues latency
jobs on a fixed timetable (offsets from the start, so slow enqueues do not shift the
rest), and every handler appends ``label t0 t_start`` to a shared file
(:mod:`benchmarks.probe`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.adapters import Adapter
from benchmarks.measurement import ProcessMeter
from benchmarks.payloads import latency_payload
from benchmarks.processes import WorkerError, WorkerGroup

__all__ = ["Enqueue", "Pickup", "PickupRun", "run_pickups"]

Enqueue = Callable[..., Awaitable[None]]
"""``enqueue(task, payload, *, queue, priority)``: an adapter's way to enqueue one job."""

WARMUP = "warmup"
MB = 1024 * 1024


@dataclass(frozen=True)
class Pickup:
    """One latency job of a timetable.

    Attributes:
        offset_s: when to enqueue it, in seconds after the timetable starts.
        label: the group it is reported in.
        queue: its queue.
        priority: its priority (the library's own numbers).
    """

    offset_s: float
    label: str
    queue: str = "bench"
    priority: int = 0


@dataclass(frozen=True)
class PickupRun:
    """Latencies in seconds per label, with the worker's RSS."""

    latencies: Mapping[str, list[float]]
    idle_rss_mb: float
    peak_rss_mb: float
    event_loop: str
    enqueue_s: list[float]


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


async def _wait_lines(
    path: Path, want: int, group: WorkerGroup, timeout: float, what: str
) -> list[tuple[str, float, float]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _read(path)
        if len(rows) >= want:
            return rows
        group.check_alive()
        if time.monotonic() > deadline:
            raise WorkerError(
                f"{what}: {len(rows)} of {want} jobs ran within {timeout:.0f} s\n{group.log_tail()}"
            )
        await asyncio.sleep(0.01)


async def run_pickups(
    adapter: Adapter,
    *,
    queues: Mapping[str, int],
    timetable: Sequence[Pickup],
    log_dir: Path,
    tag: str,
    before: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
    timeout: float = 120.0,
    enqueue: Enqueue | None = None,
) -> PickupRun:
    """Run ``timetable`` against one idle worker and return the latencies per label.

    Args:
        adapter: the library under test (tables empty).
        queues: the worker's queues and concurrency.
        timetable: the latency jobs to enqueue.
        log_dir: where the worker's output and the latency file go.
        tag: name for those files.
        before: awaited after the warm-up, before the timetable (W7 loads a backlog).
        after: awaited right after the last enqueue of the timetable.
        timeout: seconds to wait for all latency jobs to run.
        enqueue: how the timetable's jobs are enqueued (default ``adapter.enqueue_one``;
            W4client passes ``adapter.produce_one``).

    Raises:
        WorkerError: the worker exited, or did not run every job in time.
    """
    latency_file = log_dir / f"{tag}-latency.txt"
    latency_file.unlink(missing_ok=True)
    spec = adapter.worker(queues, latency_file)
    enqueue_s: list[float] = []
    with WorkerGroup(spec, 1, log_dir, tag) as group:
        meter = ProcessMeter(group.pids[0])
        for queue in queues:
            await adapter.enqueue_one("latency", latency_payload(time.time(), WARMUP), queue=queue)
        await _wait_lines(latency_file, len(queues), group, 60.0, f"{tag} warm-up")
        idle_rss = meter.sample_rss()
        if before is not None:
            await before()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for pickup in timetable:
            delay = start + pickup.offset_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.time()
            await (enqueue or adapter.enqueue_one)(
                "latency",
                latency_payload(t0, pickup.label),
                queue=pickup.queue,
                priority=pickup.priority,
            )
            enqueue_s.append(time.time() - t0)
            meter.sample_rss()
        if after is not None:
            await after()
        rows = await _wait_lines(latency_file, len(queues) + len(timetable), group, timeout, tag)
        peak = meter.peak_rss()
    latencies: dict[str, list[float]] = defaultdict(list)
    for label, t0, started in rows:
        if label != WARMUP:
            latencies[label].append(started - t0)
    return PickupRun(
        latencies=dict(latencies),
        idle_rss_mb=idle_rss / MB,
        peak_rss_mb=peak / MB,
        event_loop=spec.event_loop,
        enqueue_s=enqueue_s,
    )
