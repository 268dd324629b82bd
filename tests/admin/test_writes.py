"""Mutating routes of the admin API: what they change in the tables, and what they refuse."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import httpx
import pytest

from backfill_sa.dburl import libpq_dsn
from backfill_sa.notify import channel_for
from tests.admin.conftest import UTC, Rows, assert_invalid


async def test_pause_and_resume_show_in_the_queues_table(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    await rows.add_job(queue="fast")

    paused = await client.post("/api/queues/fast/pause")
    assert paused.status_code == 200
    assert paused.json()["queue"]["name"] == "fast"
    assert paused.json()["queue"]["paused"] is True
    row = await rows.queue("fast")
    assert row is not None
    assert row["paused"] is True
    listed = (await client.get("/api/queues")).json()["queues"]
    assert [(q["name"], q["paused"]) for q in listed] == [("fast", True)]

    resumed = await client.post("/api/queues/fast/resume")
    assert resumed.status_code == 200
    assert resumed.json()["queue"]["paused"] is False
    row = await rows.queue("fast")
    assert row is not None
    assert row["paused"] is False
    listed = (await client.get("/api/queues")).json()["queues"]
    assert [(q["name"], q["paused"]) for q in listed] == [("fast", False)]


async def test_pause_creates_the_row_and_keeps_its_settings(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    await rows.add_queue("tuned", concurrency=4)
    assert (await client.post("/api/queues/new%20queue/pause")).status_code == 200
    assert (await client.post("/api/queues/tuned/pause")).status_code == 200

    created = await rows.queue("new queue")
    tuned = await rows.queue("tuned")
    assert created is not None
    assert created["paused"] is True
    assert tuned is not None
    assert (tuned["paused"], tuned["concurrency"]) == (True, 4)
    assert tuned["updated_at"] >= tuned["created_at"]


async def test_resume_wakes_the_queues_workers(
    client: httpx.AsyncClient, database_url: str, schema: str
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(libpq_dsn(database_url))
    try:
        await listener.add_listener(
            channel_for(schema), lambda *args: heard.put_nowait(str(args[-1]))
        )
        await client.post("/api/queues/fast/pause")
        await client.post("/api/queues/fast/resume")
        assert await asyncio.wait_for(heard.get(), timeout=10) == "fast"
    finally:
        await listener.close()
    assert heard.empty()  # pausing woke nobody


async def test_queue_name_rules(client: httpx.AsyncClient) -> None:
    assert_invalid(await client.post("/api/queues/" + "q" * 101 + "/pause"), "name", "1 to 100")
    assert (await client.post("/api/queues/" + "q" * 100 + "/pause")).status_code == 200


async def test_cancel_cancels_a_waiting_job(client: httpx.AsyncClient, rows: Rows) -> None:
    keep = await rows.add_job()
    available = await rows.add_job(task="a")
    scheduled = await rows.add_job(
        task="s", state="scheduled", run_at=dt.datetime.now(UTC) + dt.timedelta(days=1)
    )

    for job_id in (available, scheduled):
        response = await client.post(f"/api/jobs/{job_id}/cancel")
        assert response.status_code == 200
        assert response.json()["cancelled"] == {
            "id": job_id,
            "outcome": "cancelled",
            "state": "cancelled",
        }
        job = await rows.job(job_id)
        assert job is not None
        assert job["state"] == "cancelled"
    again = await client.post(f"/api/jobs/{available}/cancel")
    assert again.json()["cancelled"]["outcome"] == "already_finished"
    states = {job["id"]: job["state"] for job in await rows.jobs()}
    assert states[keep] == "available"


async def test_cancel_asks_a_running_job_to_stop(client: httpx.AsyncClient, rows: Rows) -> None:
    job_id = await rows.add_job(state="running", locked_by="w", locked_at=dt.datetime.now(UTC))
    response = await client.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["cancelled"] == {
        "id": job_id,
        "outcome": "requested",
        "state": "running",
    }
    job = await rows.job(job_id)
    assert job is not None
    assert job["state"] == "running"
    assert job["cancel_requested_at"] is not None


async def test_cancel_missing_or_bad_id(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/jobs/777/cancel")).status_code == 404
    assert_invalid(await client.post("/api/jobs/-1/cancel"), "id", "whole number")


async def test_requeue_moves_a_dead_letter_back_to_jobs(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    entry_id = await rows.add_dead_letter(task="send_email", payload={"to": "b@example.com"})
    other = await rows.add_dead_letter()

    response = await client.post(f"/api/dlq/{entry_id}/requeue")

    assert response.status_code == 200
    body = response.json()
    assert body["requeued_ids"] == [entry_id]
    assert body["skipped_ids"] == []
    (job_id,) = body["job_ids"]
    assert await rows.dead_letter_ids() == [other]
    job = await rows.job(job_id)
    assert job is not None
    assert (job["task"], job["payload"], job["state"], job["attempts"]) == (
        "send_email",
        {"to": "b@example.com"},
        "available",
        0,
    )
    assert (await client.get(f"/api/dlq/{entry_id}")).status_code == 404
    assert (await client.post(f"/api/dlq/{entry_id}/requeue")).status_code == 404


async def test_requeue_with_options(client: httpx.AsyncClient, rows: Rows) -> None:
    entry_id = await rows.add_dead_letter(queue="bulk", max_attempts=8)
    later = dt.datetime.now(UTC) + dt.timedelta(hours=2)
    response = await client.post(
        f"/api/dlq/{entry_id}/requeue",
        json={"queue_override": "retry", "max_attempts": 2, "run_at": later.isoformat()},
    )
    assert response.status_code == 200
    job = await rows.job(response.json()["job_ids"][0])
    assert job is not None
    assert (job["queue"], job["max_attempts"], job["state"]) == ("retry", 2, "scheduled")
    assert abs(job["run_at"] - later) < dt.timedelta(seconds=1)


async def test_requeue_refused_while_the_job_key_is_live(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    await rows.add_job(job_key="k")
    entry_id = await rows.add_dead_letter(job_key="k")
    response = await client.post(f"/api/dlq/{entry_id}/requeue")
    assert response.status_code == 409
    assert response.json()["field"] == "job_key"
    assert await rows.dead_letter_ids() == [entry_id]
    assert len(await rows.jobs()) == 1


@pytest.mark.parametrize(
    ("body", "field", "rule_part"),
    [
        ({"max_attempts": 0}, "max_attempts", "between 1 and 32767"),
        ({"max_attempts": "3"}, "max_attempts", "whole number"),
        ({"run_at": "tomorrow"}, "run_at", "ISO 8601"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at", "timezone-aware"),
        ({"queue_override": ""}, "queue_override", "1 to 100"),
        ({"queue": "x"}, "queue", "not a known field"),
    ],
)
async def test_requeue_one_bad_body(
    client: httpx.AsyncClient, rows: Rows, body: object, field: str, rule_part: str
) -> None:
    entry_id = await rows.add_dead_letter()
    assert_invalid(await client.post(f"/api/dlq/{entry_id}/requeue", json=body), field, rule_part)
    assert await rows.dead_letter_ids() == [entry_id]
    assert await rows.jobs() == []


async def test_requeue_many_by_ids_and_by_filter(client: httpx.AsyncClient, rows: Rows) -> None:
    a = await rows.add_dead_letter(task="a")
    b = await rows.add_dead_letter(task="a")
    c = await rows.add_dead_letter(task="c", failure_reason="permanent_error")
    d = await rows.add_dead_letter(task="c")

    by_ids = await client.post("/api/dlq/requeue", json={"ids": [a, 999999]})
    assert by_ids.status_code == 200
    assert by_ids.json()["requeued_ids"] == [a]
    assert await rows.dead_letter_ids() == [b, c, d]

    by_filter = await client.post(
        "/api/dlq/requeue", json={"task": "c", "reason": "permanent_error"}
    )
    assert by_filter.json()["requeued_ids"] == [c]
    assert await rows.dead_letter_ids() == [b, d]
    assert sorted(job["task"] for job in await rows.jobs()) == ["a", "c"]

    with_options = await client.post(
        "/api/dlq/requeue", json={"queue": "bulk", "queue_override": "later"}
    )
    assert sorted(with_options.json()["requeued_ids"]) == [b, d]
    assert await rows.dead_letter_ids() == []
    assert sorted(job["queue"] for job in await rows.jobs()) == ["bulk", "bulk", "later", "later"]


@pytest.mark.parametrize(
    ("body", "field", "rule_part"),
    [
        (None, "body", "JSON object"),
        ("[1, 2]", "body", "JSON object"),
        ("{not json", "body", "JSON object"),
        ({}, "ids", "give ids or at least one filter"),
        ({"max_attempts": 3}, "ids", "give ids or at least one filter"),
        ({"ids": "1,2"}, "ids", "list of whole numbers"),
        ({"ids": [1, True]}, "ids", "list of whole numbers"),
        ({"ids": [2**63]}, "ids", "list of whole numbers"),
        ({"task": 5}, "task", "must be a string"),
        ({"reason": "tired"}, "reason", "one of"),
        ({"ids": [1], "taks": "x"}, "taks", "not a known field"),
    ],
)
async def test_requeue_many_bad_body(
    client: httpx.AsyncClient, rows: Rows, body: object, field: str, rule_part: str
) -> None:
    entry_id = await rows.add_dead_letter()
    if body is None:
        response = await client.post("/api/dlq/requeue")
    elif isinstance(body, str):
        response = await client.post("/api/dlq/requeue", content=body)
    else:
        response = await client.post("/api/dlq/requeue", json=body)
    assert_invalid(response, field, rule_part)
    assert await rows.dead_letter_ids() == [entry_id]


async def test_delete_a_dead_letter(client: httpx.AsyncClient, rows: Rows) -> None:
    gone = await rows.add_dead_letter()
    kept = await rows.add_dead_letter()
    response = await client.delete(f"/api/dlq/{gone}")
    assert response.status_code == 200
    assert response.json() == {"deleted": gone}
    assert await rows.dead_letter_ids() == [kept]
    assert (await client.delete(f"/api/dlq/{gone}")).status_code == 404
    assert await rows.jobs() == []


MUTATIONS = [
    ("POST", "/api/queues/fast/pause"),
    ("POST", "/api/queues/fast/resume"),
    ("POST", "/api/jobs/{job}/cancel"),
    ("POST", "/api/dlq/{entry}/requeue"),
    ("POST", "/api/dlq/requeue"),
    ("DELETE", "/api/dlq/{entry}"),
]


@pytest.mark.parametrize(("method", "path"), MUTATIONS)
async def test_read_only_refuses_every_change(
    ro_client: httpx.AsyncClient, rows: Rows, method: str, path: str
) -> None:
    job_id = await rows.add_job(queue="fast")
    entry_id = await rows.add_dead_letter()
    url = path.format(job=job_id, entry=entry_id)
    response = await ro_client.request(method, url, json={"ids": [entry_id]})
    assert response.status_code == 403
    assert response.json()["error"] == "read_only"
    assert [job["id"] for job in await rows.jobs()] == [job_id]
    assert await rows.dead_letter_ids() == [entry_id]
    assert await rows.queue("fast") is None


async def test_read_only_still_reads(ro_client: httpx.AsyncClient, rows: Rows) -> None:
    entry_id = await rows.add_dead_letter()
    overview = await ro_client.get("/api/overview")
    assert overview.status_code == 200
    assert overview.json()["read_only"] is True
    assert (await ro_client.get(f"/api/dlq/{entry_id}")).status_code == 200
    assert (await ro_client.get("/")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
    ],
)
async def test_cross_site_changes_are_refused(
    client: httpx.AsyncClient, rows: Rows, headers: dict[str, str]
) -> None:
    entry_id = await rows.add_dead_letter()
    response = await client.delete(f"/api/dlq/{entry_id}", headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert await rows.dead_letter_ids() == [entry_id]


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://admin.test"}, {}],
)
async def test_same_origin_and_scripts_may_change(
    client: httpx.AsyncClient, rows: Rows, headers: dict[str, str]
) -> None:
    entry_id = await rows.add_dead_letter()
    assert (await client.delete(f"/api/dlq/{entry_id}", headers=headers)).status_code == 200
    assert await rows.dead_letter_ids() == []
