"""Stopping a worker: running jobs finish or come back, nothing new is claimed, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from subprocess import Popen
from typing import Any

import pytest
from sqlalchemy import Engine

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import (
    add_jobs,
    count,
    create_result_tables,
    job,
    poll_db,
    read_json_line,
    rows,
    start_script,
    state_of,
    unfinished,
    wait_for,
)
from tests.worker.proxy import FaultyProxy


def _error_type(row: dict[str, Any]) -> str:
    error = row["last_error"]
    loaded: dict[str, Any] = error if isinstance(error, dict) else json.loads(error)
    return str(loaded["type"])


async def test_graceful_stop_finishes_what_it_can_and_returns_the_rest(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    started = {"quick": asyncio.Event(), "stuck": asyncio.Event()}
    release_quick = asyncio.Event()
    release_stuck = asyncio.Event()
    stuck_cancelled = asyncio.Event()
    attempts: dict[str, list[int]] = {"quick": [], "stuck": [], "late": []}

    @registry.task("quick")
    async def quick(payload: Any, ctx: JobContext) -> None:
        attempts["quick"].append(ctx.attempt)
        started["quick"].set()
        await release_quick.wait()

    @registry.task("stuck")
    async def stuck(payload: Any, ctx: JobContext) -> None:
        attempts["stuck"].append(ctx.attempt)
        started["stuck"].set()
        try:
            await release_stuck.wait()
        except asyncio.CancelledError:
            stuck_cancelled.set()
            raise

    @registry.task("late")
    async def late(payload: Any, ctx: JobContext) -> None:
        attempts["late"].append(ctx.attempt)

    quick_id, stuck_id, late_id = add_jobs(
        sync_engine,
        [
            JobSpec("quick", priority=-2),
            JobSpec("stuck", priority=-1),
            JobSpec("late", priority=5),  # claimed only if a slot frees before the stop
        ],
    )
    runner = WorkerRunner(
        config(queues={"bulk": 2}, shutdown_timeout=timedelta(milliseconds=500)), registry
    )
    handle = runner.start()
    await asyncio.wait_for(
        asyncio.gather(started["quick"].wait(), started["stuck"].wait()), timeout=10
    )

    began = time.monotonic()
    runner.stop()
    release_quick.set()  # finishes during the shutdown window; frees a slot
    result = await asyncio.wait_for(handle.stop(), timeout=10)
    elapsed = time.monotonic() - began

    assert 0.45 <= elapsed < 5
    assert stuck_cancelled.is_set()
    assert (result.succeeded, result.retried, result.dead_lettered) == (1, 1, 0)
    assert state_of(sync_engine, quick_id) == "completed"
    stuck_row = job(sync_engine, stuck_id)
    assert stuck_row is not None
    assert stuck_row["state"] == "available"
    assert stuck_row["attempts"] == 0  # the attempt is given back
    assert stuck_row["locked_by"] is None
    assert stuck_row["lease"] == 1
    assert _error_type(stuck_row).endswith("ShutdownCancelled")
    late_row = job(sync_engine, late_id)
    assert late_row is not None
    assert (late_row["state"], late_row["lease"]) == ("available", 0)  # never claimed
    assert attempts["late"] == []
    # A clean stop unregisters the worker and gives up the leader role.
    assert count(sync_engine, "workers") == 0
    assert count(sync_engine, "leader") == 0

    release_stuck.set()
    again = await WorkerRunner(config(), registry).run_once()

    assert again.succeeded == 2
    assert attempts["stuck"] == [1, 1]
    assert unfinished(sync_engine) == 0


async def test_forced_stop_cancels_at_once(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    @registry.task("stuck")
    async def stuck(payload: Any, ctx: JobContext) -> None:
        started.set()
        await never.wait()

    [job_id] = add_jobs(sync_engine, [JobSpec("stuck")])
    runner = WorkerRunner(config(shutdown_timeout=timedelta(seconds=60)), registry)
    handle = runner.start()
    await asyncio.wait_for(started.wait(), timeout=10)

    began = time.monotonic()
    result = await asyncio.wait_for(handle.stop(force=True), timeout=10)

    assert time.monotonic() - began < 5
    assert result.retried == 1
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["attempts"], row["locked_by"]) == ("available", 0, None)


def _running(sync_engine: Engine, n: int) -> Callable[[], bool]:
    return lambda: count(sync_engine, "jobs", "state = 'running'") >= n


def test_sigterm_lets_running_jobs_finish_and_exits_0(
    database_url: str, schema: str, sync_engine: Engine, processes: list[Popen[str]]
) -> None:
    create_result_tables(sync_engine)
    ids = add_jobs(sync_engine, [JobSpec("record", {"n": n}) for n in range(3)])
    worker_id = f"term-{uuid.uuid4().hex[:6]}"
    proc = start_script(
        "worker_proc.py",
        *("--url", database_url, "--schema", schema, "--worker-id", worker_id),
        *("--concurrency", "3", "--sleep", "1.0"),
    )
    processes.append(proc)
    assert read_json_line(proc) == {"ready": True}
    poll_db(_running(sync_engine, 3), what="3 running jobs")

    proc.send_signal(signal.SIGTERM)
    counts = read_json_line(proc)

    assert proc.wait(timeout=15) == 0
    assert counts["succeeded"] == 3
    done = rows(sync_engine, "SELECT job_id FROM {s}.results ORDER BY job_id")
    assert [r["job_id"] for r in done] == ids
    assert unfinished(sync_engine) == 0
    assert count(sync_engine, "workers") == 0


def test_second_signal_stops_at_once_and_returns_the_jobs(
    database_url: str, schema: str, sync_engine: Engine, processes: list[Popen[str]]
) -> None:
    create_result_tables(sync_engine)
    ids = add_jobs(sync_engine, [JobSpec("record", {"n": n}) for n in range(2)])
    proc = start_script(
        "worker_proc.py",
        *("--url", database_url, "--schema", schema, "--worker-id", "twice"),
        *("--concurrency", "2", "--sleep", "60"),
    )
    processes.append(proc)
    assert read_json_line(proc) == {"ready": True}
    poll_db(_running(sync_engine, 2), what="2 running jobs")

    began = time.monotonic()
    # Two different signals are never merged by the kernel: whichever is handled
    # first asks for a graceful stop, the other for an immediate one.
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    counts = read_json_line(proc)

    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - began < 10  # the default shutdown timeout is 30 s
    assert counts["succeeded"] == 0
    assert counts["retried"] == 2
    left = rows(sync_engine, "SELECT id, state, attempts, locked_by FROM {s}.jobs ORDER BY id")
    assert left == [
        {"id": job_id, "state": "available", "attempts": 0, "locked_by": None} for job_id in ids
    ]
    assert count(sync_engine, "results") == 0


async def test_forced_stop_returns_promptly_while_the_database_is_unreachable(
    database_url: str,
    sync_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    """A second signal exits at once, even when the worker cannot write anything.

    The job's outcome cannot be written; the job stays claimed and is rescued once
    the worker's heartbeat expires, so nothing is lost by not waiting.
    """
    proxy = FaultyProxy(database_url)
    via_proxy = await proxy.start()
    finished = asyncio.Event()

    @registry.task("cut")
    async def cut(payload: Any, ctx: JobContext) -> None:
        proxy.go_down()  # the database becomes unreachable as the job ends
        finished.set()

    [job_id] = add_jobs(sync_engine, [JobSpec("cut")])
    runner = WorkerRunner(
        config(database_url=via_proxy),
        registry,
    )
    handle = runner.start()
    try:
        await asyncio.wait_for(finished.wait(), timeout=10)
        runner.stop()  # first signal
        began = time.monotonic()
        runner.force_stop()  # second signal
        done, _ = await asyncio.wait({handle.task}, timeout=5)
        elapsed = time.monotonic() - began
    finally:
        # If the worker is still stuck, cut it short without waiting for its retries:
        # each cancellation ends the database write it is waiting on.
        for _ in range(5):
            if handle.task.done():
                break
            handle.task.cancel()
            await asyncio.wait({handle.task}, timeout=1)
        await proxy.close()

    assert done, "a forced stop still waits for the database"
    assert elapsed < 5
    handle.task.result()  # the run ended without an error
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["locked_by"]) == ("running", runner.worker_id)


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "forced"])
async def test_stop_is_bounded_when_the_database_goes_away_while_idle(
    force: bool,
    database_url: str,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    """An idle worker whose database vanished still stops on time.

    Its fetchers keep claiming every poll interval; a claim that fails makes the
    fetcher give back orphaned claims first, which needs the database too. Neither
    may hold the stop beyond the shutdown timeout (graceful) or at all (forced).
    """
    proxy = FaultyProxy(database_url)
    via_proxy = await proxy.start()
    shutdown_timeout = 1.0
    # Forced: at once. Graceful: the shutdown timeout, plus a few seconds for the last
    # writes (resign, unregister), not the 60 s retry window of a transient error.
    limit = 2 if force else shutdown_timeout + 15
    runner = WorkerRunner(
        config(
            database_url=via_proxy,
            shutdown_timeout=timedelta(seconds=shutdown_timeout),
        ),
        registry,
    )
    handle = runner.start()
    try:
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            what="the LISTEN connection",
        )
        proxy.go_down()
        # The worker is now retrying: several reconnects were turned away.
        await wait_for(lambda: proxy.refused >= 5, what="the worker to retry")
        began = time.monotonic()
        if force:
            runner.stop()  # first signal
            runner.force_stop()  # second signal
        else:
            runner.stop()
        done, _ = await asyncio.wait({handle.task}, timeout=limit + 3)
        elapsed = time.monotonic() - began
    finally:
        for _ in range(5):
            if handle.task.done():
                break
            handle.task.cancel()
            await asyncio.wait({handle.task}, timeout=1)
        await proxy.close()

    assert done, "the stop waits for the database"
    assert elapsed < limit, elapsed
    handle.task.result()
