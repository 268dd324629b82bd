"""Enqueue joins the caller's transaction: rollback, commit, savepoints, and NOTIFY on commit."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, Integer, any_, column, event, func, literal, select, table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.dburl import libpq_dsn
from backfill_sa.enqueue import (
    EnqueueOutcome,
    EnqueueResult,
    JobSpec,
    enqueue,
    enqueue_async,
    enqueue_batch,
    enqueue_many,
    enqueue_many_async,
)
from backfill_sa.models import Job
from backfill_sa.notify import channel_for

UTC = dt.timezone.utc
# Upper bound for a notification that should arrive; the tests never wait for one
# that should not (they wait for a later marker instead, delivered in commit order).
DELIVERY_TIMEOUT = 10.0


def _future() -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(hours=1)


def _job_ids(engine: Engine) -> list[int]:
    """Committed job ids, read on a connection of its own."""
    with engine.connect() as conn:
        return list(conn.execute(select(Job.id).order_by(Job.id)).scalars())


@pytest.fixture
def listener(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection LISTENing on the schema's channel."""
    conn = psycopg.connect(libpq_dsn(database_url), autocommit=True)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(schema))))
    yield conn
    conn.close()


def _received_until(listener: psycopg.Connection[Any], marker: str, schema: str) -> list[str]:
    """Payloads received on the schema's channel, up to and including ``marker``."""
    payloads: list[str] = []
    for note in listener.notifies(timeout=DELIVERY_TIMEOUT):
        assert note.channel == channel_for(schema)
        payloads.append(note.payload)
        if note.payload == marker:
            break
    return payloads


def _commit_marker(engine: Engine, marker: str = "marker") -> None:
    with Session(engine) as session, session.begin():
        enqueue(session, "t", queue=marker)


@contextmanager
def _counting(engine: Engine, name: str) -> Iterator[list[object]]:
    calls: list[object] = []

    def record(*args: object) -> None:
        calls.append(args)

    target: Any = engine.pool if name == "checkout" else engine
    event.listen(target, name, record)
    try:
        yield calls
    finally:
        event.remove(target, name, record)


# --- rollback, commit, savepoints -------------------------------------------------


def test_rollback_means_no_job(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        result = enqueue(session, "t", {"a": 1})
        assert session.get(Job, result.id) is not None
        session.rollback()
    assert _job_ids(sync_engine) == []


async def test_rollback_means_no_job_async(async_engine: AsyncEngine) -> None:
    async with AsyncSession(async_engine) as session:
        await enqueue_async(session, "t")
        await enqueue_many_async(session, [JobSpec("t"), JobSpec("u")])
        await session.rollback()
        assert (await session.execute(select(Job.id))).all() == []


def test_enqueue_does_not_commit_and_uses_the_sessions_only_connection(
    sync_engine: Engine,
) -> None:
    with (
        _counting(sync_engine, "commit") as commits,
        _counting(sync_engine, "checkout") as checkouts,
        Session(sync_engine) as session,
    ):
        first = enqueue(session, "t", job_key="k")
        enqueue_many(session, [JobSpec("t"), JobSpec("t")])
        session.add(Job(task="orm"))
        session.flush()
        assert session.in_transaction()
        assert commits == []
        assert _job_ids(sync_engine) == []  # invisible to other connections
        assert len(checkouts) == 2  # ours, plus the one _job_ids just used
        session.commit()
    assert len(commits) == 1
    assert first.id in _job_ids(sync_engine)
    assert len(_job_ids(sync_engine)) == 4


async def test_commit_makes_the_job_visible_async(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    async with AsyncSession(async_engine) as session:
        result = await enqueue_async(session, "t")
        assert session.in_transaction()
        assert _job_ids(sync_engine) == []
        await session.commit()
    assert _job_ids(sync_engine) == [result.id]


def test_rolled_back_savepoint_drops_only_its_jobs(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        kept = enqueue(session, "t", {"n": 1})
        nested = session.begin_nested()
        dropped = enqueue(session, "t", {"n": 2})
        dropped_many = enqueue_many(session, [JobSpec("t"), JobSpec("t")])
        nested.rollback()
        with session.begin_nested():
            kept_nested = enqueue(session, "t", {"n": 3})
        also_kept = enqueue(session, "t", {"n": 4})
    ids = _job_ids(sync_engine)
    assert ids == [kept.id, kept_nested.id, also_kept.id]
    assert dropped.id not in ids
    assert not {r.id for r in dropped_many} & set(ids)


async def test_rolled_back_savepoint_drops_only_its_jobs_async(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        kept = await enqueue_async(session, "t")
        nested = await session.begin_nested()
        await enqueue_async(session, "t")
        await nested.rollback()
        async with session.begin_nested():
            kept_nested = await enqueue_async(session, "t")
    assert _job_ids(sync_engine) == [kept.id, kept_nested.id]


def test_rollback_after_a_successful_replace_restores_the_job(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        original = enqueue(session, "t", {"v": 1}, job_key="k")
    with Session(sync_engine) as session:
        replaced = enqueue(session, "t", {"v": 2}, job_key="k", queue="other")
        assert replaced.outcome is EnqueueOutcome.REPLACED
        session.rollback()
    with Session(sync_engine) as session:
        job = session.execute(select(Job)).scalar_one()
        assert (job.id, job.payload, job.queue) == (original.id, {"v": 1}, "bulk")


def test_rollback_after_taking_a_key_from_a_running_job_restores_it(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        running = enqueue(session, "t", job_key="k")
        job = session.get_one(Job, running.id)
        job.state, job.attempts = "running", 1
    with Session(sync_engine) as session:
        assert enqueue(session, "t", job_key="k").outcome is EnqueueOutcome.INSERTED
        session.rollback()
    with Session(sync_engine) as session:
        job = session.execute(select(Job)).scalar_one()
        assert (job.id, job.job_key, job.max_attempts) == (running.id, "k", 8)


_activity = table("pg_stat_activity", column("pid", Integer), schema="pg_catalog")


def _wait_until_blocked_by(engine: Engine, pid: int) -> None:
    """Return once some backend waits on a lock held by backend ``pid`` (10 s at most)."""
    blocked = (
        select(func.count())
        .select_from(_activity)
        .where(literal(pid) == any_(func.pg_blocking_pids(_activity.c.pid)))
    )
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute(blocked).scalar_one():
                return
            conn.rollback()  # a fresh snapshot of pg_stat_activity
    raise AssertionError(f"nothing waited on backend {pid}")


def _enqueue_alone(engine: Engine, mode: Any) -> EnqueueResult:
    with Session(engine) as session, session.begin():
        return enqueue(session, "t", {"v": 2}, job_key="k", job_key_mode=mode)


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [("replace", EnqueueOutcome.REPLACED), ("unsafe_dedupe", EnqueueOutcome.UNCHANGED)],
)
def test_a_concurrent_enqueue_of_the_same_key_waits_for_the_first_commit(
    sync_engine: Engine, mode: str, outcome: EnqueueOutcome
) -> None:
    with Session(sync_engine) as first, ThreadPoolExecutor(1) as pool:
        created = enqueue(first, "t", {"v": 1}, job_key="k")
        pid = first.execute(select(func.pg_backend_pid())).scalar_one()
        second = pool.submit(_enqueue_alone, sync_engine, mode)
        _wait_until_blocked_by(sync_engine, pid)
        first.commit()
        assert second.result(timeout=DELIVERY_TIMEOUT) == EnqueueResult(created.id, outcome)
    with Session(sync_engine) as session:
        job = session.execute(select(Job)).scalar_one()
        assert job.payload == ({"v": 2} if mode == "replace" else {"v": 1})


# --- NOTIFY ---------------------------------------------------------------------


def test_notify_is_delivered_on_commit(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "t", queue="fast")
    assert _received_until(listener, "fast", schema) == ["fast"]


async def test_notify_is_delivered_on_commit_async(
    async_engine: AsyncEngine, listener: psycopg.Connection[Any], schema: str
) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        await enqueue_async(session, "t", queue="fast")
    assert _received_until(listener, "fast", schema) == ["fast"]


def test_on_an_autocommit_engine_each_enqueue_commits_by_itself(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    autocommit = sync_engine.execution_options(isolation_level="AUTOCOMMIT")
    with Session(autocommit) as session:
        first = enqueue(session, "t", queue="fast")
        assert _job_ids(sync_engine) == [first.id]  # committed, before any session.commit
        assert _received_until(listener, "fast", schema) == ["fast"]
        second = enqueue(session, "t", queue="fast", job_key="k")
        session.rollback()  # nothing to roll back: the job is already in
    assert _job_ids(sync_engine) == [first.id, second.id]


async def test_on_an_autocommit_engine_each_enqueue_commits_by_itself_async(
    async_engine: AsyncEngine, sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    autocommit = async_engine.execution_options(isolation_level="AUTOCOMMIT")
    async with AsyncSession(autocommit) as session:
        job = await enqueue_async(session, "t", queue="fast")
        assert _job_ids(sync_engine) == [job.id]
        assert _received_until(listener, "fast", schema) == ["fast"]
        await session.rollback()
    assert _job_ids(sync_engine) == [job.id]


def test_no_notify_on_rollback_or_for_scheduled_jobs(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    with Session(sync_engine) as session:
        enqueue(session, "t", queue="rolled_back")
        enqueue_many(session, [JobSpec("t", queue="rolled_back_many")] * 2)
        session.rollback()
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "t", queue="scheduled", run_at=_future())
        enqueue_many(session, [JobSpec("t", queue="scheduled_many", run_at=_future())] * 2)
        nested = session.begin_nested()
        enqueue(session, "t", queue="rolled_back_savepoint")
        nested.rollback()
    _commit_marker(sync_engine)
    assert _received_until(listener, "marker", schema) == ["marker"]


async def test_no_notify_on_rollback_async(
    async_engine: AsyncEngine, sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    async with AsyncSession(async_engine) as session:
        await enqueue_async(session, "t", queue="rolled_back")
        await session.rollback()
    _commit_marker(sync_engine)
    assert _received_until(listener, "marker", schema) == ["marker"]


def test_enqueue_many_notifies_each_queue_with_runnable_jobs_once(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    specs = [JobSpec("t", queue=q) for q in ("fast", "bulk", "fast", "bulk", "fast")]
    specs.append(JobSpec("t", queue="later", run_at=_future()))
    with Session(sync_engine) as session, session.begin():
        enqueue_many(session, specs)
    _commit_marker(sync_engine)
    received = _received_until(listener, "marker", schema)
    assert sorted(received) == ["bulk", "fast", "marker"]


def test_enqueue_batch_notifies_its_queue_once_on_commit_only(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    with Session(sync_engine) as session, session.begin():
        enqueue_batch(session, "t", [{"i": 1}], queue="dropped")
        session.rollback()
    with Session(sync_engine) as session, session.begin():
        enqueue_batch(session, "t", [{"i": i} for i in range(5)], queue="fast")
        enqueue_batch(session, "t", [{"i": 1}, {"i": 2}], queue="later", run_at=_future())
    _commit_marker(sync_engine)
    assert _received_until(listener, "marker", schema) == ["fast", "marker"]


def test_replaced_job_notifies_and_unchanged_one_does_not(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "t", queue="first", job_key="k", run_at=_future())
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "t", queue="deduped", job_key="k", job_key_mode="unsafe_dedupe")
    with Session(sync_engine) as session, session.begin():
        assert enqueue(session, "t", queue="replaced", job_key="k").outcome.value == "replaced"
    assert _received_until(listener, "replaced", schema) == ["replaced"]


def test_orm_added_job_notifies_on_commit_only(
    sync_engine: Engine, listener: psycopg.Connection[Any], schema: str
) -> None:
    with Session(sync_engine) as session:
        session.add(Job(task="t", queue="orm_rolled_back"))
        session.flush()
        session.rollback()
    with Session(sync_engine) as session, session.begin():
        session.add(Job(task="t", queue="orm_scheduled", run_at=_future()))
        session.add(Job(task="t", queue="orm"))
    assert _received_until(listener, "orm", schema) == ["orm"]


async def test_orm_added_job_notifies_on_commit_async(
    async_engine: AsyncEngine, listener: psycopg.Connection[Any], schema: str
) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        session.add(Job(task="t", queue="orm_async"))
    assert _received_until(listener, "orm_async", schema) == ["orm_async"]
