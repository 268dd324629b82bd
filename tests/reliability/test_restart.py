"""The database restarted under running workers: mid-drain and mid-enqueue.

The test's own server (never the shared one) is stopped with ``pg_ctl stop -m fast``
(every session terminated, open transactions rolled back), left down for a second,
and started again on the same port. Two workers run in this process meanwhile. What
must hold: no committed job is lost, every job's handler runs exactly once, none is
left claimed, neither worker exits on its own, and both LISTEN connections come back.
How long processing took to resume after the server returned is printed (run with
``-s``) and recorded in docs/reliability.md; it is not asserted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import async_url, sync_url
from backfill_sa.enqueue import JobSpec, enqueue_many, enqueue_many_async
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerHandle, WorkerRunner
from tests.reliability.conftest import OwnSchema
from tests.reliability.servers import ThrowawayPostgres
from tests.worker.conftest import add_jobs, count, wait_for

pytestmark = pytest.mark.slow

WORKERS = 2


class Recorder:
    """The handler of task ``record``: notes each run's job key, attempt and time."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, float]] = []
        self.registry = TaskRegistry()
        self.registry.register("record", self.record)

    async def record(self, payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(0.005)  # a little work, so that jobs are in flight at the stop
        self.runs.append((payload["key"], ctx.attempt, time.monotonic()))

    def first_run_after(self, moment: float) -> float | None:
        later = [at for _, _, at in self.runs if at > moment]
        return min(later) - moment if later else None


def _start_workers(own_schema: OwnSchema, recorder: Recorder) -> list[WorkerHandle]:
    handles = []
    for i in range(WORKERS):
        config = WorkerConfig(
            database_url=own_schema.url,
            schema=own_schema.name,
            queues={"bulk": 10},
            poll_interval=timedelta(milliseconds=50),
            shutdown_timeout=timedelta(seconds=5),
            worker_id=f"restart-w{i}",
        )
        handles.append(WorkerRunner(config, recorder.registry).start())
    return handles


async def _jobs_left(own_schema: OwnSchema) -> int:
    def query() -> int:
        try:
            return count(own_schema.engine, "jobs")
        except Exception:  # the server is down: not drained yet
            return -1

    return await asyncio.to_thread(query)


async def _finish(
    own_schema: OwnSchema, handles: list[WorkerHandle], timeout: float = 90.0
) -> None:
    """Wait for an empty jobs table with both workers alive, then stop them."""

    async def drained() -> bool:
        return await _jobs_left(own_schema) == 0

    await wait_for(drained, timeout=timeout, what="the jobs table to empty")
    assert [h.running for h in handles] == [True] * WORKERS, "a worker exited on its own"
    # Each LISTEN connection is made again after the restart (its backoff reaches 5 s).
    listeners = [h.runner.listener for h in handles]
    await wait_for(
        lambda: all(
            lst is not None and lst.connections_made >= 2 and lst.connected.is_set()
            for lst in listeners
        ),
        timeout=30,
        what="both LISTEN connections to come back",
    )
    for handle in handles:
        await asyncio.wait_for(handle.stop(), timeout=30)
    assert count(own_schema.engine, "jobs") == 0
    assert count(own_schema.engine, "dead_letter_jobs") == 0


async def test_restart_mid_drain_loses_nothing_and_runs_each_job_once(
    own_server: ThrowawayPostgres, own_schema: OwnSchema
) -> None:
    jobs = 8000
    add_jobs(own_schema.engine, [JobSpec("record", {"key": f"d{n}"}) for n in range(jobs)])
    recorder = Recorder()
    handles = _start_workers(own_schema, recorder)
    try:
        await wait_for(lambda: len(recorder.runs) >= jobs // 20, timeout=60, what="some runs")
        await asyncio.to_thread(own_server.restart, down_for=1.0)
        back = own_server.started_at
        assert back is not None
        assert len(recorder.runs) < jobs, "the restart landed mid-drain"
        await _finish(own_schema, handles)
    finally:
        for handle in handles:
            if handle.running:
                await handle.stop(force=True)
    print(f"\nmid-drain: processing resumed {recorder.first_run_after(back):.3f}s after restart")
    keys = Counter(key for key, _, _ in recorder.runs)
    assert sorted(keys) == sorted(f"d{n}" for n in range(jobs))
    assert [k for k, n in keys.items() if n > 1] == []


async def test_restart_mid_enqueue_keeps_every_committed_job(
    own_server: ThrowawayPostgres, own_schema: OwnSchema
) -> None:
    recorder = Recorder()
    committed: set[str] = set()
    uncertain: set[str] = set()  # the connection died during COMMIT: either way is right
    restarted = threading.Event()
    stop = threading.Event()

    def sync_enqueuer() -> None:
        engine = create_engine(
            sync_url(own_schema.url),
            pool_pre_ping=True,
            execution_options={"schema_translate_map": {"backfill": own_schema.name}},
        )
        batch = 0
        try:
            while not stop.is_set():
                keys = [f"s{batch}-{i}" for i in range(20)]
                batch += 1
                try:
                    with Session(engine) as session:
                        with session.begin():
                            enqueue_many(session, [JobSpec("record", {"key": k}) for k in keys])
                            # COMMIT runs as the block ends: an error there is ambiguous.
                            uncertain.update(keys)
                        committed.update(keys)
                        uncertain.difference_update(keys)
                except Exception:
                    time.sleep(0.05)  # the application's own retry pause while the server is down
        finally:
            engine.dispose()

    async def async_enqueuer() -> None:
        engine = create_async_engine(
            async_url(own_schema.url),
            pool_pre_ping=True,
            execution_options={"schema_translate_map": {"backfill": own_schema.name}},
        )
        batch = 0
        try:
            while not stop.is_set():
                keys = [f"a{batch}-{i}" for i in range(20)]
                batch += 1
                try:
                    async with AsyncSession(engine) as session:
                        async with session.begin():
                            await enqueue_many_async(
                                session, [JobSpec("record", {"key": k}) for k in keys]
                            )
                            uncertain.update(keys)
                        committed.update(keys)
                        uncertain.difference_update(keys)
                except Exception:
                    await asyncio.sleep(0.05)
        finally:
            await engine.dispose()

    handles = _start_workers(own_schema, recorder)
    thread = threading.Thread(target=sync_enqueuer, name="sync-enqueuer")
    async_task = asyncio.get_running_loop().create_task(async_enqueuer())
    thread.start()
    try:
        await wait_for(lambda: len(committed) >= 1000, timeout=60, what="1000 committed jobs")
        await asyncio.to_thread(own_server.restart, down_for=1.0)
        restarted.set()
        back = own_server.started_at
        assert back is not None
        before = len(committed)
        await wait_for(
            lambda: len(committed) >= before + 1000, timeout=60, what="enqueueing to resume"
        )
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        await asyncio.wait_for(async_task, timeout=30)
        await _finish(own_schema, handles)
    finally:
        stop.set()
        for handle in handles:
            if handle.running:
                await handle.stop(force=True)
    print(
        f"\nmid-enqueue: {len(committed)} committed, {len(uncertain)} uncertain;"
        f" processing resumed {recorder.first_run_after(back):.3f}s after restart"
    )
    keys = Counter(key for key, _, _ in recorder.runs)
    assert committed <= set(keys), f"lost: {sorted(committed - set(keys))[:10]}"
    assert set(keys) <= committed | uncertain
    assert [k for k, n in keys.items() if n > 1] == []
    # What the server holds agrees: nothing left, nothing in the DLQ.
    with own_schema.engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
