"""A worker stalled (SIGSTOP) past its heartbeat expiry, rescued by another, then resumed.

Worker A claims ten jobs whose handlers sleep a second, and is frozen with SIGSTOP
while they run. Once its heartbeat and its maintenance lease have expired, worker B
starts: as the new leader it rescues A's claims and runs every job. Then A gets
SIGCONT: its handlers finish and it tries to complete, retry or dead-letter those
jobs (the payload says which), and every one of those writes is refused by the
lease fence. A carries on: it runs a job enqueued after it woke, and stops cleanly
on SIGTERM. No job runs a third time, nothing lands in the DLQ.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

from backfill_sa.enqueue import JobSpec
from tests.reliability.procs import WorkerProc, read_runs
from tests.worker.conftest import add_jobs, count, poll_db, rows

pytestmark = pytest.mark.slow

TIMING = ("--heartbeat-ms", "200", "--expiry-ms", "1000")


def test_stalled_worker_is_fenced_off_and_carries_on(
    database_url: str, schema: str, sync_engine: Engine, tmp_path: Path
) -> None:
    thens = ["ok", "retry", "dead"]
    ids = add_jobs(sync_engine, [JobSpec("record", {"then": thens[n % 3]}) for n in range(30)])
    a = WorkerProc.start(
        url=database_url,
        schema=schema,
        worker_id="stall-a",
        runs_dir=tmp_path,
        extra=("--concurrency", "10", "--sleep", "1.0", "--misbehave", *TIMING),
    )
    b: WorkerProc | None = None
    try:
        assert a.read_line() == {"ready": True}
        poll_db(
            lambda: count(sync_engine, "jobs", "state = 'running' AND locked_by = 'stall-a'") == 10,
            what="A to run ten jobs",
        )
        os.kill(a.proc.pid, signal.SIGSTOP)
        # Past A's heartbeat expiry (1 s) and its leader lease (the same), by a margin.
        poll_db(
            lambda: (
                count(
                    sync_engine,
                    "workers",
                    "id = 'stall-a' AND last_heartbeat_at < now() - interval '1.5 seconds'",
                )
                == 1
                and count(sync_engine, "leader", "expires_at > now()") == 0
            ),
            what="A's heartbeat and lease to expire",
        )
        stalled = {
            r["id"]
            for r in rows(
                sync_engine,
                "SELECT id FROM {s}.jobs WHERE state = 'running' AND locked_by = 'stall-a'",
            )
        }
        assert len(stalled) >= 10

        b = WorkerProc.start(
            url=database_url,
            schema=schema,
            worker_id="stall-b",
            runs_dir=tmp_path,
            extra=("--concurrency", "10", "--burst", *TIMING),
        )
        assert b.read_line() == {"ready": True}
        result_b = b.finish()
        assert count(sync_engine, "jobs") == 0  # B rescued A's claims and ran everything
        assert result_b["rescued"] == len(stalled)

        os.kill(a.proc.pid, signal.SIGCONT)
        # A carries on: a job enqueued now is run by A.
        [late] = add_jobs(sync_engine, [JobSpec("record", {"then": "ok"})])
        poll_db(lambda: count(sync_engine, "jobs") == 0, what="A to run the late job")
        a.proc.send_signal(signal.SIGTERM)
        result_a = a.finish()
    finally:
        a.kill()
        if b is not None:
            b.kill()

    runs = read_runs([a.runs, tmp_path / "stall-b.runs"])
    starts = Counter(r.job_id for r in runs if r.event == "start")
    assert sorted(starts) == sorted([*ids, late])
    assert max(starts.values()) == 2  # no job ran a third time
    assert {job_id for job_id, n in starts.items() if n == 2} == stalled
    by_a = {r.job_id for r in runs if r.worker == "stall-a" and r.event == "end"}
    assert stalled | {late} <= by_a  # A did finish its stalled handlers after SIGCONT
    # Every late write of A (complete, retry or dead-letter) was refused by the fence.
    assert result_a["refused"] == len(stalled)
    assert (result_a["retried"], result_a["dead_lettered"]) == (0, 0)
    assert result_a["succeeded"] == 1  # the late job
    assert count(sync_engine, "dead_letter_jobs") == 0
    assert count(sync_engine, "jobs") == 0
