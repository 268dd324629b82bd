"""Shared fixtures: a real PostgreSQL, and a freshly migrated schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backfill_sa.dburl import async_url, sync_url
from backfill_sa.migrations import upgrade


def _resolve_database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from backfill_sa.embedded import ensure_embedded_url

    return ensure_embedded_url()


@pytest.fixture(scope="session")
def database_url() -> str:
    """The server under test: DATABASE_URL, else the embedded PostgreSQL."""
    return _resolve_database_url()


@pytest.fixture(scope="session")
def admin_engine(database_url: str) -> Iterator[Engine]:
    """A sync engine without schema translation, for set-up and tear-down."""
    engine = create_engine(sync_url(database_url), pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def schema(admin_engine: Engine) -> Iterator[str]:
    """A schema of its own for one test, migrated to head, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    upgrade(admin_engine, schema=name)
    yield name
    with admin_engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture
def sync_engine(database_url: str, schema: str) -> Iterator[Engine]:
    """A psycopg engine whose ``backfill`` schema is the test's own."""
    engine = create_engine(
        sync_url(database_url),
        execution_options={"schema_translate_map": {"backfill": schema}},
    )
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(database_url: str, schema: str) -> AsyncIterator[AsyncEngine]:
    """An asyncpg engine whose ``backfill`` schema is the test's own."""
    engine = create_async_engine(
        async_url(database_url),
        execution_options={"schema_translate_map": {"backfill": schema}},
    )
    yield engine
    await engine.dispose()
