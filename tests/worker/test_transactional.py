"""Transactional tasks: the handler's writes and its job's completion commit together.

A ``ledger`` table with a unique key stands for the application's business rows.
Each test reads what landed in the real database: rows, job states, follow-up jobs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec, enqueue, enqueue_async
from backfill_sa.jobs import cancel_job
from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import add, add_jobs, count, execute, job, make_due, rows, wait_for

LATER = RetryPolicy(initial_delay=timedelta(hours=1), max_delay=timedelta(hours=1), jitter=0.0)
"""Retries wait until the test makes them due."""

ELSEWHERE = "elsewhere"
"""Queue of the follow-up jobs: no test worker serves it, so they stay as enqueued."""


def _ledger(engine: Engine) -> None:
    execute(engine, "CREATE TABLE {s}.ledger (key text PRIMARY KEY, job_id bigint NOT NULL)")


def _insert(schema: str) -> Any:
    return text(f'INSERT INTO "{schema}".ledger (key, job_id) VALUES (:k, :j)')


def _keys(engine: Engine) -> list[str]:
    return [r["key"] for r in rows(engine, "SELECT key FROM {s}.ledger ORDER BY key")]


async def test_async_handler_writes_and_completion_commit_together(
    schema: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    _ledger(sync_engine)
    registry = TaskRegistry()

    @registry.task("book", transactional=True)
    async def book(payload: Any, ctx: JobContext) -> dict[str, int]:
        await ctx.async_session.execute(_insert(schema), {"k": payload["key"], "j": ctx.job_id})
        return {"booked": ctx.job_id}

    ids = add_jobs(sync_engine, [JobSpec("book", {"key": f"k{n}"}) for n in range(20)])

    result = await WorkerRunner(config(queues={"bulk": 4}), registry).run_once()

    assert (result.succeeded, result.refused, result.retried) == (20, 0, 0)
    assert _keys(sync_engine) == sorted(f"k{n}" for n in range(20))
    done = rows(sync_engine, "SELECT id, state, result FROM {s}.jobs ORDER BY id")
    assert [(r["id"], r["state"], r["result"]) for r in done] == [
        (i, "completed", {"booked": i}) for i in ids
    ]


async def test_sync_handler_gets_a_sync_session_and_retention_zero_deletes_the_job(
    schema: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    _ledger(sync_engine)
    registry = TaskRegistry()
    threads: set[str] = set()

    @registry.task("book", transactional=True, retention=timedelta(0))
    def book(payload: Any, ctx: JobContext) -> None:
        threads.add(threading.current_thread().name)
        ctx.sync_session.execute(_insert(schema), {"k": payload["key"], "j": ctx.job_id})

    add_jobs(sync_engine, [JobSpec("book", {"key": f"k{n}"}) for n in range(5)])

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.succeeded, result.refused) == (5, 0)
    assert _keys(sync_engine) == [f"k{n}" for n in range(5)]
    assert count(sync_engine, "jobs") == 0
    assert all(name.startswith("backfill-job") for name in threads)


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_failed_attempt_leaves_no_rows_and_no_follow_up_then_the_retry_commits(
    flavour: str, schema: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    _ledger(sync_engine)
    registry = TaskRegistry()
    attempts: list[int] = []

    if flavour == "async":

        @registry.task("book", transactional=True, retry=LATER)
        async def book_async(payload: Any, ctx: JobContext) -> None:
            attempts.append(ctx.attempt)
            session = ctx.async_session
            await session.execute(_insert(schema), {"k": payload["key"], "j": ctx.job_id})
            await enqueue_async(
                session, "follow_up", {"after": ctx.job_id, "try": ctx.attempt}, queue=ELSEWHERE
            )
            if ctx.attempt == 1:
                raise RuntimeError("first attempt fails after writing")

    else:

        @registry.task("book", transactional=True, retry=LATER)
        def book_sync(payload: Any, ctx: JobContext) -> None:
            attempts.append(ctx.attempt)
            session = ctx.sync_session
            session.execute(_insert(schema), {"k": payload["key"], "j": ctx.job_id})
            enqueue(
                session, "follow_up", {"after": ctx.job_id, "try": ctx.attempt}, queue=ELSEWHERE
            )
            if ctx.attempt == 1:
                raise RuntimeError("first attempt fails after writing")

    job_id = add(sync_engine, "book", {"key": "only"})
    runner = WorkerRunner(config(), registry)

    first = await runner.run_once()

    assert (first.retried, first.succeeded) == (1, 0)
    assert _keys(sync_engine) == []
    assert count(sync_engine, "jobs", "task = 'follow_up'") == 0
    row = job(sync_engine, job_id)
    assert row is not None
    assert row["state"] in ("scheduled", "available")
    assert row["attempts"] == 1
    assert "first attempt fails" in str(row["last_error"])

    make_due(sync_engine, job_id)
    second = await runner.run_once()

    assert (second.retried, second.succeeded) == (0, 1)
    assert attempts == [1, 2]
    assert _keys(sync_engine) == ["only"]
    follow = rows(sync_engine, "SELECT payload FROM {s}.jobs WHERE task = 'follow_up'")
    assert [r["payload"] for r in follow] == [{"after": job_id, "try": 2}]
    assert job(sync_engine, job_id)["state"] == "completed"  # type: ignore[index]


async def test_a_lost_claim_rolls_the_handlers_writes_back_and_counts_as_refused(
    schema: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    _ledger(sync_engine)
    registry = TaskRegistry()

    @registry.task("book", transactional=True)
    async def book(payload: Any, ctx: JobContext) -> None:
        session = ctx.async_session
        await session.execute(_insert(schema), {"k": "once", "j": ctx.job_id})
        await enqueue_async(session, "follow_up", {"try": ctx.attempt}, queue=ELSEWHERE)
        if ctx.attempt == 1:
            # Meanwhile the claim is rescued: a new lease, the job available again.
            await asyncio.to_thread(
                execute,
                sync_engine,
                "UPDATE {s}.jobs SET state = 'available', lease = lease + 1,"
                " locked_by = NULL WHERE id = :j",
                j=ctx.job_id,
            )

    job_id = add(sync_engine, "book")

    result = await WorkerRunner(config(), registry).run_once()

    # The first attempt's commit was refused: its row and follow-up never landed;
    # the attempt of the new claim committed them once.
    assert (result.succeeded, result.refused, result.retried) == (1, 1, 0)
    assert rows(sync_engine, "SELECT key, job_id FROM {s}.ledger") == [
        {"key": "once", "job_id": job_id}
    ]
    follow = rows(sync_engine, "SELECT payload FROM {s}.jobs WHERE task = 'follow_up'")
    assert [r["payload"] for r in follow] == [{"try": 2}]
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["lease"], row["attempts"]) == (
        "completed",
        3,
        2,
    )


async def test_the_registrys_session_factories_make_the_sessions(
    schema: str,
    sync_engine: Engine,
    async_engine: AsyncEngine,
    config: Callable[..., WorkerConfig],
) -> None:
    _ledger(sync_engine)
    seen: list[str] = []
    event.listen(sync_engine, "before_cursor_execute", lambda *a: seen.append("app sync"))
    registry = TaskRegistry(
        session_factory=async_sessionmaker(async_engine, info={"app": "async"}),
        sync_session_factory=sessionmaker(sync_engine, info={"app": "sync"}),
    )
    used: list[str] = []

    @registry.task("a", transactional=True)
    async def a(payload: Any, ctx: JobContext) -> None:
        used.append(ctx.async_session.info["app"])
        await ctx.async_session.execute(_insert(schema), {"k": "a", "j": ctx.job_id})

    @registry.task("s", transactional=True)
    def s(payload: Any, ctx: JobContext) -> None:
        used.append(ctx.sync_session.info["app"])
        ctx.sync_session.execute(_insert(schema), {"k": "s", "j": ctx.job_id})

    add_jobs(sync_engine, [JobSpec("a"), JobSpec("s")])
    seen.clear()

    result = await WorkerRunner(config(), registry).run_once()

    assert result.succeeded == 2
    assert sorted(used) == ["async", "sync"]
    assert seen, "the app's engine listener saw the sync task's statements"
    assert _keys(sync_engine) == ["a", "s"]


async def test_a_handler_that_commits_itself_is_dead_lettered(
    schema: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    _ledger(sync_engine)
    registry = TaskRegistry()

    @registry.task("book", transactional=True)
    async def book(payload: Any, ctx: JobContext) -> None:
        await ctx.async_session.execute(_insert(schema), {"k": "x", "j": ctx.job_id})
        await ctx.async_session.commit()

    add(sync_engine, "book")

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.succeeded, result.dead_lettered) == (0, 1)
    dead = rows(sync_engine, "SELECT failure_reason, last_error FROM {s}.dead_letter_jobs")
    assert dead[0]["failure_reason"] == "permanent_error"
    assert "TransactionEndedError" in dead[0]["last_error"]["type"]


def test_ctx_session_accessors_name_the_wrong_flavour() -> None:
    from sqlalchemy.orm import Session as SyncSession

    ctx = JobContext(
        job_id=1,
        task="t",
        queue="bulk",
        attempt=1,
        max_attempts=3,
        priority=0,
        run_at=None,  # type: ignore[arg-type]
        enqueued_at=None,  # type: ignore[arg-type]
        metadata={},
        worker_id="w",
        logger=None,  # type: ignore[arg-type]
        session=SyncSession(),
    )
    assert isinstance(ctx.sync_session, Session)
    with pytest.raises(TypeError, match="not an AsyncSession"):
        _ = ctx.async_session


async def test_cancelling_before_the_commit_rolls_back_and_ends_cancelled(
    schema: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    _ledger(sync_engine)
    registry = TaskRegistry()
    started = threading.Event()

    @registry.task("book", transactional=True)
    def book(payload: Any, ctx: JobContext) -> str:
        ctx.sync_session.execute(_insert(schema), {"k": "cancelled", "j": ctx.job_id})
        started.set()
        assert ctx.cancel_event.wait(timeout=30)
        return "returned anyway"

    job_id = add(sync_engine, "book")
    runner = WorkerRunner(config(), registry)
    handle = runner.start()
    try:
        assert await asyncio.to_thread(started.wait, 30)
        with Session(sync_engine) as session, session.begin():
            cancel_job(session, job_id)
        runner.cancel_running(job_id)  # what the worker does when it hears of it
        await wait_for(
            lambda: (job(sync_engine, job_id) or {}).get("state") == "cancelled",
            what="the job to end cancelled",
        )
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=20)

    assert (result.cancelled, result.succeeded, result.refused) == (1, 0, 0)
    assert _keys(sync_engine) == []
