"""What the worker claims and when: priority order, run_at, paused queues, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, insert, update

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.models import Queue
from backfill_sa.priority import Priority
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import add, add_jobs, job, make_due, state_of, unfinished

UTC = dt.timezone.utc


async def test_jobs_run_in_priority_then_run_at_then_id_order(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    ran: list[int] = []

    @registry.task("order")
    async def order(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    past = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    specs: list[JobSpec] = []
    for level in Priority:
        # Two run_at values per level (the later one enqueued first), and a tie on
        # run_at that only the id can break.
        specs.append(JobSpec("order", {}, priority=level, run_at=past + dt.timedelta(minutes=2)))
        specs.append(JobSpec("order", {}, priority=level, run_at=past + dt.timedelta(minutes=1)))
        specs.append(JobSpec("order", {}, priority=level, run_at=past + dt.timedelta(minutes=1)))
    random.Random(7).shuffle(specs)
    ids = add_jobs(sync_engine, specs)
    key = {
        job_id: (int(spec.priority), spec.run_at, job_id)
        for job_id, spec in zip(ids, specs, strict=True)
    }

    result = await WorkerRunner(config(queues={"bulk": 1}), registry).run_once()

    assert result.succeeded == len(specs)
    assert ran == sorted(ids, key=lambda i: key[i])
    levels = [key[i][0] for i in ran]
    assert levels[0] == Priority.EMERGENCY
    assert levels[-1] == Priority.BULK_LOWEST
    assert unfinished(sync_engine) == 0


async def test_future_run_at_waits_until_due(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    ran: list[int] = []

    @registry.task("later")
    async def later(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    job_id = add(sync_engine, "later", run_at=dt.datetime.now(UTC) + dt.timedelta(hours=1))
    runner = WorkerRunner(config(), registry)

    first = await runner.run_once()

    assert first.succeeded == 0
    assert ran == []
    row = job(sync_engine, job_id)
    assert row is not None
    assert row["state"] == "scheduled"
    assert row["attempts"] == 0

    make_due(sync_engine, job_id)
    second = await runner.run_once()

    assert second.succeeded == 1
    assert ran == [job_id]
    assert state_of(sync_engine, job_id) == "completed"


async def test_paused_queue_is_not_claimed(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    ran: list[str] = []

    @registry.task("note")
    async def note(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.queue)

    with sync_engine.begin() as conn:
        conn.execute(insert(Queue).values(name="held", paused=True))
        conn.execute(insert(Queue).values(name="open", paused=False))
    held = add(sync_engine, "note", queue="held")
    add(sync_engine, "note", queue="open")
    runner = WorkerRunner(config(queues={"held": 2, "open": 2}), registry)

    result = await runner.run_once()

    assert result.succeeded == 1
    assert ran == ["open"]
    row = job(sync_engine, held)
    assert row is not None
    assert row["state"] == "available"
    assert row["attempts"] == 0
    assert row["locked_by"] is None

    with sync_engine.begin() as conn:
        conn.execute(update(Queue).values(paused=False))
    assert (await runner.run_once()).succeeded == 1
    assert ran == ["open", "held"]


async def test_per_queue_concurrency_is_never_exceeded(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    limits = {"narrow": 2, "wide": 5}
    per_queue_jobs = 30
    running: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    full = {name: asyncio.Event() for name in limits}
    total_peak = 0

    @registry.task("busy")
    async def busy(payload: Any, ctx: JobContext) -> None:
        nonlocal total_peak
        queue = ctx.queue
        running[queue] += 1
        peak[queue] = max(peak[queue], running[queue])
        total_peak = max(total_peak, sum(running.values()))
        try:
            if running[queue] >= limits[queue]:
                full[queue].set()
            # The first jobs hold their slots until the queue is full once, so the
            # limit is reached for sure; later ones overlap for a brief moment.
            await asyncio.wait_for(full[queue].wait(), timeout=10)
            await asyncio.sleep(0.005)
        finally:
            running[queue] -= 1

    add_jobs(
        sync_engine,
        [JobSpec("busy", {"n": n}, queue=q) for q in limits for n in range(per_queue_jobs)],
    )
    runner = WorkerRunner(config(queues=limits), registry)

    result = await runner.run_once()

    assert result.succeeded == per_queue_jobs * len(limits)
    assert dict(peak) == limits
    assert runner.peak_running == limits
    assert total_peak <= sum(limits.values())
    assert unfinished(sync_engine) == 0


async def test_queue_row_concurrency_overrides_the_worker_setting(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    running = 0
    peak = 0

    @registry.task("busy")
    async def busy(payload: Any, ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1

    with sync_engine.begin() as conn:
        conn.execute(insert(Queue).values(name="bulk", concurrency=2))
    add_jobs(sync_engine, [JobSpec("busy", {"n": n}) for n in range(20)])
    runner = WorkerRunner(config(queues={"bulk": 8}), registry)

    assert (await runner.run_once()).succeeded == 20
    assert peak == 2
    assert runner.peak_running == {"bulk": 2}
