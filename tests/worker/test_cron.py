"""Cron schedules against the database: one job per tick, fill windows, DST, the runner.

The schedulers' clock is driven by the tests (``run_once(now)``); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from backfill_sa.config import WorkerConfig
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.db import Database
from backfill_sa.worker.scheduler import CronScheduler, resolve_schedules
from tests.worker.conftest import execute, rows

UTC = dt.timezone.utc
MINUTE = timedelta(minutes=1)


def _registry(*schedules: tuple[str, dict[str, Any]]) -> TaskRegistry:
    registry = TaskRegistry()
    registry.register("tick", lambda payload, ctx: None)
    for expression, options in schedules:
        registry.cron(expression, "tick", **options)
    return registry


@pytest.fixture
async def databases(database_url: str, schema: str) -> AsyncIterator[list[Database]]:
    """Three separate pools: three workers' worth of connections."""
    dbs = [Database(database_url, schema=schema, pool_size=2) for _ in range(3)]
    yield dbs
    for db in dbs:
        await db.dispose()


def _delete_jobs(engine: Engine) -> list[str]:
    schema = engine.get_execution_options()["schema_translate_map"]["backfill"]
    with engine.begin() as conn:
        return list(conn.scalars(text(f'DELETE FROM "{schema}".jobs RETURNING job_key')))


def _jobs(engine: Engine) -> list[dict[str, Any]]:
    return rows(engine, "SELECT job_key, run_at FROM {s}.jobs ORDER BY run_at")


async def test_three_schedulers_enqueue_exactly_one_job_per_tick(
    databases: list[Database], sync_engine: Engine
) -> None:
    registry = _registry(("* * * * *", {"payload": {"n": 1}, "name": "every-minute"}))
    schedulers = [CronScheduler(db, resolve_schedules(registry)) for db in databases]
    rng = random.Random(15)
    start = dt.datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    now = last_round = start
    finished: list[str] = []
    end = start + timedelta(minutes=40)
    while now < end:
        # Each worker's clock is a little off; they run at the same moment.
        await asyncio.gather(
            *(s.run_once(now + timedelta(milliseconds=rng.randint(-400, 400))) for s in schedulers)
        )
        if rng.random() < 0.3:
            # Jobs that ran are gone from the table: their ticks must not come back.
            finished += _delete_jobs(sync_engine)
        last_round = now
        now += timedelta(seconds=rng.randint(5, 50))
    keys = finished + [r["job_key"] for r in _jobs(sync_engine)]
    # Registered at about 12:00:30; every minute from 12:01 to the last round's
    # (whose clocks were up to 0.4 s either side of it).
    skew = timedelta(milliseconds=400)
    fewest, most = (
        int((t.replace(second=0, microsecond=0) - start.replace(second=0)) / MINUTE)
        for t in (last_round - skew, last_round + skew)
    )
    assert len(keys) == len(set(keys))
    assert fewest <= len(keys) <= most
    assert sorted(keys)[0] == "cron:every-minute:2026-06-01T12:01Z"
    assert sorted(keys) == [
        f"cron:every-minute:{start.replace(second=0) + MINUTE * i:%Y-%m-%dT%H:%MZ}"
        for i in range(1, len(keys) + 1)
    ]
    [state] = rows(sync_engine, "SELECT * FROM {s}.cron_schedules")
    assert state["name"] == "every-minute"
    assert state["expression"] == "* * * * *"
    assert state["last_tick_at"].astimezone(UTC) == start.replace(second=0) + MINUTE * len(keys)


async def test_three_schedulers_at_exactly_the_same_times(
    databases: list[Database], sync_engine: Engine
) -> None:
    registry = _registry(("*/5 * * * *", {}), ("@hourly", {"name": "hourly"}))
    schedulers = [CronScheduler(db, resolve_schedules(registry)) for db in databases]
    start = dt.datetime(2026, 6, 1, 9, 58, tzinfo=UTC)
    results = []
    for step in range(0, 3 * 60 + 1):
        now = start + timedelta(minutes=step)
        results += await asyncio.gather(*(s.run_once(now) for s in schedulers))
    keys = [r["job_key"] for r in _jobs(sync_engine)]
    assert len(keys) == len(set(keys)) == sum(r.enqueued for r in results)
    every_five = sorted(k for k in keys if k.startswith("cron:tick:"))
    hourly = sorted(k for k in keys if k.startswith("cron:hourly:"))
    assert len(every_five) == 36  # 10:00 .. 12:55 (10:00 is after the 09:58 start)
    assert hourly == [
        "cron:hourly:2026-06-01T10:00Z",
        "cron:hourly:2026-06-01T11:00Z",
        "cron:hourly:2026-06-01T12:00Z",
    ]
    assert sum(r.lost_races for r in results) > 0  # the race did happen


async def test_a_restart_inside_the_fill_window_fills_the_missed_ticks_and_no_more(
    db: Database, sync_engine: Engine
) -> None:
    registry = _registry(("*/5 * * * *", {"fill": timedelta(minutes=20)}))
    t0 = dt.datetime(2026, 6, 1, 8, 0, 10, tzinfo=UTC)
    before = CronScheduler(db, resolve_schedules(registry))
    for minute in range(0, 13):
        await before.run_once(t0 + timedelta(minutes=minute))
    assert [r["run_at"].astimezone(UTC).strftime("%H:%M") for r in _jobs(sync_engine)] == [
        "08:05",
        "08:10",
    ]
    # Every worker is down from 08:12 to 09:00:30; a new one starts.
    after = CronScheduler(db, resolve_schedules(registry))
    restart = dt.datetime(2026, 6, 1, 9, 0, 30, tzinfo=UTC)
    result = await after.run_once(restart)
    assert result.enqueued == 4
    assert result.skipped == 6  # 08:15 .. 08:40 are older than 20 minutes
    assert [r["run_at"].astimezone(UTC).strftime("%H:%M") for r in _jobs(sync_engine)] == [
        "08:05",
        "08:10",
        "08:45",
        "08:50",
        "08:55",
        "09:00",
    ]
    assert (await after.run_once(restart + MINUTE)).enqueued == 0
    assert (await after.run_once(restart + 5 * MINUTE)).enqueued == 1


async def test_without_fill_only_a_tick_within_the_grace_is_enqueued_after_downtime(
    db: Database, sync_engine: Engine
) -> None:
    registry = _registry(("*/5 * * * *", {}))
    t0 = dt.datetime(2026, 6, 1, 8, 0, 10, tzinfo=UTC)
    await CronScheduler(db, resolve_schedules(registry)).run_once(t0)
    result = await CronScheduler(db, resolve_schedules(registry)).run_once(
        dt.datetime(2026, 6, 1, 9, 0, 40, tzinfo=UTC)
    )
    assert (result.enqueued, result.skipped) == (1, 11)
    assert [r["job_key"] for r in _jobs(sync_engine)] == ["cron:tick:2026-06-01T09:00Z"]


async def test_a_big_fill_is_enqueued_in_chunks(db: Database, sync_engine: Engine) -> None:
    registry = _registry(("* * * * *", {"fill": timedelta(days=1)}))
    t0 = dt.datetime(2026, 6, 1, 0, 0, 5, tzinfo=UTC)
    scheduler = CronScheduler(db, resolve_schedules(registry), max_ticks=100)
    await scheduler.run_once(t0)
    result = await scheduler.run_once(t0 + timedelta(hours=5))
    assert result.enqueued == 300
    assert len({r["job_key"] for r in _jobs(sync_engine)}) == 300


async def _drive(
    scheduler: CronScheduler, start: dt.datetime, end: dt.datetime, step: timedelta
) -> None:
    now = start
    while now <= end:
        await scheduler.run_once(now)
        now += step


def _local(engine: Engine, zone: str) -> list[str]:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    return [
        f"{r['run_at'].astimezone(tz):%H:%M%z}"
        for r in rows(engine, "SELECT run_at FROM {s}.jobs ORDER BY run_at")
    ]


async def test_spring_forward_in_berlin(db: Database, sync_engine: Engine) -> None:
    registry = _registry(
        ("*/30 * * * *", {"timezone": "Europe/Berlin", "name": "half-hourly"}),
        ("30 2 * * *", {"timezone": "Europe/Berlin", "name": "at-0230"}),
    )
    scheduler = CronScheduler(db, resolve_schedules(registry))
    # 2026-03-29: at 02:00 CET (01:00 UTC) the clocks jump to 03:00 CEST.
    await _drive(
        scheduler,
        dt.datetime(2026, 3, 28, 23, 50, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 3, 0, tzinfo=UTC),
        MINUTE,
    )
    assert _local(sync_engine, "Europe/Berlin") == [
        "01:00+0100",
        "01:30+0100",
        "03:00+0200",
        "03:30+0200",  # half-hourly and at-0230 (the 02:30 that did not exist)
        "03:30+0200",
        "04:00+0200",
        "04:30+0200",
        "05:00+0200",
    ]
    keys = [r["job_key"] for r in rows(sync_engine, "SELECT job_key FROM {s}.jobs")]
    assert "cron:at-0230:2026-03-29T01:30Z" in keys


async def test_fall_back_in_berlin(db: Database, sync_engine: Engine) -> None:
    registry = _registry(
        ("*/30 * * * *", {"timezone": "Europe/Berlin", "name": "half-hourly"}),
        ("30 2 * * *", {"timezone": "Europe/Berlin", "name": "at-0230"}),
    )
    scheduler = CronScheduler(db, resolve_schedules(registry))
    # 2026-10-25: at 03:00 CEST (01:00 UTC) the clocks go back to 02:00 CET.
    await _drive(
        scheduler,
        dt.datetime(2026, 10, 24, 23, 50, tzinfo=UTC),
        dt.datetime(2026, 10, 25, 2, 40, tzinfo=UTC),
        MINUTE,
    )
    half_hourly = [
        f"{r['run_at'].astimezone(UTC):%H:%M}"
        for r in rows(
            sync_engine, "SELECT run_at FROM {s}.jobs WHERE job_key LIKE 'cron:half%' ORDER BY 1"
        )
    ]
    # Every 30 minutes of real time through the repeated hour.
    assert half_hourly == ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30"]
    daily = rows(sync_engine, "SELECT run_at FROM {s}.jobs WHERE job_key LIKE 'cron:at-0230%'")
    # 02:30 happened twice; the job ran once, at the first (CEST) one.
    assert [f"{r['run_at'].astimezone(UTC):%H:%M}" for r in daily] == ["00:30"]


async def test_the_worker_runs_the_schedule_and_its_jobs(
    config: Callable[..., WorkerConfig], sync_engine: Engine
) -> None:
    seen: list[tuple[dict[str, Any], str, dt.datetime]] = []

    async def report(payload: dict[str, Any], ctx: JobContext) -> None:
        seen.append((payload, ctx.queue, ctx.run_at))

    registry = TaskRegistry()
    registry.register("report", report, queue="fast")
    registry.cron("* * * * *", "report", payload={"kind": "daily"}, fill=timedelta(minutes=10))
    # As if the schedule had last run three and a half minutes ago.
    now = dt.datetime.now(UTC)
    execute(
        sync_engine,
        "INSERT INTO {s}.cron_schedules (name, expression, timezone, last_tick_at)"
        " VALUES ('report', '* * * * *', 'UTC', :last)",
        last=now - timedelta(minutes=3, seconds=30),
    )
    runner = WorkerRunner(config(queues={"fast": 2}), registry)
    result = await runner.run_once()
    assert result.succeeded >= 3
    assert all(p == {"kind": "daily"} and q == "fast" for p, q, _ in seen)
    run_ats = sorted(r for _, _, r in seen)
    assert all(b - a == MINUTE for a, b in itertools.pairwise(run_ats))
    [state] = rows(sync_engine, "SELECT last_tick_at FROM {s}.cron_schedules")
    assert state["last_tick_at"] == run_ats[-1]


def test_a_schedule_for_an_unregistered_task_is_refused_at_start() -> None:
    from backfill_sa.errors import ConfigurationError

    registry = TaskRegistry()
    registry.cron("@daily", "missing")
    with pytest.raises(ConfigurationError, match="'missing', which is not registered"):
        resolve_schedules(registry)


async def test_cron_jobs_take_the_tasks_serial_key(db: Database, sync_engine: Engine) -> None:
    registry = TaskRegistry()
    registry.register("sync", lambda payload, ctx: None, serial_key=lambda p: f"acct:{p['a']}")
    registry.cron("@hourly", "sync", payload={"a": 7})
    scheduler = CronScheduler(db, resolve_schedules(registry))
    start = dt.datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    await scheduler.run_once(start)
    await scheduler.run_once(start + timedelta(minutes=31))
    [job] = rows(sync_engine, "SELECT serial_key, metadata FROM {s}.jobs")
    assert job == {"serial_key": "acct:7", "metadata": {"backfill": {"cron": "sync"}}}
