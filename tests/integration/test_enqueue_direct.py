"""The single enqueue's direct path: the insert on the caller's DBAPI connection.

``enqueue``/``enqueue_async`` without a ``job_key`` run the prebuilt insert on a DBAPI
cursor of the session's own connection when nothing listens to the engine's
statements. These tests run that path on both drivers (psycopg sync Session, asyncpg
AsyncSession) and check it stays in the caller's transaction: first statement of a
transaction, inside savepoints, after rollbacks, with the NOTIFY in the statement,
errors wrapped as SQLAlchemy's, and one compiled statement per schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from backfill_sa.dburl import libpq_dsn, sync_url
from backfill_sa.enqueue import EnqueueOutcome, enqueue, enqueue_async
from backfill_sa.job_writer import _INFO_KEY
from backfill_sa.migrations import upgrade
from backfill_sa.models import Job
from backfill_sa.notify import channel_for

INSERTED = EnqueueOutcome.INSERTED


def _committed(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r.task, r.queue) for r in conn.execute(select(Job.task, Job.queue).order_by(Job.id))
        ]


def _took_direct_path(session: Session) -> bool:
    """Whether the session's connection holds the compiled direct insert."""
    return _INFO_KEY in session.connection().info


@pytest.fixture
def listener(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(libpq_dsn(database_url), autocommit=True)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_for(schema))))
    yield conn
    conn.close()


def _payloads(listener: psycopg.Connection[Any], marker: str) -> list[str]:
    got: list[str] = []
    for note in listener.notifies(timeout=10.0):
        got.append(note.payload)
        if note.payload == marker:
            break
    return got


# --- psycopg, sync Session --------------------------------------------------------


def test_sync_direct_path_in_savepoints_and_after_rollback(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        first = enqueue(session, "first", {"a": 1})  # the transaction's first statement
        assert first.outcome is INSERTED
        assert _took_direct_path(session)
        session.rollback()
        kept = enqueue(session, "kept", {"b": 2}, queue="q1")  # after a rollback
        nested = session.begin_nested()
        enqueue(session, "dropped", queue="q2")
        nested.rollback()
        with session.begin_nested():
            inner = enqueue(session, "inner", queue="q3")
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 2
        session.commit()
    assert _committed(sync_engine) == [("kept", "q1"), ("inner", "q3")]
    with Session(sync_engine) as session:
        stored = session.execute(select(Job).where(Job.id == kept.id)).scalar_one()
        assert (stored.payload, stored.state, stored.max_attempts) == ({"b": 2}, "available", 8)
        assert session.get(Job, inner.id) is not None


def test_sync_direct_path_notifies_on_commit_only(
    sync_engine: Engine, listener: psycopg.Connection[Any]
) -> None:
    with Session(sync_engine) as session:
        enqueue(session, "t", queue="rolled_back")
        assert _took_direct_path(session)
        session.rollback()
        enqueue(session, "t", queue="committed")
        session.commit()
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "t", queue="marker")
    assert _payloads(listener, "marker") == ["committed", "marker"]


def test_sync_database_error_is_wrapped_and_the_session_recovers(
    database_url: str, sync_engine: Engine
) -> None:
    missing = create_engine(
        sync_url(database_url),
        execution_options={"schema_translate_map": {"backfill": f"none_{uuid.uuid4().hex[:8]}"}},
    )
    try:
        with Session(missing) as session:
            with pytest.raises(ProgrammingError) as info:
                enqueue(session, "t")
            assert isinstance(info.value, DBAPIError)
            assert isinstance(info.value.orig, psycopg.errors.UndefinedTable)
            session.rollback()
            assert session.execute(select(1)).scalar_one() == 1
    finally:
        missing.dispose()


def test_one_compiled_statement_per_schema_on_a_shared_connection(
    database_url: str, admin_engine: Engine, schema: str
) -> None:
    other = f"t_{uuid.uuid4().hex[:12]}"
    upgrade(admin_engine, schema=other)
    engine = create_engine(sync_url(database_url), pool_size=1, max_overflow=0)
    try:
        for target, task in ((schema, "a"), (other, "b"), (schema, "c")):
            bound = engine.execution_options(schema_translate_map={"backfill": target})
            with Session(bound) as session, session.begin():
                enqueue(session, task)
                compiled = session.connection().info[_INFO_KEY]
        assert set(compiled) == {schema, other}
        with engine.connect() as conn:
            for target, tasks in ((schema, ["a", "c"]), (other, ["b"])):
                rows = conn.execute(text(f'SELECT task FROM "{target}".jobs ORDER BY id'))
                assert list(rows.scalars()) == tasks
    finally:
        engine.dispose()
        with admin_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{other}" CASCADE'))


def test_listeners_see_the_statement(sync_engine: Engine) -> None:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        with Session(sync_engine) as session, session.begin():
            enqueue(session, "t")
            assert not _took_direct_path(session)
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    assert len(seen) == 1
    assert "pg_notify" in seen[0]


# --- asyncpg, AsyncSession --------------------------------------------------------


async def test_async_direct_path_in_savepoints_and_after_rollback(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    async with AsyncSession(async_engine) as session:
        first = await enqueue_async(session, "first")  # first statement: starts the txn
        assert first.outcome is INSERTED
        assert await session.run_sync(_took_direct_path)
        await session.rollback()
        await enqueue_async(session, "kept", {"b": 2}, queue="q1")
        nested = await session.begin_nested()
        await enqueue_async(session, "dropped", queue="q2")
        await nested.rollback()
        async with session.begin_nested():
            await enqueue_async(session, "inner", queue="q3")
        count = await session.execute(select(func.count()).select_from(Job))
        assert count.scalar_one() == 2
        await session.commit()
    assert _committed(sync_engine) == [("kept", "q1"), ("inner", "q3")]


async def test_async_direct_path_notifies_from_the_insert_on_commit_only(
    async_engine: AsyncEngine, sync_engine: Engine, listener: psycopg.Connection[Any]
) -> None:
    async with AsyncSession(async_engine) as session:
        await enqueue_async(session, "t", queue="rolled_back")
        await session.rollback()
        await enqueue_async(session, "t", queue="committed")
        assert await session.run_sync(_took_direct_path)
        await session.commit()
    with Session(sync_engine) as sync_session, sync_session.begin():
        enqueue(sync_session, "t", queue="marker")
    assert _payloads(listener, "marker") == ["committed", "marker"]


async def test_async_database_error_is_wrapped_and_the_session_recovers(
    async_engine: AsyncEngine,
) -> None:
    missing = async_engine.execution_options(
        schema_translate_map={"backfill": f"none_{uuid.uuid4().hex[:8]}"}
    )
    async with AsyncSession(missing) as session:
        with pytest.raises(ProgrammingError) as info:
            await enqueue_async(session, "t")
        assert isinstance(info.value, DBAPIError)
        assert info.value.orig is not None
        assert "UndefinedTable" in type(info.value.orig.__cause__).__name__
        await session.rollback()
        assert (await session.execute(select(1))).scalar_one() == 1


# --- psycopg's async dialect: also a DBAPI cursor, also the direct path -------------


async def test_async_psycopg_direct_path(
    database_url: str, schema: str, sync_engine: Engine
) -> None:
    engine = create_async_engine(
        sync_url(database_url), execution_options={"schema_translate_map": {"backfill": schema}}
    )
    try:
        async with AsyncSession(engine) as session:
            assert engine.dialect.driver == "psycopg"
            await enqueue_async(session, "first")
            assert await session.run_sync(_took_direct_path)
            await session.rollback()
            await enqueue_async(session, "kept")
            nested = await session.begin_nested()
            await enqueue_async(session, "dropped")
            await nested.rollback()
            await session.commit()
        missing = engine.execution_options(schema_translate_map={"backfill": "no_such_schema"})
        async with AsyncSession(missing) as session:
            with pytest.raises(ProgrammingError):
                await enqueue_async(session, "t")
            await session.rollback()
    finally:
        await engine.dispose()
    assert _committed(sync_engine) == [("kept", "bulk")]
