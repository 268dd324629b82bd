"""Running handlers: timeouts, sync handlers in threads, and what the context tells them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.errors import PermanentError
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import add, add_jobs, job

UTC = dt.timezone.utc


def _error(row: dict[str, Any]) -> dict[str, Any]:
    raw = row["last_error"]
    loaded: dict[str, Any] = raw if isinstance(raw, dict) else json.loads(raw)
    return loaded


async def test_timeout_cancels_an_async_handler_and_retries(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    cancelled = asyncio.Event()
    never = asyncio.Event()

    @registry.task("stuck", timeout=timedelta(milliseconds=100))
    async def stuck(payload: Any, ctx: JobContext) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = add(sync_engine, "stuck")

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.retried, result.dead_lettered, result.succeeded) == (1, 0, 0)
    assert cancelled.is_set()
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["attempts"]) == ("scheduled", 1)
    assert "TimeoutError" in _error(row)["type"]


async def test_timeout_of_a_sync_handler_retries(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    release = threading.Event()

    @registry.task("stuck_sync", timeout=timedelta(milliseconds=100))
    def stuck_sync(payload: Any, ctx: JobContext) -> None:
        release.wait(timeout=10)

    job_id = add(sync_engine, "stuck_sync")
    try:
        result = await WorkerRunner(config(), registry).run_once()
    finally:
        release.set()

    assert (result.retried, result.succeeded) == (1, 0)
    row = job(sync_engine, job_id)
    assert row is not None
    assert "TimeoutError" in _error(row)["type"]


async def test_sync_handler_runs_in_a_thread_without_blocking_the_loop(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    go = threading.Event()
    threads: list[threading.Thread] = []

    @registry.task("blocking")
    def blocking(payload: Any, ctx: JobContext) -> str:
        threads.append(threading.current_thread())
        # Set by the async job below, which can only run if the loop is free.
        if not go.wait(timeout=10):
            raise RuntimeError("the event loop was blocked")
        return "done"

    @registry.task("opener")
    async def opener(payload: Any, ctx: JobContext) -> None:
        go.set()

    @registry.task("sync_fails")
    def sync_fails(payload: Any, ctx: JobContext) -> None:
        raise PermanentError("no")

    add_jobs(sync_engine, [JobSpec("blocking"), JobSpec("opener"), JobSpec("sync_fails")])

    result = await WorkerRunner(config(queues={"bulk": 3}), registry).run_once()

    assert (result.succeeded, result.dead_lettered, result.retried) == (2, 1, 0)
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()
    assert threads[0].name.startswith("backfill-job")


async def test_handler_gets_the_job_context(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    seen: list[tuple[Any, JobContext]] = []

    @registry.task("ctx")
    async def ctx_task(payload: Any, ctx: JobContext) -> None:
        seen.append((payload, ctx))

    run_at = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    job_id = add(
        sync_engine,
        "ctx",
        {"a": [1, 2]},
        queue="bulk",
        priority=-7,
        run_at=run_at,
        max_attempts=4,
        metadata={"tag": "x"},
    )
    runner = WorkerRunner(config(worker_id="worker-ctx"), registry)

    assert (await runner.run_once()).succeeded == 1

    [(payload, ctx)] = seen
    assert payload == {"a": [1, 2]}
    assert (ctx.job_id, ctx.task, ctx.queue, ctx.priority) == (job_id, "ctx", "bulk", -7)
    assert (ctx.attempt, ctx.max_attempts) == (1, 4)
    assert ctx.run_at == run_at
    assert ctx.enqueued_at.tzinfo is not None
    assert ctx.metadata["tag"] == "x"
    assert ctx.worker_id == "worker-ctx"
    assert ctx.logger.extra is not None
    assert ctx.logger.extra["job_id"] == job_id


async def test_a_job_without_metadata_gets_an_empty_mapping(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    seen: list[Any] = []

    @registry.task("bare")
    async def bare(payload: Any, ctx: JobContext) -> None:
        seen.append((payload, ctx.metadata))

    add(sync_engine, "bare", {})
    assert (await WorkerRunner(config(), registry).run_once()).succeeded == 1
    assert seen == [({}, {})]
