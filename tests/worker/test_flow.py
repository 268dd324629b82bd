"""Flow control across three workers: serial keys, global and partition concurrency, rates.

Three WorkerRunners with their own connection pools run side by side; handlers record
their start and end (and the database's claim time), and every assertion is on that
record. The test waits for an event the last handler sets, never for time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec, enqueue_many
from backfill_sa.errors import ConfigurationError
from backfill_sa.flow import QueueLimits, set_queue_limits
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import count, rows, unfinished


@dataclass
class Run:
    """One handler run."""

    payload: dict[str, Any]
    start: float
    end: float
    claimed_at: Any


class Recorder:
    """A handler that records its runs and sets ``done`` after ``expected`` of them."""

    def __init__(self, expected: int, duration: float) -> None:
        self.expected = expected
        self.duration = duration
        self.runs: list[Run] = []
        self.running = 0
        self.done = asyncio.Event()

    async def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        start = time.monotonic()
        await asyncio.sleep(self.duration)
        self.runs.append(Run(payload, start, time.monotonic(), ctx.claimed_at))
        if len(self.runs) >= self.expected:
            self.done.set()


def _enqueue(engine: Engine, specs: list[JobSpec]) -> None:
    with Session(engine) as session, session.begin():
        enqueue_many(session, specs)


async def _run_three(
    config: Callable[..., WorkerConfig], recorder: Recorder, *, concurrency: int
) -> None:
    registry = TaskRegistry()
    registry.register("work", recorder)
    runners = [
        WorkerRunner(config(queues={"flow": concurrency}, worker_id=f"w{i}"), registry)
        for i in range(3)
    ]
    handles = [runner.start() for runner in runners]
    try:
        await asyncio.wait_for(recorder.done.wait(), timeout=300)
    finally:
        for handle in handles:
            await handle.stop()


def _max_overlap(runs: list[Run]) -> int:
    events = sorted([(r.start, 1) for r in runs] + [(r.end, -1) for r in runs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def test_serial_keys_never_overlap_and_keep_their_order(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    keys, per_key = 50, 20
    recorder = Recorder(keys * per_key, duration=0.002)
    specs = [
        JobSpec("work", {"key": k, "seq": i}, queue="flow", serial_key=f"user:{k}")
        for i in range(per_key)
        for k in range(keys)
    ]
    _enqueue(sync_engine, specs)
    await _run_three(config, recorder, concurrency=10)

    assert len(recorder.runs) == keys * per_key
    assert unfinished(sync_engine) == 0
    assert count(sync_engine, "job_locks") == 0
    by_key: dict[int, list[Run]] = defaultdict(list)
    for run in recorder.runs:
        by_key[run.payload["key"]].append(run)
    for runs in by_key.values():
        runs.sort(key=lambda r: r.start)
        assert [r.payload["seq"] for r in runs] == list(range(per_key))
        for before, after in itertools.pairwise(runs):
            assert before.end <= after.start
    # Different keys did run side by side.
    assert _max_overlap(recorder.runs) > 3


async def test_global_concurrency_is_never_exceeded_and_is_reached(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    with Session(sync_engine) as session, session.begin():
        set_queue_limits(session, "flow", global_concurrency=4)
    recorder = Recorder(60, duration=0.03)
    _enqueue(sync_engine, [JobSpec("work", {"n": n}, queue="flow") for n in range(60)])
    await _run_three(config, recorder, concurrency=3)  # 9 slots, 4 allowed

    assert len(recorder.runs) == 60
    assert _max_overlap(recorder.runs) == 4
    assert count(sync_engine, "job_locks") == 0


async def test_partition_concurrency_per_payload_field(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    with Session(sync_engine) as session, session.begin():
        set_queue_limits(session, "flow", partition_by="tenant", partition_concurrency=2)
    recorder = Recorder(60, duration=0.03)
    _enqueue(
        sync_engine,
        [JobSpec("work", {"tenant": f"t{n % 3}"}, queue="flow") for n in range(60)],
    )
    await _run_three(config, recorder, concurrency=4)

    assert len(recorder.runs) == 60
    for tenant in ("t0", "t1", "t2"):
        runs = [r for r in recorder.runs if r.payload["tenant"] == tenant]
        assert _max_overlap(runs) == 2
    assert _max_overlap(recorder.runs) > 2


async def test_rate_limit_no_window_holds_more_than_the_limit(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    limit, period = 5, timedelta(milliseconds=400)
    with Session(sync_engine) as session, session.begin():
        set_queue_limits(session, "flow", rate_limit=(limit, period))
    recorder = Recorder(22, duration=0.001)
    _enqueue(sync_engine, [JobSpec("work", {"n": n}, queue="flow") for n in range(22)])
    await _run_three(config, recorder, concurrency=5)

    claims = sorted(r.claimed_at for r in recorder.runs)
    assert len(claims) == 22
    # Any limit + 1 consecutive claims span at least one period (by the database clock).
    for first, last in zip(claims, claims[limit:], strict=False):
        assert last - first >= period
    # And the limit was used: some window of one period did start `limit` jobs.
    assert any(
        last - first < period for first, last in zip(claims, claims[limit - 1 :], strict=False)
    )


async def test_serial_jobs_in_a_queue_without_limits_run_in_a_burst(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    recorder = Recorder(6, duration=0)
    registry = TaskRegistry()
    registry.register("work", recorder, serial_key=lambda payload: f"k{payload['k']}")
    with Session(sync_engine) as session, session.begin():
        for n in range(6):
            registry["work"].enqueue(session, {"k": n % 2, "n": n}, queue="flow")
    assert {r["serial_key"] for r in rows(sync_engine, "SELECT serial_key FROM {s}.jobs")} == {
        "k0",
        "k1",
    }
    result = await WorkerRunner(config(queues={"flow": 4}), registry).run_once()
    assert result.succeeded == 6
    assert count(sync_engine, "job_locks") == 0


async def test_a_failed_serial_job_releases_its_key(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    seen: list[int] = []

    async def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append(payload["n"])
        if payload["n"] == 0 and ctx.attempt == 1:
            raise RuntimeError("first try fails")

    registry = TaskRegistry()
    registry.register("flaky", flaky)
    _enqueue(
        sync_engine,
        [
            JobSpec("flaky", {"n": n}, queue="flow", serial_key="same", max_attempts=1)
            for n in range(3)
        ],
    )
    result = await WorkerRunner(config(queues={"flow": 3}), registry).run_once()
    assert (result.succeeded, result.dead_lettered) == (2, 1)
    assert seen == [0, 1, 2]
    assert count(sync_engine, "job_locks") == 0


def test_queue_limits_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="global_concurrency"):
        QueueLimits(global_concurrency=0)
    with pytest.raises(ConfigurationError, match="partition_by"):
        QueueLimits(partition_concurrency=2)
    with pytest.raises(ConfigurationError, match="rate_limit"):
        QueueLimits(rate_limit=(5, timedelta(0)))
    with pytest.raises(ConfigurationError, match="rate_limit"):
        QueueLimits(rate_limit=(0, timedelta(seconds=1)))
    with pytest.raises(ConfigurationError, match="queue_limits"):
        WorkerConfig(database_url="postgresql://x/y", queue_limits={"q": 5})  # type: ignore[dict-item]


async def test_config_limits_are_written_at_start(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    limits = QueueLimits(global_concurrency=2, rate_limit=(3, timedelta(seconds=2)))
    registry = TaskRegistry()
    await WorkerRunner(
        config(queues={"flow": 2}, queue_limits={"flow": limits}), registry
    ).run_once()
    [row] = rows(
        sync_engine,
        "SELECT global_concurrency, rate_limit, rate_period_ms FROM {s}.queues WHERE name = 'flow'",
    )
    assert row == {"global_concurrency": 2, "rate_limit": 3, "rate_period_ms": 2000}
