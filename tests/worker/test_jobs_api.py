"""backfill_sa.jobs and backfill_sa.queues against a real database and real workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.errors import JobValidationError, PermanentError
from backfill_sa.jobs import (
    DEAD_LETTERED,
    CancelOutcome,
    JobWaitTimeoutError,
    RetryOutcome,
    cancel_job,
    cancel_job_async,
    get_job,
    get_job_async,
    list_jobs,
    list_jobs_async,
    retry_job,
    retry_job_async,
    wait_for_job,
)
from backfill_sa.queues import (
    finished_jobs_estimate,
    pause_queue,
    pause_queue_async,
    queue_stats,
    queue_stats_async,
    resume_queue,
    resume_queue_async,
)
from backfill_sa.statements.worker_sql import job_claim_batch, job_complete_many, job_retry_many
from backfill_sa.states import JobState
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.db import Database
from backfill_sa.worker.maintenance import Rescuer
from backfill_sa.worker.outcomes import error_json
from tests.worker.conftest import add, add_jobs, execute, job, rows, wait_for

UTC_DAY = timedelta(days=1)


async def _claim(db: Database, worker_id: str = "w") -> Any:
    [row] = await db.execute(
        job_claim_batch, {"claim_queue": "bulk", "limit": 1, "worker_id": worker_id}
    )
    return row


# -- get_job ---------------------------------------------------------------------------


async def test_get_job_follows_a_job_from_enqueue_to_completed(
    sync_engine: Engine,
    async_engine: AsyncEngine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    @registry.task("sum")
    async def total(payload: Any, ctx: JobContext) -> int:
        return sum(payload)

    job_id = add(sync_engine, "sum", [1, 2, 3], job_key="k", metadata={"tag": "t"})
    with Session(sync_engine) as session:
        waiting = get_job(session, job_id)
    assert waiting is not None
    assert (waiting.state, waiting.task, waiting.queue, waiting.payload) == (
        JobState.AVAILABLE,
        "sum",
        "bulk",
        [1, 2, 3],
    )
    assert (waiting.job_key, waiting.metadata["tag"], waiting.attempts) == ("k", "t", 0)
    assert not waiting.finished

    await WorkerRunner(config(), registry).run_once()

    async with AsyncSession(async_engine) as asession:
        done = await get_job_async(asession, job_id)
    assert done is not None
    assert (done.state, done.result, done.attempts, done.finished) == (
        JobState.COMPLETED,
        6,
        1,
        True,
    )
    assert done.finished_at is not None
    assert done.prune_at == done.finished_at + UTC_DAY
    with Session(sync_engine) as session:
        assert get_job(session, 424242) is None
        with pytest.raises(JobValidationError, match="id"):
            get_job(session, 0)


async def test_get_job_of_a_dead_job_points_at_its_dead_letter_entry(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("doomed")
    async def doomed(payload: Any, ctx: JobContext) -> None:
        raise PermanentError("no")

    job_id = add(sync_engine, "doomed", {"x": 1})
    await WorkerRunner(config(), registry).run_once()

    [entry] = rows(sync_engine, "SELECT id FROM {s}.dead_letter_jobs")
    with Session(sync_engine) as session:
        info = get_job(session, job_id)
    assert info is not None
    assert (info.state, info.dead_letter_id, info.failure_reason) == (
        DEAD_LETTERED,
        entry["id"],
        "permanent_error",
    )
    assert (info.id, info.payload, info.finished) == (job_id, {"x": 1}, True)
    assert info.last_error["message"] == "no"


# -- list_jobs -------------------------------------------------------------------------


async def test_list_jobs_pages_by_id_and_filters(
    sync_engine: Engine, async_engine: AsyncEngine
) -> None:
    ids = add_jobs(
        sync_engine,
        [JobSpec("a" if n % 2 else "b", n, queue="q1" if n < 20 else "q2") for n in range(25)],
    )
    seen: list[int] = []
    after = None
    with Session(sync_engine) as session:
        while True:
            page = list_jobs(session, limit=10, after=after)
            if not page:
                break
            seen += [info.id for info in page]
            after = page[-1].id
        only_a = list_jobs(session, task="a", queue="q1")
        with pytest.raises(JobValidationError, match="state"):
            list_jobs(session, state="finished")
        with pytest.raises(JobValidationError, match="limit"):
            list_jobs(session, limit=0)
    assert seen == ids
    assert [info.payload for info in only_a] == list(range(1, 20, 2))
    async with AsyncSession(async_engine) as asession:
        available = await list_jobs_async(asession, state=JobState.AVAILABLE, limit=3)
        none_running = await list_jobs_async(asession, state="running")
    assert [info.id for info in available] == ids[:3]
    assert none_running == []


# -- cancel_job ------------------------------------------------------------------------


async def test_cancel_job_cancels_waiting_jobs_at_once(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    ran: list[int] = []

    @registry.task("t")
    async def t(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    available = add(sync_engine, "t")
    scheduled = add_jobs(
        sync_engine,
        [JobSpec("t", None, run_at=_db_now(sync_engine) + UTC_DAY)],
    )[0]
    keep = add(sync_engine, "t")

    with Session(sync_engine) as session, session.begin():
        first = cancel_job(session, available)
        second = cancel_job(session, scheduled, retention=timedelta(hours=2))
    assert (first.outcome, first.state) == (CancelOutcome.CANCELLED, JobState.CANCELLED)
    assert second.outcome is CancelOutcome.CANCELLED
    for job_id, keep_for in ((available, UTC_DAY), (scheduled, timedelta(hours=2))):
        row = job(sync_engine, job_id)
        assert row is not None
        assert row["state"] == "cancelled"
        assert row["prune_at"] - row["finished_at"] == keep_for

    with Session(sync_engine) as session, session.begin():
        again = cancel_job(session, available)
        missing = cancel_job(session, 999_999)
    assert (again.outcome, again.state) == (CancelOutcome.ALREADY_FINISHED, JobState.CANCELLED)
    assert (missing.outcome, missing.state) == (CancelOutcome.NOT_FOUND, None)

    result = await WorkerRunner(config(), registry).run_once()
    assert result.succeeded == 1
    assert ran == [keep]
    with Session(sync_engine) as session, session.begin():
        finished = cancel_job(session, keep)
    assert (finished.outcome, finished.state) == (
        CancelOutcome.ALREADY_FINISHED,
        JobState.COMPLETED,
    )


async def _listening(runner: WorkerRunner) -> None:
    """Wait for the worker's LISTEN connection: a cancel sent before it is up is seen
    only at the next heartbeat."""
    await wait_for(
        lambda: runner.listener is not None and runner.listener.connected.is_set(),
        what="the LISTEN connection",
    )


def _db_now(engine: Engine) -> Any:
    return rows(engine, "SELECT now() AS now")[0]["now"]


async def test_cancel_job_stops_a_running_async_handler_at_its_next_await(
    sync_engine: Engine,
    async_engine: AsyncEngine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    runs: list[int] = []

    @registry.task("forever")
    async def forever(payload: Any, ctx: JobContext) -> None:
        runs.append(ctx.attempt)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = add(sync_engine, "forever")
    runner = WorkerRunner(config(), registry)
    handle = runner.start()
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        await _listening(runner)
        async with AsyncSession(async_engine) as asession, asession.begin():
            asked = await cancel_job_async(asession, job_id)
        assert (asked.outcome, asked.state) == (CancelOutcome.REQUESTED, JobState.RUNNING)
        await asyncio.wait_for(cancelled.wait(), timeout=10)
        await wait_for(
            lambda: (job(sync_engine, job_id) or {}).get("state") == "cancelled",
            what="the job to end cancelled",
        )
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=20)

    assert (result.cancelled, result.retried, result.succeeded) == (1, 0, 0)
    assert runs == [1]
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["attempts"]) == ("cancelled", 1)
    assert row["cancel_requested_at"] is not None
    assert row["last_error"]["message"] == "cancelled on request"
    async with AsyncSession(async_engine) as asession, asession.begin():
        again = await cancel_job_async(asession, job_id)
    assert again.outcome is CancelOutcome.ALREADY_FINISHED


async def test_a_sync_handler_sees_cancel_requested_and_its_job_ends_cancelled(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    started = threading.Event()

    @registry.task("polite")
    def polite(payload: Any, ctx: JobContext) -> str:
        started.set()
        if not ctx.cancel_event.wait(timeout=30):
            return "never asked"
        assert ctx.cancel_requested
        return "stopped early"

    job_id = add(sync_engine, "polite")
    runner = WorkerRunner(config(), registry)
    handle = runner.start()
    try:
        await asyncio.to_thread(started.wait, 10)
        await _listening(runner)
        with Session(sync_engine) as session, session.begin():
            assert cancel_job(session, job_id).outcome is CancelOutcome.REQUESTED
        await wait_for(
            lambda: (job(sync_engine, job_id) or {}).get("state") == "cancelled",
            what="the job to end cancelled",
        )
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=20)

    assert result.cancelled == 1
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["result"], row["attempts"]) == ("cancelled", "stopped early", 1)


async def test_a_failed_or_rescued_attempt_of_a_job_asked_to_stop_is_not_retried(
    db: Database, sync_engine: Engine
) -> None:
    failing = add(sync_engine, "t")
    claimed = await _claim(db)
    with Session(sync_engine) as session, session.begin():
        assert cancel_job(session, failing).outcome is CancelOutcome.REQUESTED
    written = await db.execute(
        job_retry_many,
        {
            "ids": [failing],
            "leases": [claimed["lease"]],
            "delays_ms": [1000],
            "errors": [error_json(None, 1, message="boom")],
            "refunds": [0],
            "keeps_ms": [60_000],
        },
    )
    assert [r["state"] for r in written] == ["cancelled"]
    row = job(sync_engine, failing)
    assert row is not None
    assert row["state"] == "cancelled"
    assert row["prune_at"] - row["finished_at"] == timedelta(minutes=1)

    stale = add(sync_engine, "t")
    await _claim(db, "gone")  # no heartbeat: its claim is rescued
    with Session(sync_engine) as session, session.begin():
        assert cancel_job(session, stale).outcome is CancelOutcome.REQUESTED
    rescuer = Rescuer(
        db, heartbeat_expiry=timedelta(seconds=60), stale_job_lock_timeout=timedelta(minutes=30)
    )
    assert (await rescuer.run_once()).rescued == 1
    rescued = job(sync_engine, stale)
    assert rescued is not None
    assert rescued["state"] == "cancelled"


# -- retry_job -------------------------------------------------------------------------


async def test_retry_job_makes_a_scheduled_job_available_now(
    sync_engine: Engine, async_engine: AsyncEngine
) -> None:
    later = add_jobs(sync_engine, [JobSpec("t", None, run_at=_db_now(sync_engine) + UTC_DAY)])[0]
    now = add(sync_engine, "t")
    with Session(sync_engine) as session, session.begin():
        made = retry_job(session, later)
        not_scheduled = retry_job(session, now)
    assert (made.outcome, made.state) == (RetryOutcome.MADE_AVAILABLE, JobState.AVAILABLE)
    assert (not_scheduled.outcome, not_scheduled.state) == (
        RetryOutcome.NOT_SCHEDULED,
        JobState.AVAILABLE,
    )
    row = job(sync_engine, later)
    assert row is not None
    assert row["state"] == "available"
    assert row["due_in"] <= 0
    async with AsyncSession(async_engine) as asession, asession.begin():
        missing = await retry_job_async(asession, 31337)
    assert (missing.outcome, missing.state) == (RetryOutcome.NOT_FOUND, None)


# -- wait_for_job ----------------------------------------------------------------------


async def test_wait_for_job_is_woken_by_the_finish_notification(
    db: Database, sync_engine: Engine, async_engine: AsyncEngine, schema: str
) -> None:
    job_id = add(sync_engine, "t")
    claimed = await _claim(db)
    # An hour between lookups: only the notification can wake the waiter in time.
    waiter = asyncio.ensure_future(
        wait_for_job(
            async_engine, job_id, timeout=timedelta(seconds=60), recheck=timedelta(hours=1)
        )
    )
    probe = (
        "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'idle'"
        f" AND query LIKE '%{schema}.jobs%cancel_requested_at%'"
    )
    await wait_for(
        lambda: waiter.done() or rows(sync_engine, probe)[0]["n"] >= 1,
        what="the waiter to look the running job up",
    )
    assert not waiter.done()
    done = await db.execute(
        job_complete_many,
        {
            "ids": [job_id],
            "leases": [claimed["lease"]],
            "keeps_ms": [60_000],
            "results": ['{"ok": true}'],
            "errors": [None],
            "done_channel": f"backfill_done_{schema}",
        },
    )
    assert [(r["id"], r["notified"]) for r in done] == [(job_id, 1)]
    info = await asyncio.wait_for(waiter, timeout=30)
    assert info is not None
    assert (info.state, info.result) == (JobState.COMPLETED, {"ok": True})


async def test_jobs_nobody_waits_for_finish_without_a_notification(
    db: Database, sync_engine: Engine, schema: str
) -> None:
    """A NOTIFY costs every listening backend a transaction: drains must not send them."""
    ids = add_jobs(sync_engine, [JobSpec("t", n) for n in range(3)])
    claimed = await db.execute(
        job_claim_batch, {"claim_queue": "bulk", "limit": 3, "worker_id": "w"}
    )
    done = await db.execute(
        job_complete_many,
        {
            "ids": [r["id"] for r in claimed],
            "leases": [r["lease"] for r in claimed],
            "keeps_ms": [60_000, 0, 60_000],
            "results": [None] * 3,
            "errors": [None] * 3,
            "done_channel": f"backfill_done_{schema}",
        },
    )
    assert sorted(r["id"] for r in done) == ids
    assert {r["notified"] for r in done} == {0}


async def test_wait_for_job_times_out_or_answers_none(
    sync_engine: Engine, async_engine: AsyncEngine
) -> None:
    job_id = add(sync_engine, "t")
    with pytest.raises(JobWaitTimeoutError) as caught:
        await wait_for_job(async_engine, job_id, timeout=timedelta(milliseconds=200))
    assert caught.value.job_id == job_id
    assert isinstance(caught.value, TimeoutError)
    assert await wait_for_job(async_engine, 777_777, timeout=timedelta(seconds=5)) is None
    with pytest.raises(JobValidationError, match="timeout"):
        await wait_for_job(async_engine, job_id, timeout=timedelta(0))


# -- queues ----------------------------------------------------------------------------


async def test_pause_stops_claiming_and_resume_restarts_it(
    sync_engine: Engine,
    async_engine: AsyncEngine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    ran: list[int] = []

    @registry.task("t")
    async def t(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    with Session(sync_engine) as session, session.begin():
        paused = pause_queue(session, "bulk")
    assert (paused.name, paused.paused, paused.concurrency) == ("bulk", True, None)
    job_id = add(sync_engine, "t")

    assert (await WorkerRunner(config(), registry).run_once()).succeeded == 0
    assert ran == []

    async with AsyncSession(async_engine) as asession, asession.begin():
        resumed = await resume_queue_async(asession, "bulk")
        await pause_queue_async(asession, "other")
    assert resumed.paused is False
    assert (await WorkerRunner(config(), registry).run_once()).succeeded == 1
    assert ran == [job_id]
    with Session(sync_engine) as session, pytest.raises(JobValidationError, match="name"):
        resume_queue(session, "")


async def test_queue_stats_counts_by_state_through_the_partial_indexes(
    sync_engine: Engine,
    async_engine: AsyncEngine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
    db: Database,
) -> None:
    @registry.task("t")
    async def t(payload: Any, ctx: JobContext) -> None:
        return None

    add_jobs(sync_engine, [JobSpec("t", n) for n in range(3)])
    await WorkerRunner(config(), registry).run_once()  # 3 completed
    add_jobs(sync_engine, [JobSpec("t", n) for n in range(4)])  # 4 available
    execute(
        sync_engine,
        "UPDATE {s}.jobs SET run_at = now() - interval '1 hour' WHERE state = 'available'",
    )
    add_jobs(sync_engine, [JobSpec("t", None, run_at=_db_now(sync_engine) + UTC_DAY)])
    add(sync_engine, "t", queue="fast")
    await _claim_fast(db)
    with Session(sync_engine) as session, session.begin():
        pause_queue(session, "idle")

    with Session(sync_engine) as session:
        stats = {s.name: s for s in queue_stats(session)}
        with_finished = queue_stats(session, "bulk", include_finished=True)
    assert sorted(stats) == ["bulk", "fast", "idle"]
    bulk = stats["bulk"]
    assert (bulk.available, bulk.scheduled, bulk.running, bulk.paused) == (4, 1, 0, False)
    assert bulk.oldest_available_age is not None
    assert bulk.oldest_available_age >= timedelta(minutes=59)
    assert (bulk.completed, bulk.cancelled) == (None, None)
    assert (stats["fast"].running, stats["fast"].oldest_available_age) == (1, None)
    assert (stats["idle"].available, stats["idle"].paused) == (0, True)
    [only_bulk] = with_finished
    assert (only_bulk.completed, only_bulk.cancelled, only_bulk.available) == (3, 0, 4)
    async with AsyncSession(async_engine) as asession:
        assert [s.name for s in await queue_stats_async(asession, "fast")] == ["fast"]

    execute(sync_engine, "ANALYZE {s}.jobs")
    with Session(sync_engine) as session:
        assert finished_jobs_estimate(session) == 3


async def _claim_fast(db: Database) -> None:
    await db.execute(job_claim_batch, {"claim_queue": "fast", "limit": 1, "worker_id": "w"})
