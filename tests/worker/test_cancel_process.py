"""Cancelling a job that a worker in another process is running."""

from __future__ import annotations

import signal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from backfill_sa.jobs import CancelOutcome, cancel_job
from tests.worker.conftest import (
    add,
    create_result_tables,
    job,
    poll_db,
    read_json_line,
    rows,
    start_script,
)


def test_a_job_running_in_another_process_ends_cancelled_ran_once_not_retried(
    database_url: str, schema: str, sync_engine: Engine
) -> None:
    create_result_tables(sync_engine)
    job_id = add(sync_engine, "record")
    proc = start_script(
        "worker_proc.py",
        *("--url", database_url, "--schema", schema, "--worker-id", "far-away"),
        *("--concurrency", "1", "--sleep", "600"),
    )
    try:
        assert read_json_line(proc) == {"ready": True}
        poll_db(
            lambda: (job(sync_engine, job_id) or {}).get("locked_by") == "far-away",
            what="the other process to run the job",
        )
        with Session(sync_engine) as session, session.begin():
            asked = cancel_job(session, job_id)
        assert asked.outcome is CancelOutcome.REQUESTED
        # The notification reaches the worker at once; its heartbeat check (10 s)
        # would find the request too, had the notification been missed.
        poll_db(
            lambda: (job(sync_engine, job_id) or {}).get("state") == "cancelled",
            what="the job to end cancelled",
        )
        proc.send_signal(signal.SIGTERM)
        counts = read_json_line(proc)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert (counts["cancelled"], counts["retried"], counts["succeeded"]) == (1, 0, 0)
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["attempts"], row["locked_by"]) == ("cancelled", 1, "far-away")
    # The handler was stopped in its sleep, before it recorded anything.
    assert rows(sync_engine, "SELECT * FROM {s}.runs") == []
