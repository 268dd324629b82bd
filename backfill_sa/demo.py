"""``python -m backfill_sa demo``: backfill_sa end to end on a throw-away schema, in seconds.

What it shows, in order:

1. a fresh schema (``backfill_demo``, dropped and migrated again each run) and a small
   business table, ``orders``;
2. a worker started in this process (fast and bulk queues);
3. orders inserted together with their jobs in the same transactions, with mixed
   queues and priorities, while the worker runs;
4. one transaction rolled back after its enqueue: neither the order nor the job exists;
5. a job that keeps failing, retried under a fast custom :class:`RetryPolicy`,
   dead-lettered, then requeued from the DLQ once the cause is fixed, and completed;
6. jobs committed one at a time to the idle worker, to time its pickup;
7. a summary: jobs per second over the orders' jobs, pickup latency p50/p99 (commit
   to handler start, measured in the handler) on the idle worker and under the
   orders' backlog, and where every job ended (checked in the database).

A progress bar goes to stderr (plain text, redrawn with ``\\r`` on a terminal).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.schema import CreateSchema, DropSchema

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import async_url, parse_url
from backfill_sa.demo_summary import DemoSummary, percentile, progress_bar, report
from backfill_sa.errors import ConfigurationError, RetryableError
from backfill_sa.models import DEFAULT_SCHEMA, Job
from backfill_sa.priority import BULK, FAST, Priority
from backfill_sa.retry import RetryPolicy
from backfill_sa.states import UNFINISHED_STATES
from backfill_sa.tasks import JobContext, TaskRegistry

if TYPE_CHECKING:
    from backfill_sa.worker import WorkerHandle, WorkerRunner

__all__ = ["DEMO_RETRY", "DemoSummary", "run_demo"]

DEMO_RETRY = RetryPolicy(
    max_attempts=3,
    initial_delay=timedelta(milliseconds=100),
    max_delay=timedelta(milliseconds=400),
    multiplier=2.0,
    jitter=0.1,
)
"""The flaky task's policy: three attempts, 100 ms then 200 ms apart (+/- 10 %)."""

_ORDERS_PER_TRANSACTION = 25
_MARKER = "backfill_sa demo: dropped and recreated by every demo run"
_TIMEOUT_SECS = 45.0


@dataclasses.dataclass
class _State:
    """What the demo's handlers record; owned by one run, never global."""

    commit_times: dict[int, float] = dataclasses.field(default_factory=dict)
    load_latencies: list[float] = dataclasses.field(default_factory=list)
    idle_latencies: list[float] = dataclasses.field(default_factory=list)
    succeeded: int = 0
    bulk_succeeded: int = 0
    bulk_done_at: float = 0.0
    warehouse_up: bool = False
    attempts: list[tuple[int, float, str]] = dataclasses.field(default_factory=list)
    probe_committed: float = 0.0
    probe_seen: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


def _orders_table(schema: str) -> Table:
    return Table(
        "orders",
        MetaData(schema=schema),
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("customer", Text, nullable=False),
        Column("amount_cents", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), server_default=func.now()),
        comment=_MARKER,
    )


def _registry(state: _State, bulk_jobs: int) -> TaskRegistry:
    registry = TaskRegistry()

    def bulk_job(payload: dict[str, Any], ctx: JobContext) -> None:
        started = time.monotonic()
        committed = state.commit_times.get(int(payload["batch"]))
        if ctx.attempt == 1 and committed is not None:
            state.load_latencies.append(started - committed)
        state.succeeded += 1
        state.bulk_succeeded += 1
        if state.bulk_succeeded == bulk_jobs:
            state.bulk_done_at = started

    @registry.task("charge_card", queue=FAST, priority=Priority.FAST_DEFAULT)
    async def charge_card(payload: dict[str, Any], ctx: JobContext) -> None:
        bulk_job(payload, ctx)

    @registry.task("send_receipt", queue=BULK, priority=Priority.BULK_DEFAULT)
    async def send_receipt(payload: dict[str, Any], ctx: JobContext) -> None:
        bulk_job(payload, ctx)

    @registry.task("ping", queue=FAST, priority=Priority.FAST_HIGH)
    async def ping(payload: dict[str, Any], ctx: JobContext) -> None:
        state.idle_latencies.append(time.monotonic() - state.probe_committed)
        state.succeeded += 1
        state.probe_seen.set()

    @registry.task("notify_warehouse", queue=BULK, retry=DEMO_RETRY)
    async def notify_warehouse(payload: dict[str, Any], ctx: JobContext) -> None:
        if not state.warehouse_up:
            state.attempts.append((ctx.attempt, time.monotonic(), "failed"))
            raise RetryableError("warehouse API answered 503 Service Unavailable")
        state.attempts.append((ctx.attempt, time.monotonic(), "succeeded"))
        state.succeeded += 1

    return registry


async def _fresh_schema(engine: AsyncEngine, schema: str, orders: Table) -> None:
    """Drop and recreate ``schema``, refusing one that an earlier demo run did not make.

    Raises:
        ConfigurationError: ``schema`` exists without the demo's marker.
    """
    from backfill_sa.migrations import upgrade_async

    async with engine.begin() as connection:
        if await connection.scalar(select(func.to_regnamespace(schema).is_not(None))):
            marker = await connection.scalar(
                select(func.obj_description(func.to_regclass(f'"{schema}".orders'), "pg_class"))
            )
            if marker != _MARKER:
                raise ConfigurationError(
                    "--schema",
                    f"{schema!r} exists and was not made by the demo, which drops its schema; "
                    "name another one",
                )
        await connection.execute(DropSchema(schema, cascade=True, if_exists=True))
        await connection.execute(CreateSchema(schema))
        await connection.run_sync(orders.metadata.create_all)
    await upgrade_async(engine, schema=schema)


async def _enqueue_orders(
    engine: AsyncEngine, registry: TaskRegistry, orders: Table, state: _State, count: int
) -> int:
    """Insert ``count`` orders, each with its jobs, a batch per transaction; return jobs."""
    from backfill_sa.enqueue import enqueue_many_async

    jobs = 0
    for batch, first in enumerate(range(1, count + 1, _ORDERS_PER_TRANSACTION)):
        ids = range(first, min(first + _ORDERS_PER_TRANSACTION, count + 1))
        specs = []
        for order_id in ids:
            express = order_id % 4 == 0
            payload = {"order_id": order_id, "batch": batch}
            specs.append(
                registry["charge_card"].spec(
                    payload, priority=Priority.FAST_HIGH if express else Priority.FAST_DEFAULT
                )
            )
            specs.append(
                registry["send_receipt"].spec(
                    payload, priority=Priority.BULK_LOW if order_id % 3 else Priority.BULK_DEFAULT
                )
            )
        if first == 1:
            specs.append(registry["notify_warehouse"].spec({"order_id": 1, "batch": batch}))
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(
                insert(orders),
                [{"id": i, "customer": f"customer-{i % 97}", "amount_cents": 100 + i} for i in ids],
            )
            await enqueue_many_async(session, specs)
            state.commit_times[batch] = time.monotonic()
        jobs += len(specs)
    return jobs


async def _rolled_back_order(engine: AsyncEngine, registry: TaskRegistry, orders: Table) -> int:
    """Enqueue inside a transaction that rolls back; return what of it is visible (0)."""
    from backfill_sa.enqueue import enqueue_many_async

    order_id = 10**9
    async with AsyncSession(engine) as session:
        try:
            async with session.begin():
                await session.execute(
                    insert(orders), [{"id": order_id, "customer": "x", "amount_cents": 1}]
                )
                await enqueue_many_async(
                    session, [registry["charge_card"].spec({"order_id": order_id})]
                )
                raise _RollBack  # say, the payment form failed validation
        except _RollBack:
            pass
        order_rows = await session.scalar(select(func.count()).where(orders.c.id == order_id))
        job_rows = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.payload["order_id"].as_integer() == order_id)
        )
    return int(order_rows or 0) + int(job_rows or 0)


async def _probe_latency(
    engine: AsyncEngine, registry: TaskRegistry, state: _State, count: int
) -> None:
    """Commit ``count`` jobs one at a time, each after the previous one started."""
    for probe in range(count):
        state.probe_seen.clear()
        async with AsyncSession(engine) as session, session.begin():
            await registry["ping"].enqueue_async(session, {"probe": probe})
            state.probe_committed = time.monotonic()  # commit follows at once
        await asyncio.wait_for(state.probe_seen.wait(), timeout=_TIMEOUT_SECS)


class _RollBack(Exception):
    """Raised inside the demo's transaction to roll it back."""


async def _wait_until(condition: Callable[[], bool], what: str, worker: WorkerHandle) -> None:
    deadline = time.monotonic() + _TIMEOUT_SECS
    while not condition():
        if not worker.running:
            await worker.wait()  # re-raises whatever stopped the worker
            raise RuntimeError(f"demo: the worker stopped before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {_TIMEOUT_SECS:.0f} s")
        await asyncio.sleep(0.01)


async def run_demo(
    database_url: str,
    *,
    schema: str = "backfill_demo",
    jobs: int = 2000,
    out: TextIO | None = None,
    progress: TextIO | None = None,
) -> DemoSummary:
    """Run the demo on ``database_url`` in ``schema`` (dropped first) and print what happens.

    Args:
        database_url: any PostgreSQL URL form.
        schema: a schema the demo owns: it is dropped and migrated again.
        jobs: about how many jobs to enqueue (two per order, plus the failing one).
        out: where the story and the summary go (default stdout).
        progress: where the progress bar goes (default stderr).

    Raises:
        ConfigurationError: the URL or schema is not valid.
        TimeoutError: the work did not finish in 45 s.
        sqlalchemy.exc.DBAPIError: the database refused a statement.
    """
    from backfill_sa.dlq import count_dead_letters_async, requeue_dead_letters_async
    from backfill_sa.worker import WorkerRunner

    out = out or sys.stdout
    progress = progress or sys.stderr
    orders_count = max(1, jobs // 2)
    bulk_jobs = orders_count * 2
    probes = min(200, max(20, jobs // 10))
    state = _State()
    registry = _registry(state, bulk_jobs)
    orders = _orders_table(schema)
    engine = create_async_engine(
        async_url(database_url),
        execution_options={"schema_translate_map": {DEFAULT_SCHEMA: schema}},
    )
    config = WorkerConfig(
        database_url=database_url,
        schema=schema,
        queues={FAST: 10, BULK: 5},
        poll_interval=timedelta(milliseconds=50),
    )
    shown = parse_url(database_url).render_as_string(hide_password=True)
    print(f"backfill_sa demo on {shown}, schema {schema!r}", file=out)
    try:
        await _fresh_schema(engine, schema, orders)
        print(f"  1. migrated a fresh schema {schema!r}, created {schema}.orders", file=out)
        runner = WorkerRunner(config, registry)
        handle = runner.start()
        await _wait_until(lambda: _listening(runner), "the worker listening", handle)
        queues = ", ".join(f"{name}={limit}" for name, limit in config.queues.items())
        print(f"  2. started a worker in this process: queues {queues}", file=out)
        stop_bar = asyncio.Event()
        total = bulk_jobs + probes + 1
        bar = asyncio.ensure_future(
            progress_bar(lambda: state.succeeded, total, progress, stop_bar)
        )
        started = time.monotonic()
        enqueued = await _enqueue_orders(engine, registry, orders, state, orders_count)
        visible = await _rolled_back_order(engine, registry, orders)
        await _wait_until(lambda: state.bulk_done_at > 0, "running the orders' jobs", handle)
        await _wait_until(
            lambda: runner.result.dead_lettered >= 1, "dead-lettering the flaky job", handle
        )
        await _probe_latency(engine, registry, state, probes)
        async with AsyncSession(engine) as session, session.begin():
            requeued = await requeue_dead_letters_async(session, task="notify_warehouse")
            state.warehouse_up = True
        await _wait_until(lambda: state.succeeded >= total, "running the requeued job", handle)
        stop_bar.set()
        await bar
        result = await handle.stop()
        async with AsyncSession(engine) as session:
            waiting = Job.state.in_([s.value for s in UNFINISHED_STATES])
            left_in_jobs = int(
                await session.scalar(select(func.count()).select_from(Job).where(waiting)) or 0
            )
            left_in_dlq = await count_dead_letters_async(session)
        summary = DemoSummary(
            jobs=enqueued + probes,
            succeeded=state.succeeded,
            retried=result.retried,
            dead_lettered=result.dead_lettered,
            requeued=len(requeued.requeued_ids),
            left_in_jobs=left_in_jobs,
            left_in_dlq=left_in_dlq,
            rolled_back_visible=visible,
            bulk_jobs=bulk_jobs,
            bulk_seconds=state.bulk_done_at - started,
            idle_p50_ms=percentile(state.idle_latencies, 0.50) * 1000,
            idle_p99_ms=percentile(state.idle_latencies, 0.99) * 1000,
            load_p50_ms=percentile(state.load_latencies, 0.50) * 1000,
            load_p99_ms=percentile(state.load_latencies, 0.99) * 1000,
        )
        report(
            summary,
            attempts=state.attempts,
            max_attempts=DEMO_RETRY.max_attempts,
            orders=orders_count,
            transactions=-(-orders_count // _ORDERS_PER_TRANSACTION),
            probes=probes,
            out=out,
        )
        return summary
    finally:
        await engine.dispose()


def _listening(runner: WorkerRunner) -> bool:
    listener = runner.listener
    return listener is not None and listener.connected.is_set()
