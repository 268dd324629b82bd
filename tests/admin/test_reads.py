"""Read routes of the admin API against a real PostgreSQL: what they count and list."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from tests.admin.conftest import UTC, Rows, assert_invalid


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


async def test_overview_of_an_empty_schema(client: httpx.AsyncClient, schema: str) -> None:
    response = await client.get("/api/overview")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["schema"] == schema
    assert body["read_only"] is False
    assert body["jobs"] == {"available": 0, "scheduled": 0, "running": 0}
    assert body["queues"] == []
    assert body["dead_letters"] == 0
    assert body["workers"] == {"alive": 0, "total": 0}
    assert abs(dt.datetime.fromisoformat(body["now"]) - _now()) < dt.timedelta(minutes=1)


async def test_overview_counts_jobs_by_queue_and_state(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    hour_ago = _now() - dt.timedelta(hours=1)
    await rows.add_job(queue="fast", run_at=hour_ago)
    await rows.add_job(queue="fast", run_at=_now() - dt.timedelta(minutes=5))
    await rows.add_job(queue="fast", state="running", locked_by="w1", locked_at=_now())
    await rows.add_job(queue="bulk", state="scheduled", run_at=_now() + dt.timedelta(days=1))
    await rows.add_dead_letter(queue="bulk")
    await rows.add_dead_letter(queue="bulk")
    await rows.add_dead_letter(queue="gone")
    await rows.add_worker("w1", silent_for=dt.timedelta(seconds=5))
    await rows.add_worker("w2", silent_for=dt.timedelta(seconds=120))

    body = (await client.get("/api/overview")).json()

    assert body["jobs"] == {"available": 2, "scheduled": 1, "running": 1}
    assert body["dead_letters"] == 3
    assert body["workers"] == {"alive": 1, "total": 2}
    by_name = {q["name"]: q for q in body["queues"]}
    assert [q["name"] for q in body["queues"]] == ["bulk", "fast", "gone"]
    fast = by_name["fast"]
    assert (fast["available"], fast["scheduled"], fast["running"]) == (2, 0, 1)
    # The oldest available job has been due for an hour (database clock).
    assert 3590 <= fast["oldest_available_age_seconds"] <= 3700
    bulk = by_name["bulk"]
    assert (bulk["available"], bulk["scheduled"], bulk["running"]) == (0, 1, 0)
    assert bulk["oldest_available_age_seconds"] is None
    assert bulk["dead_letters"] == 2
    assert by_name["gone"]["dead_letters"] == 1
    assert by_name["gone"]["available"] == 0


_NO_LIMITS = {
    "global_concurrency": None,
    "partition_by": None,
    "partition_concurrency": None,
    "rate_limit": None,
    "rate_period_seconds": None,
    "rate_limit_per_partition": False,
    "limited_running": 0,
    "serial_waiting": 0,
}


async def test_queues_lists_settings_rows_without_jobs(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    await rows.add_queue("idle", paused=True, concurrency=3)
    await rows.add_job(queue="bulk")

    body = (await client.get("/api/queues")).json()

    assert body["queues"] == [
        {
            "name": "bulk",
            "available": 1,
            "scheduled": 0,
            "running": 0,
            "oldest_available_age_seconds": body["queues"][0]["oldest_available_age_seconds"],
            "paused": False,
            "concurrency": None,
            "dead_letters": 0,
            **_NO_LIMITS,
        },
        {
            "name": "idle",
            "available": 0,
            "scheduled": 0,
            "running": 0,
            "oldest_available_age_seconds": None,
            "paused": True,
            "concurrency": 3,
            "dead_letters": 0,
            **_NO_LIMITS,
        },
    ]
    assert body["queues"][0]["oldest_available_age_seconds"] >= 0


async def test_jobs_filter_page_and_order(client: httpx.AsyncClient, rows: Rows) -> None:
    t0 = _now() - dt.timedelta(minutes=10)
    late = await rows.add_job(task="a", priority=5, run_at=t0)
    first = await rows.add_job(task="a", priority=-5, run_at=t0 + dt.timedelta(seconds=1))
    second = await rows.add_job(task="b", priority=-5, run_at=t0 + dt.timedelta(seconds=2))
    other = await rows.add_job(task="a", queue="fast", run_at=t0)
    running = await rows.add_job(task="a", state="running", locked_by="w", locked_at=t0)

    everything = (await client.get("/api/jobs")).json()
    assert everything["total"] == 5
    assert (everything["limit"], everything["offset"]) == (50, 0)
    # Claim order: priority, then run_at, then id.
    assert [j["id"] for j in everything["jobs"]] == [first, second, other, running, late]
    assert "payload" not in everything["jobs"][0]

    bulk_a = (await client.get("/api/jobs", params={"queue": "bulk", "task": "a"})).json()
    assert [j["id"] for j in bulk_a["jobs"]] == [first, running, late]
    state = (await client.get("/api/jobs", params={"state": "running"})).json()
    assert [j["id"] for j in state["jobs"]] == [running]
    assert state["jobs"][0]["locked_by"] == "w"

    page = (await client.get("/api/jobs", params={"limit": 2, "offset": 1, "queue": ""})).json()
    assert [j["id"] for j in page["jobs"]] == [second, other]
    assert page["total"] == 5


async def test_job_detail_has_every_field(client: httpx.AsyncClient, rows: Rows) -> None:
    job_id = await rows.add_job(
        task="send",
        payload={"to": "x@example.com", "n": [1, 2]},
        meta={"tag": "t"},
        job_key="k1",
        last_error={"type": "OSError", "message": "nope", "attempt": 1},
    )
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200
    job = response.json()["job"]
    assert job["id"] == job_id
    assert job["payload"] == {"to": "x@example.com", "n": [1, 2]}
    assert job["metadata"] == {"tag": "t"}
    assert job["job_key"] == "k1"
    assert job["last_error"]["message"] == "nope"
    assert job["state"] == "available"
    assert dt.datetime.fromisoformat(job["created_at"]).tzinfo is not None

    summary = (await client.get("/api/jobs")).json()["jobs"][0]
    assert (summary["error_type"], summary["error_message"]) == ("OSError", "nope")


async def test_workers_liveness_and_running_jobs(client: httpx.AsyncClient, rows: Rows) -> None:
    await rows.add_worker("w-live", silent_for=dt.timedelta(seconds=3), queues={"fast": 2})
    await rows.add_worker("w-dead", silent_for=dt.timedelta(minutes=5), hostname="host-b")
    await rows.add_job(state="running", locked_by="w-live", locked_at=_now())
    await rows.add_job(state="running", locked_by="w-live", locked_at=_now())
    await rows.add_job(locked_by=None)

    body = (await client.get("/api/workers")).json()
    by_id = {w["id"]: w for w in body["workers"]}
    assert set(by_id) == {"w-live", "w-dead"}
    live, dead = by_id["w-live"], by_id["w-dead"]
    assert live["alive"] is True
    assert live["running"] == 2
    assert live["queues"] == {"fast": 2}
    assert (live["hostname"], live["pid"]) == ("host-a", 4242)
    assert 0 <= live["seconds_since_heartbeat"] < 30
    assert dead["alive"] is False
    assert dead["running"] == 0
    assert dead["seconds_since_heartbeat"] >= 290
    for worker in body["workers"]:
        assert dt.datetime.fromisoformat(worker["started_at"]).tzinfo is not None
        assert dt.datetime.fromisoformat(worker["last_heartbeat_at"]).tzinfo is not None


async def test_dlq_list_filters_and_pages(client: httpx.AsyncClient, rows: Rows) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    old = await rows.add_dead_letter(failed_at=t0)
    new = await rows.add_dead_letter(failed_at=t0 + dt.timedelta(hours=1))
    other_task = await rows.add_dead_letter(task="resize", failed_at=t0)
    permanent = await rows.add_dead_letter(
        queue="fast", failure_reason="permanent_error", failed_at=t0
    )

    body = (await client.get("/api/dlq")).json()
    assert body["total"] == 4
    assert body["entries"][0]["id"] == new  # newest first
    assert {e["id"] for e in body["entries"]} == {old, new, other_task, permanent}
    entry = body["entries"][0]
    assert entry["error_type"] == "ValueError"
    assert entry["error_message"] == "boom"
    assert "payload" not in entry
    assert "last_error" not in entry

    by_task = (await client.get("/api/dlq", params={"task": "resize"})).json()
    assert [e["id"] for e in by_task["entries"]] == [other_task]
    by_queue = (await client.get("/api/dlq", params={"queue": "fast"})).json()
    assert [e["id"] for e in by_queue["entries"]] == [permanent]
    by_reason = (await client.get("/api/dlq", params={"reason": "permanent_error"})).json()
    assert [e["id"] for e in by_reason["entries"]] == [permanent]
    assert by_reason["total"] == 1

    page = (await client.get("/api/dlq", params={"limit": 1, "offset": 1})).json()
    assert len(page["entries"]) == 1
    assert page["total"] == 4
    assert page["entries"][0]["id"] != new


async def test_dlq_entry_detail(client: httpx.AsyncClient, rows: Rows) -> None:
    entry_id = await rows.add_dead_letter(notes="look at me")
    response = await client.get(f"/api/dlq/{entry_id}")
    assert response.status_code == 200
    entry = response.json()["entry"]
    assert entry["id"] == entry_id
    assert entry["payload"] == {"to": "a@example.com"}
    assert entry["last_error"]["traceback"] == "Traceback..."
    assert entry["metadata"] == {"tag": "x"}
    assert entry["notes"] == "look at me"
    assert entry["failure_reason"] == "max_attempts_exceeded"


@pytest.mark.parametrize(
    ("path", "field", "rule_part"),
    [
        ("/api/jobs?limit=0", "limit", "between 1 and 1000"),
        ("/api/jobs?limit=1001", "limit", "between 1 and 1000"),
        ("/api/jobs?limit=ten", "limit", "whole number"),
        ("/api/jobs?offset=-1", "offset", "between 0 and"),
        ("/api/jobs?state=done", "state", "one of available, scheduled, running"),
        ("/api/jobs?stat=running", "stat", "not a known parameter"),
        ("/api/jobs?queue=a&queue=b", "queue", "at most once"),
        ("/api/jobs?task=a%00b", "task", "NUL"),
        ("/api/jobs/0", "id", "whole number"),
        ("/api/jobs/99999999999999999999", "id", "whole number"),
        ("/api/dlq?reason=oops", "reason", "max_attempts_exceeded"),
        ("/api/dlq?limit=-3", "limit", "between 1 and 1000"),
        ("/api/dlq?failed=1", "failed", "not a known parameter"),
        ("/api/overview?verbose=1", "verbose", "not a known parameter"),
        ("/api/workers?all=1", "all", "not a known parameter"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    client: httpx.AsyncClient, path: str, field: str, rule_part: str
) -> None:
    assert_invalid(await client.get(path), field, rule_part)


@pytest.mark.parametrize("path", ["/api/jobs/424242", "/api/dlq/424242"])
async def test_missing_rows_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert body["field"] == "id"
    assert "424242" in body["message"]


async def test_unknown_routes_and_methods_answer_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await client.put("/api/queues")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


async def test_dead_letter_stats(client: httpx.AsyncClient, rows: Rows) -> None:
    empty = (await client.get("/api/dlq/stats")).json()
    assert empty == {
        "total": 0,
        "oldest_failed_at": None,
        "newest_failed_at": None,
        "by_queue": [],
        "by_task": [],
        "by_reason": [],
    }
    first = dt.datetime(2026, 1, 1, tzinfo=UTC)
    await rows.add_dead_letter(task="a", queue="q1", failed_at=first)
    await rows.add_dead_letter(task="a", queue="q2", failure_reason="permanent_error")
    await rows.add_dead_letter(task="b", queue="q2", failed_at=first + dt.timedelta(days=1))
    stats = (await client.get("/api/dlq/stats")).json()
    assert stats["total"] == 3
    assert stats["oldest_failed_at"] == first.isoformat()
    assert stats["by_queue"] == [{"key": "q2", "count": 2}, {"key": "q1", "count": 1}]
    assert stats["by_task"] == [{"key": "a", "count": 2}, {"key": "b", "count": 1}]
    assert stats["by_reason"] == [
        {"key": "max_attempts_exceeded", "count": 2},
        {"key": "permanent_error", "count": 1},
    ]


async def test_jobs_filtered_by_error(client: httpx.AsyncClient, rows: Rows) -> None:
    failing = await rows.add_job(last_error={"type": "KeyError", "message": "'x'"})
    fine = await rows.add_job()
    errored = (await client.get("/api/jobs?errored=true")).json()
    clean = (await client.get("/api/jobs?errored=false")).json()
    assert [(j["id"], j["error_type"]) for j in errored["jobs"]] == [(failing, "KeyError")]
    assert [j["id"] for j in clean["jobs"]] == [fine]


async def test_jobs_most_recently_changed_first(client: httpx.AsyncClient, rows: Rows) -> None:
    now = dt.datetime.now(UTC)
    old = await rows.add_job(priority=-10, updated_at=now - dt.timedelta(hours=1))
    new = await rows.add_job(priority=10, updated_at=now)
    claim = (await client.get("/api/jobs")).json()["jobs"]
    recent = (await client.get("/api/jobs?order=recent")).json()["jobs"]
    assert [j["id"] for j in claim] == [old, new]
    assert [j["id"] for j in recent] == [new, old]
    assert_invalid(await client.get("/api/jobs?order=newest"), "order", "one of claim, recent")


async def test_queue_stats_count_finished_jobs_too(client: httpx.AsyncClient, rows: Rows) -> None:
    now = dt.datetime.now(UTC)
    await rows.add_job(queue="fast")
    await rows.add_job(queue="fast", state="completed", finished_at=now, result={"ok": 1})
    await rows.add_job(queue="fast", state="cancelled", finished_at=now)
    stats = (await client.get("/api/queues/fast/stats")).json()
    assert {k: stats[k] for k in ("name", "available", "completed", "cancelled", "paused")} == {
        "name": "fast",
        "available": 1,
        "completed": 1,
        "cancelled": 1,
        "paused": False,
    }
    assert stats["oldest_available_age_seconds"] >= 0
    missing = await client.get("/api/queues/nowhere/stats")
    assert (missing.status_code, missing.json()["field"]) == (404, "name")


async def test_throughput_counts_completions_per_minute(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    now = dt.datetime.now(UTC)
    for minutes_ago in (0, 0, 2, 45):
        finished = now - dt.timedelta(minutes=minutes_ago, seconds=5)
        await rows.add_job(queue="fast", state="completed", finished_at=finished)
    await rows.add_job(queue="fast", state="cancelled", finished_at=now)
    await rows.add_job(queue="slow")
    body = (await client.get("/api/queues/throughput?minutes=5")).json()
    assert body == {
        "minutes": 5,
        "queues": [{"name": "fast", "completed_per_minute": [0, 0, 1, 0, 2]}],
    }
    assert_invalid(await client.get("/api/queues/throughput?minutes=0"), "minutes", "between 1")


async def test_job_detail_and_listing_show_the_result(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    now = dt.datetime.now(UTC)
    job_id = await rows.add_job(state="completed", finished_at=now, result={"rows": 12})
    job = (await client.get(f"/api/jobs/{job_id}")).json()["job"]
    assert (job["state"], job["result"]) == ("completed", {"rows": 12})
    assert job["finished_at"] == now.isoformat()
    listed = (await client.get("/api/jobs?state=completed&order=recent")).json()["jobs"]
    assert [(j["id"], j["result"]) for j in listed] == [(job_id, {"rows": 12})]
