"""The notes service's test set-up, as a user of backfill_sa's pytest plugin writes it.

The plugin gives a migrated ``backfill`` schema and sessions joined to a per-test
transaction; this file adds the application's own schema to the same translation,
builds the registry around the test's sessionmaker, and serves the app to httpx.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backfill_sa.dburl import sync_url
from backfill_sa.tasks import TaskRegistry
from examples.fastapi_app.app import create_app
from examples.fastapi_app.models import Base
from examples.fastapi_app.tasks import build_registry

TOKEN = "test-token"


@pytest.fixture(scope="session")
def notes_schema(backfill_database_url: str) -> Iterator[str]:
    """The application's tables in a schema of their own for this test session."""
    name = f"notes_test_{uuid.uuid4().hex[:8]}"
    engine = create_engine(
        sync_url(backfill_database_url),
        execution_options={"schema_translate_map": {"notes_app": name}},
    )
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
        Base.metadata.create_all(conn)
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def backfill_schema_translate_map(backfill_schema: str, notes_schema: str) -> dict[str, str]:
    """The plugin's engines see both schemas under their usual names."""
    return {"backfill": backfill_schema, "notes_app": notes_schema}


@pytest.fixture
def backfill_registry(
    backfill_async_sessionmaker: async_sessionmaker[AsyncSession],
) -> TaskRegistry:
    """The application's tasks, writing through the test's transaction."""
    return build_registry(backfill_async_sessionmaker)


@pytest.fixture
async def client(
    backfill_async_sessionmaker: async_sessionmaker[AsyncSession],
    backfill_async_engine: AsyncEngine,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, its request sessions joined to the test's transaction."""
    app = create_app(
        backfill_async_sessionmaker, admin_token=TOKEN, admin_engine=backfill_async_engine
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes.test") as client:
        yield client
