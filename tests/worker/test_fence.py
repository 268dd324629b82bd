"""The claim fence: a worker that lost its claim can no longer complete, retry or bury a job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from backfill_sa.config import WorkerConfig
from backfill_sa.models import FailureReason
from backfill_sa.statements.worker_sql import (
    job_claim_batch,
    job_complete_many,
    job_dead_letter_many,
    job_retry_many,
)
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.completer import Completer
from backfill_sa.worker.db import Database
from backfill_sa.worker.maintenance import Heartbeat, Rescuer
from backfill_sa.worker.outcomes import Outcome, OutcomeKind
from tests.worker.conftest import add, count, execute, job, state_of

ERROR = json.dumps({"type": "Late", "message": "late write", "traceback": None})


async def _claim(db: Database, worker_id: str) -> Any:
    [row] = await db.execute(
        job_claim_batch, {"claim_queue": "bulk", "limit": 1, "worker_id": worker_id}
    )
    return row


def _rescuer(db: Database) -> Rescuer:
    return Rescuer(
        db, heartbeat_expiry=timedelta(seconds=60), stale_job_lock_timeout=timedelta(minutes=30)
    )


def _finish(ids: list[int], leases: list[int]) -> dict[str, object]:
    n = len(ids)
    return {
        "ids": ids,
        "leases": leases,
        "keeps_ms": [60_000] * n,
        "results": [None] * n,
        "errors": [None] * n,
        "done_channel": "backfill_done_test",
    }


async def test_late_writes_of_a_rescued_claim_are_refused(
    db: Database, sync_engine: Engine
) -> None:
    job_id = add(sync_engine, "t", {"n": 1})
    a = await _claim(db, "worker-a")  # worker-a never heartbeats: it counts as dead
    assert (a["id"], a["lease"], a["attempts"]) == (job_id, 1, 1)

    assert (await _rescuer(db).run_once()).rescued == 1
    await Heartbeat(db, "worker-b", {"bulk": 1}).run_once()
    b = await _claim(db, "worker-b")
    assert (b["id"], b["lease"], b["attempts"]) == (job_id, 2, 2)

    # Each of A's writes, fenced by A's lease, changes nothing.
    ids, stale = [job_id], [a["lease"]]
    assert await db.execute(job_complete_many, _finish(ids, stale)) == []
    retried = await db.execute(
        job_retry_many,
        {
            "ids": ids,
            "leases": stale,
            "delays_ms": [0],
            "errors": [ERROR],
            "refunds": [1],
            "keeps_ms": [0],
        },
    )
    assert retried == []
    buried = await db.execute(
        job_dead_letter_many,
        {
            "ids": ids,
            "leases": stale,
            "reasons": [FailureReason.PERMANENT_ERROR.value],
            "errors": [ERROR],
        },
    )
    assert buried == []
    # ... and so does A's completer, which counts the refusal.
    completer = Completer(db)
    completer.add(Outcome(OutcomeKind.SUCCEEDED, job_id, a["lease"], "t", "bulk"))
    await completer.flush()
    assert (completer.result.refused, completer.result.succeeded) == (1, 0)
    assert completer.unwritten_ids() == set()

    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["locked_by"], row["lease"], row["attempts"]) == (
        "running",
        "worker-b",
        2,
        2,
    )
    assert count(sync_engine, "dead_letter_jobs") == 0

    # B holds the current lease: its completion goes through.
    assert [r["id"] for r in await db.execute(job_complete_many, _finish(ids, [2]))] == [job_id]
    assert state_of(sync_engine, job_id) == "completed"


async def test_a_rescued_claim_is_not_written_back_as_available_by_its_old_worker(
    db: Database, sync_engine: Engine
) -> None:
    job_id = add(sync_engine, "t")
    a = await _claim(db, "worker-a")
    assert (await _rescuer(db).run_once()).rescued == 1

    # Rescued and waiting (not re-claimed yet): A's write still finds no running row.
    assert await db.execute(job_complete_many, _finish([job_id], [a["lease"]])) == []
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["attempts"]) == ("available", 1)


async def test_worker_that_lost_its_claim_mid_run_cannot_complete_it(
    sync_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
    db: Database,
) -> None:
    runs: list[tuple[str, int]] = []
    started = asyncio.Event()
    release = asyncio.Event()

    @registry.task("slow")
    async def slow(payload: Any, ctx: JobContext) -> None:
        runs.append((ctx.worker_id, ctx.attempt))
        if ctx.worker_id == "worker-a":
            started.set()
            await release.wait()

    job_id = add(sync_engine, "slow")
    # One slot, taken by the job: A cannot claim the job again once it is rescued.
    worker_a = WorkerRunner(config(worker_id="worker-a", queues={"bulk": 1}), registry)
    handle = worker_a.start()
    await asyncio.wait_for(started.wait(), timeout=10)

    # A is alive but its claim is older than the stale-lock timeout: rescued anyway.
    execute(sync_engine, "UPDATE {s}.jobs SET locked_at = now() - interval '31 minutes'")
    assert (await _rescuer(db).run_once()).rescued == 1
    result_b = await WorkerRunner(config(worker_id="worker-b"), registry).run_once()
    assert result_b.succeeded == 1

    release.set()  # A finishes late and tries to complete
    result_a = await asyncio.wait_for(handle.stop(), timeout=10)

    assert (result_a.succeeded, result_a.refused) == (0, 1)
    assert runs == [("worker-a", 1), ("worker-b", 2)]
    assert state_of(sync_engine, job_id) == "completed"
    assert count(sync_engine, "dead_letter_jobs") == 0
