"""W5-W8, for backfill_sa: backlog, several workers, mixed priorities, marginal enqueue cost."""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy import insert as sa_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.enqueue import enqueue, enqueue_async
from backfill_sa.priority import BULK, FAST, Priority
from benchmarks.adapters import Adapter
from benchmarks.adapters.ours import OursAdapter
from benchmarks.business import business, orders
from benchmarks.drain import measure_drain
from benchmarks.latency import Pickup, run_pickups
from benchmarks.measurement import percentile, summarize_ms
from benchmarks.payloads import drain_payload
from benchmarks.workloads import WorkloadContext, load_queue

__all__ = ["w5_backlog_drain", "w6_four_workers", "w7_mixed_priorities", "w8_marginal_enqueue"]

W7_MIX: tuple[tuple[str, int], ...] = (
    (FAST, Priority.EMERGENCY),
    (FAST, Priority.FAST_HIGH),
    (FAST, Priority.FAST_DEFAULT),
    (BULK, Priority.EMERGENCY),
    (BULK, Priority.BULK_DEFAULT),
    (BULK, Priority.BULK_LOWEST),
)
"""(queue, priority) of W7's latency jobs, in turn."""


def _ours(adapter: Adapter) -> OursAdapter:
    if not isinstance(adapter, OursAdapter):
        raise TypeError(f"{adapter.name}: W5-W8 run on backfill_sa only")
    return adapter


async def w5_backlog_drain(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W5: the W3 drain with ``backlog`` other jobs in the table (half available at a
    lower priority in the same queue, half scheduled a day ahead).

    Raises:
        WorkerError: the worker exited or stalled.
    """
    ours = _ours(adapter)
    begin = time.perf_counter()
    ours.load_backlog(ctx.backlog, drain_payload(0))
    backlog_s = time.perf_counter() - begin
    load_s = await load_queue(ours, ctx.jobs, checkpoint=ctx.checkpoint)
    try:
        result = measure_drain(
            ours,
            queues={"bench": ctx.concurrency},
            workers=1,
            log_dir=ctx.log_dir,
            tag="ours-w5",
            poll_interval=ctx.poll_interval,
        )
    finally:
        ours.reset()
    return {
        **result.as_dict(),
        "backlog": ctx.backlog,
        "backlog_load_s": backlog_s,
        "load_s": load_s,
    }


async def w3_non_binding_limit(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W3limit: the W3 drain with a global concurrency limit that never binds (1,000).

    The queue is claimed with the flow-controlled claim; its cost against W3 is what
    a limit costs.

    Raises:
        WorkerError: the worker exited or stalled.
    """
    from backfill_sa.flow import set_queue_limits

    ours = _ours(adapter)
    with Session(ours.sync_engine) as session, session.begin():
        set_queue_limits(session, "bench", global_concurrency=1000)
    try:
        load_s = await load_queue(ours, ctx.jobs, checkpoint=ctx.checkpoint)
        result = measure_drain(
            ours,
            queues={"bench": ctx.concurrency},
            workers=1,
            log_dir=ctx.log_dir,
            tag="ours-w3limit",
            poll_interval=ctx.poll_interval,
        )
    finally:
        with Session(ours.sync_engine) as session, session.begin():
            set_queue_limits(session, "bench")
    return {**result.as_dict(), "load_s": load_s}


async def w6_four_workers(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W6: the W3 drain with four worker processes.

    Raises:
        WorkerError: a worker exited or stalled.
    """
    load_s = await load_queue(adapter, ctx.jobs, checkpoint=ctx.checkpoint)
    result = measure_drain(
        adapter,
        queues={"bench": ctx.concurrency},
        workers=4,
        log_dir=ctx.log_dir,
        tag=f"{adapter.name}-w6",
        poll_interval=ctx.poll_interval,
    )
    return {**result.as_dict(), "load_s": load_s}


async def w7_mixed_priorities(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W7: a bulk backlog of ten times ``jobs`` no-op jobs, and a steady stream of latency jobs
    in both queues at six (queue, priority) pairs; pickup latency per pair. The backlog
    left when the stream ends is reported: zero means it did not last the whole stream.

    Raises:
        WorkerError: the worker exited or did not run every job in time.
    """
    ours = _ours(adapter)
    # Big enough to outlast the stream: at 17,000 jobs/s a backlog of twice ``jobs``
    # was gone before the stream ended, which left nothing for EMERGENCY to overtake.
    backlog = 10 * ctx.jobs
    count = int(ctx.w7_rate * ctx.w7_seconds)
    timetable = [
        Pickup(i / ctx.w7_rate, f"{queue}/{int(prio)}", queue, int(prio))
        for i, (queue, prio) in ((i, W7_MIX[i % len(W7_MIX)]) for i in range(count))
    ]
    backlog_left: dict[str, int] = {}

    async def load_backlog() -> None:
        await load_queue(ours, backlog, queue=BULK, priority=Priority.BULK_DEFAULT)

    async def after_stream() -> None:
        poller = ours.open_filtered_poller("noop", BULK, Priority.BULK_DEFAULT)
        try:
            backlog_left["at_stream_end"] = poller.unfinished()
        finally:
            poller.close()

    run = await run_pickups(
        ours,
        queues={FAST: 10, BULK: 5},
        timetable=timetable,
        log_dir=ctx.log_dir,
        tag="ours-w7",
        before=load_backlog,
        after=after_stream,
        timeout=300.0,
    )
    per_label: Mapping[str, object] = {
        label: summarize_ms(run.latencies.get(label, [0.0]))
        for label in dict.fromkeys(p.label for p in timetable)
    }
    return {
        "bulk_backlog": backlog,
        "backlog_left_at_stream_end": backlog_left.get("at_stream_end"),
        "rate_per_s": ctx.w7_rate,
        "stream_s": ctx.w7_seconds,
        "queues": {FAST: 10, BULK: 5},
        "latency": per_label,
    }


async def w8_marginal_enqueue(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W8: the cost of one enqueue call inside an open business transaction.

    Alternates a transaction that inserts one business row with one that also enqueues,
    async (asyncpg) and sync (psycopg); reports both and the time of the call itself.

    Raises:
        Exception: whatever the library raises.
    """
    ours = _ours(adapter)
    async with ours.async_engine.begin() as conn:
        await conn.run_sync(business.create_all)
    payload = drain_payload(0)
    row = {"customer": "c-42", "amount_cents": 1999}
    plain: list[float] = []
    with_job: list[float] = []
    call: list[float] = []
    for i in range(ctx.w8_rounds * 2 + 20):
        enqueue_too = i % 2 == 1
        start = time.perf_counter()
        async with AsyncSession(ours.async_engine) as session:
            await session.execute(sa_insert(orders).values(row))
            if enqueue_too:
                mark = time.perf_counter()
                await enqueue_async(session, "noop", payload, queue="bench")
                called = time.perf_counter() - mark
            await session.commit()
        took = time.perf_counter() - start
        if i >= 20:
            (with_job if enqueue_too else plain).append(took)
            if enqueue_too:
                call.append(called)
    sync_plain: list[float] = []
    sync_with: list[float] = []
    sync_call: list[float] = []
    for i in range(ctx.w8_rounds * 2 + 20):
        enqueue_too = i % 2 == 1
        start = time.perf_counter()
        with Session(ours.sync_engine) as sync_session:
            sync_session.execute(sa_insert(orders).values(row))
            if enqueue_too:
                mark = time.perf_counter()
                enqueue(sync_session, "noop", payload, queue="bench")
                called = time.perf_counter() - mark
            sync_session.commit()
        took = time.perf_counter() - start
        if i >= 20:
            (sync_with if enqueue_too else sync_plain).append(took)
            if enqueue_too:
                sync_call.append(called)
    async with ours.async_engine.begin() as conn:
        await conn.run_sync(business.drop_all)
    return {
        "rounds": ctx.w8_rounds,
        "async": _w8_summary(plain, with_job, call),
        "sync": _w8_summary(sync_plain, sync_with, sync_call),
    }


def _w8_summary(plain: list[float], with_job: list[float], call: list[float]) -> dict[str, float]:
    us = 1e6
    return {
        "txn_without_p50_us": percentile(plain, 50) * us,
        "txn_with_p50_us": percentile(with_job, 50) * us,
        "marginal_p50_us": (percentile(with_job, 50) - percentile(plain, 50)) * us,
        "marginal_mean_us": (sum(with_job) / len(with_job) - sum(plain) / len(plain)) * us,
        "call_p50_us": percentile(call, 50) * us,
        "call_p99_us": percentile(call, 99) * us,
    }
