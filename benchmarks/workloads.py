"""W1-W4 for every library, and the pgbench baseline next to W1.

Each workload starts from empty tables (the runner calls ``reset`` first) and returns a
JSON-ready dict of its measures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.adapters import Adapter, Payload
from benchmarks.database import Server
from benchmarks.drain import measure_drain
from benchmarks.latency import Pickup, run_pickups
from benchmarks.measurement import (
    PostgresCpu,
    busy_cpu_seconds,
    own_cpu_seconds,
    percentile,
    summarize_ms,
)
from benchmarks.payloads import drain_payload

__all__ = [
    "BATCH",
    "WorkloadContext",
    "load_queue",
    "w1_enqueue_one",
    "w1_enqueue_one_sync",
    "w1_raw_driver",
    "w1_session_floor",
    "w2_enqueue_batches",
    "w3_drain",
    "w4_pickup_latency",
]

BATCH = 1_000
WARMUP_JOBS = 50


@dataclass(frozen=True)
class WorkloadContext:
    """Settings every workload reads.

    Attributes:
        server: the server under test.
        jobs: jobs per workload (W1-W3, W5, W6).
        latency_jobs: W4's jobs (200, 20 ms apart).
        latency_gap_s: W4's spacing.
        backlog: W5's other jobs.
        concurrency: per-worker concurrency of the drains.
        log_dir: where worker logs and latency files go.
        poll_interval: seconds between the drain's counts.
        pgbench_seconds: length of each pgbench run.
        w7_rate: W7's latency jobs per second.
        w7_seconds: W7's stream length.
        w8_rounds: W8's transactions of each kind.
        checkpoint: run a ``CHECKPOINT`` after loading each drain's queue (the default),
            so every drain starts at the same point of the WAL cycle.
    """

    server: Server
    jobs: int
    latency_jobs: int
    latency_gap_s: float
    backlog: int
    concurrency: int
    log_dir: Path
    poll_interval: float
    pgbench_seconds: int
    w7_rate: float
    w7_seconds: float
    w8_rounds: int
    checkpoint: bool = True


@dataclass
class _Meters:
    pg: PostgresCpu | None
    client0: float = 0.0
    pg0: float | None = None
    busy0: float = 0.0

    def start(self) -> None:
        self.client0 = own_cpu_seconds()
        self.pg0 = self.pg.seconds() if self.pg else None
        self.busy0 = busy_cpu_seconds()

    def per_job_us(self, jobs: int) -> dict[str, float | None]:
        client = own_cpu_seconds() - self.client0
        pg = self.pg.seconds() - self.pg0 if self.pg and self.pg0 is not None else None
        busy = busy_cpu_seconds() - self.busy0
        return {
            "client_cpu_us_per_job": client * 1e6 / jobs,
            "pg_cpu_us_per_job": pg * 1e6 / jobs if pg is not None else None,
            "other_cpu_s": max(0.0, busy - client - (pg or 0.0)),
        }


def _method(adapter: Adapter, name: str) -> Any:
    """``adapter.<name>``: a method only backfill_sa's adapter has (W1sync, W1floor, ...).

    Raises:
        TypeError: the adapter has no such method.
    """
    method = getattr(adapter, name, None)
    if method is None:
        raise TypeError(f"{adapter.name}: no {name}")
    return method


async def w1_enqueue_one(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1: enqueue ``jobs`` jobs one per transaction, back to back, on one connection.

    Raises:
        Exception: whatever the library raises.
    """

    async def call(payload: Payload) -> None:
        await adapter.enqueue_one("noop", payload)

    return await _one_per_transaction(adapter, ctx, call)


async def w1_enqueue_one_sync(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1 through a sync ``Session`` (psycopg): backfill_sa only.

    Raises:
        TypeError: the adapter has no sync enqueue.
    """
    enqueue_sync: Callable[[str, Payload], None] = _method(adapter, "enqueue_one_sync")

    async def call(payload: Payload) -> None:
        enqueue_sync("noop", payload)

    return await _one_per_transaction(adapter, ctx, call)


async def w1_session_floor(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1's floor: the same loop, each transaction a session committing a one-row INSERT.

    No queue is involved: this is what SQLAlchemy's ``AsyncSession`` (and ``Session``)
    cost on this machine for the shape W1 must take, the ceiling for any enqueue that
    goes through a session. backfill_sa's adapter only.

    Raises:
        TypeError: the adapter has no plain-insert methods (``insert_one``, ``_sync``).
    """
    return await _async_then_sync(adapter, ctx, "insert_one", "insert_one_sync")


async def w1_autocommit(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1 on sessions whose engine autocommits (async, then sync, a session per job;
    then one sync session held for the whole loop, as a producer script would keep
    it): each ``enqueue`` is its own transaction, one round trip, as pgqueuer's
    enqueue and pgbench's INSERT are. backfill_sa's adapter only.

    Raises:
        TypeError: the adapter lacks ``enqueue_one_autocommit``, its ``_sync`` twin or
            ``enqueue_one_held_session``.
    """
    shapes = await _async_then_sync(
        adapter, ctx, "enqueue_one_autocommit", "enqueue_one_autocommit_sync"
    )
    return {**shapes, "held": await _sync_loop(adapter, ctx, "enqueue_one_held_session")}


async def w1_raw_driver(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1's ceiling from Python: our enqueue statement on a bare connection,
    autocommitted, with no SQLAlchemy and no library code per call; asyncpg, then
    psycopg (sync), then libpq's ``PQexecPrepared`` through psycopg's ``pgconn``.
    backfill_sa's adapter only.

    Raises:
        TypeError: the adapter lacks ``enqueue_one_raw``, ``enqueue_one_raw_sync`` or
            ``enqueue_one_libpq``.
    """
    drivers = await _async_then_sync(adapter, ctx, "enqueue_one_raw", "enqueue_one_raw_sync")
    return {**drivers, "libpq": await _sync_loop(adapter, ctx, "enqueue_one_libpq")}


async def _async_then_sync(
    adapter: Adapter, ctx: WorkloadContext, async_method: str, sync_method: str
) -> dict[str, object]:
    """The one-per-transaction loop with ``adapter.<async_method>``, then with
    ``adapter.<sync_method>``.

    Raises:
        TypeError: the adapter lacks one of the two methods.
    """
    call_async: Callable[[Payload], Awaitable[None]] = _method(adapter, async_method)
    return {
        "async": await _one_per_transaction(adapter, ctx, call_async),
        "sync": await _sync_loop(adapter, ctx, sync_method),
    }


async def _sync_loop(adapter: Adapter, ctx: WorkloadContext, method: str) -> dict[str, object]:
    """The one-per-transaction loop with the blocking ``adapter.<method>``.

    Raises:
        TypeError: the adapter has no such method.
    """
    call_sync: Callable[[Payload], None] = _method(adapter, method)

    async def call(payload: Payload) -> None:
        call_sync(payload)

    return await _one_per_transaction(adapter, ctx, call)


async def _one_per_transaction(
    adapter: Adapter, ctx: WorkloadContext, call: Callable[[Payload], Awaitable[None]]
) -> dict[str, object]:
    payloads = [drain_payload(i) for i in range(ctx.jobs)]
    for payload in payloads[:WARMUP_JOBS]:
        await call(payload)
    calls: list[float] = []
    with ctx.server.cpu_meter(adapter.database) as pg:
        meters = _Meters(pg)
        meters.start()
        begin = time.perf_counter()
        for payload in payloads:
            start = time.perf_counter()
            await call(payload)
            calls.append(time.perf_counter() - start)
        seconds = time.perf_counter() - begin
        cpu = meters.per_job_us(ctx.jobs)
    return _enqueue_result(ctx.jobs, seconds, calls, cpu)


def _enqueue_result(
    jobs: int, seconds: float, calls: Sequence[float], cpu: dict[str, float | None]
) -> dict[str, object]:
    micros = [c * 1e6 for c in calls]
    return {
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "call_p50_us": percentile(micros, 50),
        "call_p99_us": percentile(micros, 99),
        **cpu,
    }


async def w2_enqueue_batches(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W2: enqueue ``jobs`` jobs in transactions of 1,000 (building the payloads untimed).

    Raises:
        Exception: whatever the library raises.
    """

    async def call(batch: Sequence[Payload]) -> None:
        await adapter.enqueue_batch("noop", batch)

    return await _batches(adapter, ctx, call)


async def w2_job_specs(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W2 with a ``JobSpec`` per job through ``enqueue_many_async`` (building the specs
    timed): the path for jobs whose options differ. backfill_sa's adapter only.

    Raises:
        TypeError: the adapter has no ``enqueue_specs``.
    """
    enqueue_specs: Callable[[str, Sequence[Payload]], Awaitable[None]] = _method(
        adapter, "enqueue_specs"
    )

    async def call(batch: Sequence[Payload]) -> None:
        await enqueue_specs("noop", batch)

    return await _batches(adapter, ctx, call)


async def _batches(
    adapter: Adapter,
    ctx: WorkloadContext,
    call: Callable[[Sequence[Payload]], Awaitable[None]],
) -> dict[str, object]:
    payloads = [drain_payload(i) for i in range(ctx.jobs)]
    batches = [payloads[i : i + BATCH] for i in range(0, len(payloads), BATCH)]
    await call(batches[0])
    calls: list[float] = []
    with ctx.server.cpu_meter(adapter.database) as pg:
        meters = _Meters(pg)
        meters.start()
        begin = time.perf_counter()
        for batch in batches:
            start = time.perf_counter()
            await call(batch)
            calls.append(time.perf_counter() - start)
        seconds = time.perf_counter() - begin
        cpu = meters.per_job_us(ctx.jobs)
    return {
        "jobs": ctx.jobs,
        "batch": BATCH,
        "seconds": seconds,
        "jobs_per_s": ctx.jobs / seconds,
        "batch_p50_ms": percentile([c * 1000 for c in calls], 50),
        **cpu,
    }


async def load_queue(
    adapter: Adapter,
    count: int,
    *,
    queue: str = "bench",
    priority: int = 0,
    checkpoint: bool = False,
    task: str = "noop",
) -> float:
    """Enqueue ``count`` no-op jobs (of ``task``) in batches of 1,000, analyse (and with
    ``checkpoint``, checkpoint); return seconds taken.

    Raises:
        Exception: whatever the library raises.
    """
    begin = time.perf_counter()
    for start in range(0, count, BATCH):
        batch: list[Payload] = [drain_payload(n) for n in range(start, min(count, start + BATCH))]
        await adapter.enqueue_batch(task, batch, queue=queue, priority=priority)
    adapter.analyze(checkpoint=checkpoint)
    return time.perf_counter() - begin


async def w3_drain(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W3: load ``jobs`` jobs, then drain them with one worker at the given concurrency.

    Raises:
        WorkerError: the worker exited or stalled.
    """
    load_s = await load_queue(adapter, ctx.jobs, checkpoint=ctx.checkpoint)
    result = measure_drain(
        adapter,
        queues={"bench": ctx.concurrency},
        workers=1,
        log_dir=ctx.log_dir,
        tag=f"{adapter.name}-w3",
        poll_interval=ctx.poll_interval,
    )
    return {**result.as_dict(), "load_s": load_s}


async def w4_pickup_latency(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W4: one idle worker; ``latency_jobs`` jobs ``latency_gap_s`` apart; p50/p99.

    Raises:
        WorkerError: the worker exited or did not run every job.
    """
    timetable = [Pickup(i * ctx.latency_gap_s, "w4") for i in range(ctx.latency_jobs)]
    run = await run_pickups(
        adapter,
        queues={"bench": ctx.concurrency},
        timetable=timetable,
        log_dir=ctx.log_dir,
        tag=f"{adapter.name}-w4",
    )
    return {
        **summarize_ms(run.latencies["w4"]),
        "enqueue_p50_ms": percentile([s * 1000 for s in run.enqueue_s], 50),
        "worker_rss_after_warmup_mb": run.idle_rss_mb,
        "worker_peak_rss_mb": run.peak_rss_mb,
        "event_loop": run.event_loop,
    }
