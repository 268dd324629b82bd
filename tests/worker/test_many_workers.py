"""Four worker processes on one queue: every job completed exactly once."""

from __future__ import annotations

from subprocess import Popen

from sqlalchemy import Engine

from backfill_sa.enqueue import JobSpec
from tests.worker.conftest import (
    add_jobs,
    count,
    create_result_tables,
    read_json_line,
    rows,
    start_script,
    unfinished,
)

JOBS = 5000
WORKERS = 4


def test_four_processes_complete_5000_jobs_exactly_once(
    database_url: str, schema: str, sync_engine: Engine, processes: list[Popen[str]]
) -> None:
    create_result_tables(sync_engine)
    ids = add_jobs(sync_engine, [JobSpec("record", {"n": n}) for n in range(JOBS)])
    for i in range(WORKERS):
        processes.append(
            start_script(
                "worker_proc.py",
                *("--url", database_url, "--schema", schema, "--worker-id", f"w{i}"),
                # --strict: a second run of a job fails its insert (primary key), which
                # would show up as a retry and a duplicate in runs.
                *("--concurrency", "10", "--strict", "--burst", "--wait-go"),
            )
        )
    for proc in processes:
        assert read_json_line(proc) == {"ready": True}
    for proc in processes:  # start them together, so that they compete for every batch
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()

    counts = [read_json_line(proc) for proc in processes]
    assert [proc.wait(timeout=60) for proc in processes] == [0] * WORKERS

    assert sum(c["succeeded"] for c in counts) == JOBS
    assert [(c["retried"], c["dead_lettered"], c["refused"]) for c in counts] == [(0, 0, 0)] * 4
    assert unfinished(sync_engine) == 0
    assert count(sync_engine, "dead_letter_jobs") == 0
    done = rows(sync_engine, "SELECT job_id FROM {s}.results ORDER BY job_id")
    assert [r["job_id"] for r in done] == ids
    runs = rows(sync_engine, "SELECT count(*) AS n, count(DISTINCT job_id) AS jobs FROM {s}.runs")
    assert runs == [{"n": JOBS, "jobs": JOBS}]  # no job's handler ran twice
    per_worker = rows(
        sync_engine, "SELECT worker_id, count(*) AS n FROM {s}.results GROUP BY worker_id"
    )
    assert sum(r["n"] for r in per_worker) == JOBS
    assert len(per_worker) >= 2, per_worker  # the processes really shared the queue
