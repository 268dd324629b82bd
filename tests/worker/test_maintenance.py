"""Maintenance services, each through its run_once(): heartbeat, leader, promoter, rescuer."""

from __future__ import annotations

import asyncio
import datetime as dt
from datetime import timedelta

import asyncpg
from sqlalchemy import Engine

from backfill_sa.dburl import libpq_dsn
from backfill_sa.enqueue import JobSpec
from backfill_sa.notify import channel_for
from backfill_sa.statements.worker_sql import job_claim_batch
from backfill_sa.worker.db import Database
from backfill_sa.worker.maintenance import Heartbeat, LeaderElection, Promoter, Rescuer
from tests.worker.conftest import add, add_jobs, count, dead_letters, execute, job, rows, state_of

UTC = dt.timezone.utc
HOUR = timedelta(hours=1)


def _rescuer(db: Database) -> Rescuer:
    return Rescuer(db, heartbeat_expiry=timedelta(seconds=60), stale_job_lock_timeout=HOUR)


async def _claim(db: Database, worker_id: str, limit: int = 10, queue: str = "bulk") -> list[int]:
    claimed = await db.execute(
        job_claim_batch, {"claim_queue": queue, "limit": limit, "worker_id": worker_id}
    )
    return sorted(r["id"] for r in claimed)


async def test_only_one_of_two_candidates_leads_until_the_lease_expires(
    db: Database, sync_engine: Engine
) -> None:
    a = LeaderElection(db, "worker-a", ttl=HOUR)
    b = LeaderElection(db, "worker-b", ttl=HOUR)

    assert await a.run_once() is True
    assert await b.run_once() is False
    [lease] = rows(sync_engine, "SELECT * FROM {s}.leader")
    assert lease["worker_id"] == "worker-a"

    # Renewal keeps the election time and pushes the expiry forward.
    execute(sync_engine, "UPDATE {s}.leader SET expires_at = now() + interval '1 minute'")
    assert await a.run_once() is True
    [renewed] = rows(sync_engine, "SELECT *, expires_at - now() AS left FROM {s}.leader")
    assert renewed["elected_at"] == lease["elected_at"]
    assert renewed["left"] > timedelta(minutes=59)

    execute(sync_engine, "UPDATE {s}.leader SET expires_at = now() - interval '1 second'")
    assert await b.run_once() is True
    assert await a.run_once() is False
    assert a.is_leader is False
    assert b.is_leader is True
    [taken] = rows(sync_engine, "SELECT * FROM {s}.leader")
    assert taken["worker_id"] == "worker-b"


async def test_resigning_hands_the_role_over_at_once(db: Database) -> None:
    a = LeaderElection(db, "worker-a", ttl=HOUR)
    b = LeaderElection(db, "worker-b", ttl=HOUR)
    assert await a.run_once()

    await b.resign()  # not the leader: changes nothing
    assert await b.run_once() is False

    await a.resign()
    assert await b.run_once() is True


async def test_concurrent_elections_make_exactly_one_leader(db: Database) -> None:
    candidates = [LeaderElection(db, f"worker-{i}", ttl=HOUR) for i in range(8)]

    won = await asyncio.gather(*(c.run_once() for c in candidates))

    assert sorted(won) == [False] * 7 + [True]


async def test_heartbeat_registers_renews_and_unregisters(
    db: Database, sync_engine: Engine
) -> None:
    heartbeat = Heartbeat(db, "worker-h", {"bulk": 3, "fast": 1})

    await heartbeat.run_once()
    [row] = rows(sync_engine, "SELECT * FROM {s}.workers")
    assert row["id"] == "worker-h"
    assert row["queues"] == {"bulk": 3, "fast": 1}
    assert row["pid"] > 0

    execute(sync_engine, "UPDATE {s}.workers SET last_heartbeat_at = now() - interval '1 hour'")
    await heartbeat.run_once()
    [renewed] = rows(sync_engine, "SELECT now() - last_heartbeat_at AS age FROM {s}.workers")
    assert renewed["age"] < timedelta(minutes=1)

    await heartbeat.unregister()
    assert count(sync_engine, "workers") == 0


async def test_promoter_makes_due_jobs_available_and_notifies_their_queues(
    db: Database, database_url: str, schema: str, sync_engine: Engine
) -> None:
    now = dt.datetime.now(UTC)
    due_a, due_b, future = add_jobs(
        sync_engine,
        [
            JobSpec("t", queue="a", run_at=now + HOUR),
            JobSpec("t", queue="b", run_at=now + HOUR),
            JobSpec("t", queue="c", run_at=now + HOUR),
        ],
    )
    execute(
        sync_engine,
        "UPDATE {s}.jobs SET run_at = now() - interval '1 second' WHERE id = ANY(:ids)",
        ids=[due_a, due_b],
    )
    heard: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(libpq_dsn(database_url))
    try:
        await conn.add_listener(channel_for(schema), lambda *args: heard.put_nowait(args[3]))

        queues = await Promoter(db).run_once()

        assert queues == {"a", "b"}
        notified = {await asyncio.wait_for(heard.get(), timeout=5) for _ in range(2)}
        assert notified == {"a", "b"}
    finally:
        await conn.close()
    states = {r["id"]: r["state"] for r in rows(sync_engine, "SELECT id, state FROM {s}.jobs")}
    assert states == {due_a: "available", due_b: "available", future: "scheduled"}
    assert await Promoter(db).run_once() == set()


async def test_rescuer_returns_claims_of_a_dead_worker_only(
    db: Database, sync_engine: Engine
) -> None:
    add_jobs(sync_engine, [JobSpec("t", {"n": n}) for n in range(4)])
    alive = Heartbeat(db, "alive", {"bulk": 2})
    await alive.run_once()
    await Heartbeat(db, "dead", {"bulk": 2}).run_once()
    alive_ids = await _claim(db, "alive", limit=2)
    dead_ids = await _claim(db, "dead", limit=2)
    execute(
        sync_engine,
        "UPDATE {s}.workers SET last_heartbeat_at = now() - interval '61 seconds'"
        " WHERE id = 'dead'",
    )

    result = await _rescuer(db).run_once()

    assert (result.rescued, result.dead_lettered) == (2, 0)
    for job_id in dead_ids:
        row = job(sync_engine, job_id)
        assert row is not None
        assert (row["state"], row["locked_by"], row["attempts"], row["lease"]) == (
            "available",
            None,
            1,  # the lost attempt stays counted
            1,
        )
        assert row["last_error"]["message"] == "worker dead lost its claim"
    for job_id in alive_ids:
        row = job(sync_engine, job_id)
        assert row is not None
        assert (row["state"], row["locked_by"]) == ("running", "alive")
    assert (await _rescuer(db).run_once()).rescued == 0


async def test_rescuer_returns_claims_older_than_the_stale_lock_timeout(
    db: Database, sync_engine: Engine
) -> None:
    job_id = add(sync_engine, "t")
    await Heartbeat(db, "slowpoke", {"bulk": 1}).run_once()
    await _claim(db, "slowpoke")

    assert (await _rescuer(db).run_once()).rescued == 0  # live and recent

    execute(sync_engine, "UPDATE {s}.jobs SET locked_at = now() - interval '61 minutes'")
    assert (await _rescuer(db).run_once()).rescued == 1
    row = job(sync_engine, job_id)
    assert row is not None
    assert row["state"] == "available"


async def test_rescuer_dead_letters_a_lost_claim_on_its_last_attempt(
    db: Database, sync_engine: Engine
) -> None:
    job_id = add(sync_engine, "t", max_attempts=1)
    await _claim(db, "gone")  # no heartbeat row at all: counts as dead

    result = await _rescuer(db).run_once()

    assert (result.rescued, result.dead_lettered) == (0, 1)
    assert state_of(sync_engine, job_id) is None
    [entry] = dead_letters(sync_engine)
    assert entry["original_job_id"] == job_id
    assert entry["failure_reason"] == "max_attempts_exceeded"
    assert entry["failure_count"] == 1


async def test_rescuer_forgets_workers_silent_for_ten_expiries(
    db: Database, sync_engine: Engine
) -> None:
    await Heartbeat(db, "old", {"bulk": 1}).run_once()
    await Heartbeat(db, "recent", {"bulk": 1}).run_once()
    execute(
        sync_engine,
        "UPDATE {s}.workers SET last_heartbeat_at = now() - interval '11 minutes' WHERE id = 'old'",
    )

    result = await _rescuer(db).run_once()

    assert result.workers_forgotten == 1
    assert [r["id"] for r in rows(sync_engine, "SELECT id FROM {s}.workers")] == ["recent"]
