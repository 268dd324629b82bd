"""``upgrade(engine)`` at application start-up: sync and async engines, no-op at head, races."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queue_module
from collections.abc import Callable
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from backfill_sa.dburl import async_url, sync_url
from backfill_sa.errors import ConfigurationError, MigrationError
from backfill_sa.migrations import upgrade, upgrade_async
from backfill_sa.migrations.runner import run_migrate
from tests.migrations.helpers import HEAD, OUR_TABLES, tables_in, versions_in

PROCESSES = 4


def test_sync_engine_upgrades_now(admin_engine: Engine, fresh_schema: str) -> None:
    assert upgrade(admin_engine, schema=fresh_schema) is None
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}
    assert versions_in(admin_engine, fresh_schema) == {HEAD}


async def test_async_engine_returns_an_awaitable(
    admin_engine: Engine, database_url: str, fresh_schema: str
) -> None:
    engine = create_async_engine(async_url(database_url))
    try:
        pending = upgrade(engine, schema=fresh_schema)
        # Nothing has run before the await.
        assert tables_in(admin_engine, fresh_schema) == set()
        await pending
    finally:
        await engine.dispose()
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}


async def test_upgrade_async_is_kept(
    admin_engine: Engine, database_url: str, fresh_schema: str
) -> None:
    engine = create_async_engine(async_url(database_url))
    try:
        await upgrade_async(engine, schema=fresh_schema)
    finally:
        await engine.dispose()
    assert versions_in(admin_engine, fresh_schema) == {HEAD}


def test_schema_comes_from_the_engines_translate_map(
    admin_engine: Engine, database_url: str, fresh_schema: str
) -> None:
    engine = create_engine(
        sync_url(database_url),
        execution_options={"schema_translate_map": {"backfill": fresh_schema}},
    )
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}


def test_no_op_at_head(admin_engine: Engine, fresh_schema: str) -> None:
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.begin() as conn:
        insert = text(f'INSERT INTO "{fresh_schema}".jobs (task, queue) VALUES (:t, :q)')
        conn.execute(insert, {"t": "t", "q": "q"})
    probe = text(
        f'SELECT (SELECT xmin::text FROM "{fresh_schema}".alembic_version), '
        f'(SELECT count(*) FROM "{fresh_schema}".jobs)'
    )
    with admin_engine.connect() as conn:
        before = conn.execute(probe).one()
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.connect() as conn:
        assert conn.execute(probe).one() == before == (before[0], 1)


def test_invalid_schema_is_a_configuration_error(admin_engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"^schema: 'no such' must be"):
        upgrade(admin_engine, schema="no such")


def test_failure_is_a_migration_error(admin_engine: Engine, fresh_schema: str) -> None:
    with pytest.raises(MigrationError, match=rf"upgrading schema '{fresh_schema}' to 'zz'"):
        upgrade(admin_engine, schema=fresh_schema, revision="zz")
    assert tables_in(admin_engine, fresh_schema) == set()


def _race(url: str, schema: str, barrier: Barrier, results: multiprocessing.Queue[str]) -> None:
    engine = create_engine(url)
    try:
        with engine.connect():
            pass  # connect before the start line, so the race is on the migration itself
        barrier.wait(timeout=60)
        upgrade(engine, schema=schema)
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_processes_racing_on_a_fresh_schema(
    admin_engine: Engine, sync_db_url: str, fresh_schema: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results: multiprocessing.Queue[str] = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(sync_db_url, fresh_schema, barrier, results))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    outcomes: list[str] = []
    try:
        for _ in procs:
            outcomes.append(results.get(timeout=120))
    except queue_module.Empty:
        pass
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * PROCESSES
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    assert versions_in(admin_engine, fresh_schema) == {HEAD}
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}


async def test_coroutines_racing_on_a_fresh_schema(
    admin_engine: Engine, database_url: str, new_schema: Callable[[str], str]
) -> None:
    schema = new_schema("m")
    engine = create_async_engine(async_url(database_url), pool_size=PROCESSES)
    try:
        await asyncio.gather(*(upgrade(engine, schema=schema) for _ in range(PROCESSES)))
    finally:
        await engine.dispose()
    assert versions_in(admin_engine, schema) == {HEAD}
    assert tables_in(admin_engine, schema) == OUR_TABLES | {"alembic_version"}


def test_startup_and_cli_share_one_history(
    admin_engine: Engine, sync_db_url: str, fresh_schema: str
) -> None:
    """upgrade() and ``migrate`` use the same version table, so either sees the other's work."""
    upgrade(admin_engine, schema=fresh_schema)
    assert run_migrate(sync_db_url, schema=fresh_schema, action="downgrade") == 0
    assert tables_in(admin_engine, fresh_schema) == set()
    upgrade(admin_engine, schema=fresh_schema)
    assert versions_in(admin_engine, fresh_schema) == {HEAD}
