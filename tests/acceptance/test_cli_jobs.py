"""``jobs list|show|cancel|retry`` and ``queues list|pause|resume`` through the real CLI."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from backfill_sa.enqueue import JobSpec, enqueue_many
from backfill_sa.models import Job
from backfill_sa.tables import queues_table
from tests.acceptance.conftest import Runner

LATER = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)


def _jobs(engine: Engine, specs: list[JobSpec]) -> list[int]:
    with Session(engine) as session, session.begin():
        return [result.id for result in enqueue_many(session, specs)]


def _states(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {row.id: row.state for row in conn.execute(select(Job.id, Job.state))}


def test_jobs_list_and_show(cli: Runner, sync_engine: Engine, schema: str) -> None:
    first, second, later = _jobs(
        sync_engine,
        [JobSpec("a", {"n": 1}, queue="fast"), JobSpec("b"), JobSpec("c", run_at=LATER)],
    )

    listed = cli("jobs", "list", "--schema", schema)
    as_json = cli("jobs", "list", "--json", "--state", "scheduled", "--schema", schema)
    paged = cli("jobs", "list", "--json", "--after", str(first), "--limit", "1", "--schema", schema)
    nothing = cli("jobs", "list", "--task", "nobody", "--schema", schema)
    shown = cli("jobs", "show", str(first), "--schema", schema)
    shown_json = cli("jobs", "show", str(first), "--json", "--schema", schema)
    missing = cli("jobs", "show", "999999", "--schema", schema)

    assert listed.code == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        f"id={first}",
        f"id={second}",
        f"id={later}",
    ]
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [later]
    assert [json.loads(line)["id"] for line in paged.stdout.splitlines()] == [second]
    assert nothing.code == 1
    assert nothing.stderr_lines == ["backfill_sa jobs list: error: no job matches (task=nobody)"]
    assert shown.code == 0
    assert "queue                fast" in shown.stdout
    assert 'payload              {"n": 1}' in shown.stdout
    job = json.loads(shown_json.stdout)
    assert (job["id"], job["state"], job["payload"]) == (first, "available", {"n": 1})
    assert missing.code == 1
    assert missing.stderr_lines == ["backfill_sa jobs show: error: no job has id 999999"]


def test_jobs_cancel_by_id_and_by_filter(cli: Runner, sync_engine: Engine, schema: str) -> None:
    one, *rest = _jobs(sync_engine, [JobSpec("a", queue="q")] + [JobSpec("b", queue="r")] * 3)

    by_id = cli("jobs", "cancel", str(one), "999999", "--schema", schema)
    dry = cli("jobs", "cancel", "--queue", "r", "--dry-run", "--schema", schema)
    unconfirmed = cli("jobs", "cancel", "--queue", "r", "--schema", schema)
    states_before = _states(sync_engine)
    done = cli("jobs", "cancel", "--queue", "r", "--yes", "--schema", schema)
    again = cli("jobs", "cancel", "--queue", "r", "--yes", "--schema", schema)
    no_filter = cli("jobs", "cancel", "--schema", schema)

    assert by_id.code == 1
    assert by_id.stdout.strip() == f"cancelled: 1 ({one})"
    assert by_id.stderr_lines == ["backfill_sa jobs cancel: error: no job has id 999999"]
    assert dry.code == 0
    assert dry.stdout.strip() == "would cancel 3 jobs with queue=r; nothing changed"
    assert unconfirmed.code == 2
    assert "--yes: needed to cancel 3 jobs with queue=r" in unconfirmed.stderr
    assert [states_before[i] for i in rest] == ["available"] * 3
    assert done.code == 0, done.stderr
    assert done.stdout.strip().startswith("cancelled: 3 (")
    assert set(_states(sync_engine).values()) == {"cancelled"}
    assert again.code == 1
    assert "no unfinished job matches (queue=r)" in again.stderr
    assert no_filter.code == 2
    assert "give job ids, or --state, --queue or --task" in no_filter.stderr


def test_jobs_retry_makes_a_scheduled_job_available(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    waiting, ready = _jobs(sync_engine, [JobSpec("a", run_at=LATER), JobSpec("b")])

    done = cli("jobs", "retry", str(waiting), str(ready), "--schema", schema)
    missing = cli("jobs", "retry", "999999", "--schema", schema)

    assert done.code == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"job {waiting}: available now",
        f"job {ready}: left as it is (available, not scheduled)",
    ]
    assert _states(sync_engine) == {waiting: "available", ready: "available"}
    assert missing.code == 1
    assert missing.stderr_lines == ["backfill_sa jobs retry: error: no job has id 999999"]


def test_queues_list_pause_resume(cli: Runner, sync_engine: Engine, schema: str) -> None:
    empty = cli("queues", "list", "--schema", schema)
    _jobs(sync_engine, [JobSpec("a", queue="fast")] * 2 + [JobSpec("b", run_at=LATER)])

    paused = cli("queues", "pause", "fast", "--schema", schema)
    listed = cli("queues", "list", "--json", "--finished", "--schema", schema)
    text = cli("queues", "list", "--schema", schema)
    resumed = cli("queues", "resume", "fast", "--json", "--schema", schema)

    assert empty.code == 1
    assert empty.stderr_lines == ["backfill_sa queues list: error: no queue has jobs or settings"]
    assert paused.code == 0, paused.stderr
    assert paused.stdout.strip() == "queue 'fast': paused: workers claim nothing from it"
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert (rows["fast"]["available"], rows["fast"]["paused"], rows["fast"]["completed"]) == (
        2,
        True,
        0,
    )
    assert (rows["bulk"]["scheduled"], rows["bulk"]["paused"]) == (1, False)
    assert "PAUSED" in next(line for line in text.stdout.splitlines() if line.startswith("fast"))
    assert json.loads(resumed.stdout) == {"name": "fast", "paused": False}
    with sync_engine.connect() as conn:
        assert conn.execute(select(queues_table.c.name, queues_table.c.paused)).all() == [
            ("fast", False)
        ]
