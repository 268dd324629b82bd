"""The producer workloads: W1client (a standalone producer), W1tx (a job with a business
row in one transaction of the application's session) and W4client (W4's pickup latency
with the enqueue through ``BackfillClient``).

Each library enqueues in its own idiomatic shape:

* W1client: ours ``BackfillClient.enqueue`` (async, owning its engine; also
  ``SyncBackfillClient.enqueue``), pgqueuer ``Queries.enqueue`` on its kept asyncpg
  connection, procrastinate ``defer_async`` (its psycopg pool): each adapter's
  :meth:`~benchmarks.adapters.Adapter.produce_one`.
* W1tx: one row into ``bench_orders`` and one job, committed together by an
  ``AsyncSession`` (asyncpg) of the application, then by a sync ``Session``
  (psycopg); ours with ``enqueue_async`` / ``enqueue``, pgqueuer with ``Queries.enqueue``
  on that session's own asyncpg connection; beside them, for ours, the same sessions
  committing the business row alone (the floor). procrastinate cannot take part: its
  connectors open their own connections (a psycopg pool, or a psycopg2 SQLAlchemy
  engine), none joins a session's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from benchmarks.adapters import Adapter, Payload
from benchmarks.business import business
from benchmarks.latency import Pickup, run_pickups
from benchmarks.measurement import percentile, summarize_ms
from benchmarks.workloads import (
    WorkloadContext,
    _method,
    _one_per_transaction,
    _sync_loop,
)

__all__ = ["w1_client", "w1_client_sync", "w1_transaction", "w4_client"]


async def w1_client(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1client: a standalone producer, one job per call, each its own transaction.

    Raises:
        Exception: whatever the library raises.
    """

    async def call(payload: Payload) -> None:
        await adapter.produce_one("noop", payload)

    return await _one_per_transaction(adapter, ctx, call)


async def w1_client_sync(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1client through ``SyncBackfillClient.enqueue`` (psycopg). backfill_sa only.

    Raises:
        TypeError: the adapter has no ``produce_one_sync``.
    """
    return await _sync_loop(adapter, ctx, "produce_one_sync")


async def w1_transaction(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W1tx: a business row and a job per session transaction; async then sync where
    the library can join the session (``enqueue_in_session``,
    ``enqueue_in_session_sync``), and for ours the business row alone
    (``order_in_session``, ``order_in_session_sync``).

    A library that cannot (procrastinate) is recorded as ``unsupported``.

    Raises:
        Exception: whatever the library raises.
    """
    if getattr(adapter, "enqueue_in_session", None) is None:
        return {"unsupported": f"{adapter.name} cannot enqueue in an application's session"}
    await adapter.create_business_tables(business)
    shapes: dict[str, object] = {}
    pairs = (
        ("async", "enqueue_in_session", False),
        ("sync", "enqueue_in_session_sync", True),
        ("floor_async", "order_in_session", False),
        ("floor_sync", "order_in_session_sync", True),
    )
    for key, method, blocking in pairs:
        if getattr(adapter, method, None) is None:
            continue
        if blocking:
            shapes[key] = await _sync_loop(adapter, ctx, method)
        else:
            call: Callable[[Payload], Awaitable[None]] = _method(adapter, method)
            shapes[key] = await _one_per_transaction(adapter, ctx, call)
    return shapes


async def w4_client(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W4 with the enqueue through ``BackfillClient`` (``produce_one``). Ours only: the
    peers' W4 already enqueues their standalone way.

    Raises:
        WorkerError: the worker exited or did not run every job.
    """
    timetable = [Pickup(i * ctx.latency_gap_s, "w4") for i in range(ctx.latency_jobs)]
    run = await run_pickups(
        adapter,
        queues={"bench": ctx.concurrency},
        timetable=timetable,
        log_dir=ctx.log_dir,
        tag=f"{adapter.name}-w4client",
        enqueue=adapter.produce_one,
    )
    return {
        **summarize_ms(run.latencies["w4"]),
        "enqueue_p50_ms": percentile([s * 1000 for s in run.enqueue_s], 50),
        "worker_rss_after_warmup_mb": run.idle_rss_mb,
        "event_loop": run.event_loop,
    }
