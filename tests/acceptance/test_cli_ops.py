"""Operator commands through the real CLI: ``enqueue`` and ``dlq list|requeue|delete``."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Engine, func, insert, select

from backfill_sa.models import DeadLetterJob, Job
from tests.acceptance.conftest import Runner


def _dead_letter(engine: Engine, task: str) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        entry_id: int = conn.execute(
            insert(DeadLetterJob)
            .values(
                original_job_id=7,
                task=task,
                queue="bulk",
                payload={"n": 1},
                priority=0,
                max_attempts=3,
                failure_reason="max_attempts_exceeded",
                failure_count=3,
                last_error={"type": "RuntimeError", "message": "boom"},
                original_created_at=now,
                original_run_at=now,
            )
            .returning(DeadLetterJob.id)
        ).scalar_one()
    return entry_id


def test_enqueue_writes_one_job(cli: Runner, sync_engine: Engine, schema: str) -> None:
    done = cli(
        "enqueue",
        "send_receipt",
        "--payload",
        '{"order_id": 5}',
        "--queue",
        "fast",
        "--priority",
        "-10",
        "--run-at",
        "2099-01-01T00:00:00Z",
        "--max-attempts",
        "4",
        "--schema",
        schema,
    )

    assert done.code == 0, done.stderr
    with sync_engine.connect() as conn:
        job = conn.execute(select(Job)).one()
    assert done.stdout.strip() == f"job {job.id}: inserted"
    assert (job.task, job.payload, job.queue, job.priority) == (
        "send_receipt",
        {"order_id": 5},
        "fast",
        -10,
    )
    assert job.run_at == dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
    assert (job.state, job.max_attempts) == ("scheduled", 4)


def test_enqueue_rejects_bad_job_and_writes_nothing(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    done = cli("enqueue", "t", "--priority", "40000", "--schema", schema)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "priority" in done.stderr
    with sync_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Job)) == 0


def test_dlq_list_requeue_delete(cli: Runner, sync_engine: Engine, schema: str) -> None:
    kept = _dead_letter(sync_engine, "charge")
    dropped = _dead_letter(sync_engine, "email")

    listed = cli("dlq", "list", "--json", "--schema", schema)
    assert listed.code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {row["id"] for row in rows} == {kept, dropped}
    assert {row["error"] for row in rows} == {"RuntimeError: boom"}
    only = cli("dlq", "list", "--task", "email", "--schema", schema)
    assert only.stdout.count("\n") == 1
    assert f"id={dropped}" in only.stdout

    requeued = cli("dlq", "requeue", str(kept), "999999", "--schema", schema)
    assert requeued.code == 0, requeued.stderr
    with sync_engine.connect() as conn:
        job = conn.execute(select(Job)).one()
    assert f"requeued entry {kept} as job {job.id}" in requeued.stdout
    assert "no entry 999999" in requeued.stdout
    assert (job.task, job.payload, job.state) == ("charge", {"n": 1}, "available")

    deleted = cli("dlq", "delete", str(dropped), "--schema", schema)
    assert deleted.code == 0, deleted.stderr
    assert deleted.stdout.strip() == "deleted 1 of 1 entries"
    with sync_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(DeadLetterJob)) == 0
