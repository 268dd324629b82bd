"""Pausing a queue stops claiming in two worker processes; resuming restarts it.

Both processes serve ``bulk`` and a queue of their own (``only_a``, ``only_b``).
After ``pause_queue("bulk")`` commits, jobs enqueued on ``bulk`` must stay
available while each process keeps claiming and completing jobs of its own queue
for several poll intervals, measured by the database's clock in the ``runs`` log.
Nothing here asserts on timing: the observation window is a loop condition.
"""

from __future__ import annotations

import datetime as dt
import signal
from datetime import timedelta
from functools import partial
from subprocess import Popen

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from backfill_sa.enqueue import JobSpec
from backfill_sa.queues import pause_queue, queue_stats, resume_queue
from tests.worker.conftest import (
    add,
    add_jobs,
    create_result_tables,
    poll_db,
    read_json_line,
    rows,
    start_script,
    state_of,
)

pytestmark = pytest.mark.slow

POLL = timedelta(milliseconds=50)  # worker_proc.py's poll interval
PAUSED_JOBS = 20
OWN_QUEUES = {"a": "only_a", "b": "only_b"}


def _completed(engine: Engine, ids: list[int]) -> bool:
    return all(state_of(engine, i) == "completed" for i in ids)


def _observed_until(engine: Engine, worker_id: str) -> dt.datetime | None:
    """The database time of the last run the worker logged for a job of its own queue."""
    found = rows(
        engine,
        "SELECT max(r.at) AS at FROM {s}.runs r JOIN {s}.jobs j ON j.id = r.job_id"
        " WHERE r.worker_id = :w AND j.queue = :q",
        w=worker_id,
        q=OWN_QUEUES[worker_id],
    )
    at: dt.datetime | None = found[0]["at"]
    return at


def test_pause_stops_claiming_in_two_processes_and_resume_restarts_it(
    database_url: str, schema: str, sync_engine: Engine, processes: list[Popen[str]]
) -> None:
    create_result_tables(sync_engine)
    for worker_id, own in OWN_QUEUES.items():
        processes.append(
            start_script(
                "worker_proc.py",
                *("--url", database_url, "--schema", schema, "--worker-id", worker_id),
                *("--concurrency", "2", "--queue", "bulk", "--queue", own),
            )
        )
    for proc in processes:
        assert read_json_line(proc) == {"ready": True}

    # Before the pause the processes claim from bulk.
    before = add_jobs(sync_engine, [JobSpec("record", {"n": n}) for n in range(4)])
    poll_db(lambda: _completed(sync_engine, before), what="bulk jobs before the pause")

    with Session(sync_engine) as session, session.begin():
        assert pause_queue(session, "bulk").paused
    paused_at = rows(sync_engine, "SELECT clock_timestamp() AS at")[0]["at"]
    waiting = add_jobs(sync_engine, [JobSpec("record", {"n": n}) for n in range(PAUSED_JOBS)])

    # Watch through the database: each process keeps completing jobs of its own
    # queue, enqueued after the paused ones, until its log shows it has been
    # claiming for three poll intervals since the pause.
    until = paused_at + 3 * POLL
    for _wave in range(500):
        if all((_observed_until(sync_engine, w) or paused_at) >= until for w in OWN_QUEUES):
            break
        wave = [add(sync_engine, "record", {"own": w}, queue=q) for w, q in OWN_QUEUES.items()]
        poll_db(partial(_completed, sync_engine, wave), what="own-queue jobs")
    else:
        pytest.fail("the processes did not keep claiming their own queues")

    found = rows(
        sync_engine,
        "SELECT state, attempts, locked_by FROM {s}.jobs WHERE id = ANY(:ids)",
        ids=waiting,
    )
    assert found == [{"state": "available", "attempts": 0, "locked_by": None}] * PAUSED_JOBS
    assert rows(sync_engine, "SELECT * FROM {s}.runs WHERE job_id = ANY(:ids)", ids=waiting) == []
    with Session(sync_engine) as session:
        (bulk,) = queue_stats(session, "bulk")
    assert (bulk.paused, bulk.available, bulk.running) == (True, PAUSED_JOBS, 0)

    with Session(sync_engine) as session, session.begin():
        assert not resume_queue(session, "bulk").paused
    poll_db(lambda: _completed(sync_engine, waiting), what="the paused jobs after resume")

    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    counts = [read_json_line(proc) for proc in processes]
    assert [proc.wait(timeout=15) for proc in processes] == [0, 0]
    assert sum(c["retried"] + c["dead_lettered"] for c in counts) == 0
    runs = rows(
        sync_engine,
        "SELECT count(*) AS n, count(DISTINCT job_id) AS jobs FROM {s}.runs"
        " WHERE job_id = ANY(:ids)",
        ids=before + waiting,
    )
    assert runs == [{"n": len(before) + PAUSED_JOBS, "jobs": len(before) + PAUSED_JOBS}]
