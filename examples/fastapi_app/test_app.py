"""The notes service's tests: what an endpoint enqueued, drained, its effect checked,
all rolled back at the end."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from backfill_sa.tasks import TaskRegistry
from backfill_sa.testing import (
    DrainResult,
    assert_enqueued_async,
    drain_async,
    refute_enqueued_async,
)
from examples.fastapi_app.conftest import TOKEN

OPERATOR = {"authorization": f"Bearer {TOKEN}"}


async def test_a_new_note_is_summarised_by_its_job(
    client: httpx.AsyncClient,
    backfill_async_session: AsyncSession,
    backfill_registry: TaskRegistry,
) -> None:
    created = await client.post("/notes", json={"body": "buy milk and eggs today"})
    assert created.status_code == 201
    note_id = created.json()["id"]
    await assert_enqueued_async(
        backfill_async_session, task="summarize_note", payload={"note_id": note_id}, count=1
    )

    assert await drain_async(backfill_async_session, backfill_registry) == DrainResult(succeeded=1)

    note = (await client.get(f"/notes/{note_id}")).json()
    assert note["summary"] == "buy milk and"
    await refute_enqueued_async(backfill_async_session)


async def test_a_failed_request_rolls_back_the_note_and_its_job(
    client: httpx.AsyncClient, backfill_async_session: AsyncSession
) -> None:
    refused = await client.post("/notes", json={"body": "a forbidden note"})

    assert refused.status_code == 422
    await refute_enqueued_async(backfill_async_session)


@pytest.mark.backfill_mode("inline")
async def test_inline_mode_summarises_within_the_request(client: httpx.AsyncClient) -> None:
    created = await client.post("/notes", json={"body": "inline jobs run at once"})

    note = (await client.get(f"/notes/{created.json()['id']}")).json()
    assert note["summary"] == "inline jobs run"


async def test_operators_only_endpoint_uses_the_apps_auth(
    client: httpx.AsyncClient, backfill_async_session: AsyncSession
) -> None:
    note_id = (await client.post("/notes", json={"body": "x"})).json()["id"]

    assert (await client.post(f"/notes/{note_id}/resummarize")).status_code == 401
    accepted = await client.post(f"/notes/{note_id}/resummarize", headers=OPERATOR)

    assert accepted.status_code == 202
    await assert_enqueued_async(
        backfill_async_session, task="summarize_note", payload={"note_id": note_id}, count=2
    )


async def test_the_admin_app_is_mounted_behind_the_apps_auth(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/api/queues")).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert (await client.get("/admin/api/queues", headers=wrong)).status_code == 401

    allowed = await client.get("/admin/api/queues", headers=OPERATOR)

    assert allowed.status_code == 200
    assert isinstance(allowed.json(), (list, dict))
