"""The lifespan option: a worker in the server's own process runs what requests commit.

This test commits for real (a worker only sees committed jobs), so it uses schemas
of its own rather than the plugin's per-test transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import async_url, sync_url
from backfill_sa.migrations import upgrade
from backfill_sa.tasks import JobContext, TaskRegistry
from examples.fastapi_app.app import create_app
from examples.fastapi_app.models import Base
from examples.fastapi_app.tasks import summarize


@pytest.fixture
def committed_schemas(backfill_database_url: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {"backfill": f"lifespan_bf_{suffix}", "notes_app": f"lifespan_notes_{suffix}"}
    engine = create_engine(
        sync_url(backfill_database_url), execution_options={"schema_translate_map": names}
    )
    upgrade(engine, schema=names["backfill"])
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {names['notes_app']}"))
        Base.metadata.create_all(conn)
    yield names
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


async def test_the_lifespan_worker_runs_the_job_a_request_committed(
    backfill_database_url: str, committed_schemas: dict[str, str]
) -> None:
    engine = create_async_engine(
        async_url(backfill_database_url),
        execution_options={"schema_translate_map": committed_schemas},
    )
    maker = async_sessionmaker(engine, expire_on_commit=False)
    summarised = asyncio.Event()
    registry = TaskRegistry()

    @registry.task("summarize_note", queue="fast")
    async def summarize_note(payload: dict[str, Any], ctx: JobContext) -> None:
        await summarize(maker, payload["note_id"])
        summarised.set()

    config = WorkerConfig(
        database_url=backfill_database_url,
        schema=committed_schemas["backfill"],
        queues={"fast": 2},
    )
    app = create_app(maker, admin_token="t", worker=(config, registry))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                created = await client.post("/notes", json={"body": "the worker runs here"})
                await asyncio.wait_for(summarised.wait(), timeout=30)
                note = (await client.get(f"/notes/{created.json()['id']}")).json()
    finally:
        await engine.dispose()

    assert note["summary"] == "the worker runs"
