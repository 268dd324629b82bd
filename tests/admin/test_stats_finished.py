"""The admin app's queue counts leave retained finished jobs out, as queue_stats does."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from backfill_sa.queues import queue_stats_async
from tests.admin.conftest import UTC, Rows


async def test_kept_finished_jobs_are_not_counted_as_waiting(
    client: httpx.AsyncClient, rows: Rows, async_engine: AsyncEngine
) -> None:
    now = dt.datetime.now(UTC)
    kept = {"finished_at": now, "prune_at": now + dt.timedelta(hours=24)}
    for state in ("completed", "completed", "cancelled"):
        await rows.add_job(queue="fast", state=state, **kept)
    await rows.add_job(queue="fast", run_at=now - dt.timedelta(minutes=1))
    await rows.add_job(queue="done", state="completed", **kept)

    body = (await client.get("/api/overview")).json()

    assert body["jobs"] == {"available": 1, "scheduled": 0, "running": 0}
    by_name = {q["name"]: q for q in body["queues"]}
    async with AsyncSession(async_engine) as session:
        expected = {s.name: s for s in await queue_stats_async(session)}
    assert sorted(expected) == ["fast"]
    fast = by_name["fast"]
    assert (fast["available"], fast["scheduled"], fast["running"]) == (1, 0, 0)
    assert (expected["fast"].available, expected["fast"].scheduled) == (1, 0)
    # A queue holding only retained finished jobs shows nothing waiting.
    done = by_name.get("done", {"available": 0, "scheduled": 0, "running": 0})
    assert (done["available"], done["scheduled"], done["running"]) == (0, 0, 0)
