"""BackfillClient and SyncBackfillClient against a real PostgreSQL: owned and borrowed
engines, every operation, the same validation and results as the session functions,
and jobs a worker claims."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import Engine, create_engine, delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from backfill_sa import JobContext, TaskRegistry, WorkerConfig
from backfill_sa.client import BackfillClient, SyncBackfillClient
from backfill_sa.dburl import sync_url
from backfill_sa.dlq import DeadLetterNotFoundError
from backfill_sa.enqueue import (
    EnqueueOutcome,
    EnqueueResult,
    JobSpec,
    enqueue,
    enqueue_bulk,
    enqueue_critical,
    enqueue_emergency,
    enqueue_fast,
)
from backfill_sa.errors import ConfigurationError, JobValidationError
from backfill_sa.models import DeadLetterJob, FailureReason, Job
from backfill_sa.retry import AGGRESSIVE
from backfill_sa.worker import WorkerRunner

UTC = dt.timezone.utc
INSERTED, REPLACED, UNCHANGED = (
    EnqueueOutcome.INSERTED,
    EnqueueOutcome.REPLACED,
    EnqueueOutcome.UNCHANGED,
)
OWNERSHIP = ["owned", "borrowed"]


@pytest.fixture(params=OWNERSHIP)
async def aclient(
    request: pytest.FixtureRequest, database_url: str, schema: str, async_engine: AsyncEngine
) -> AsyncIterator[BackfillClient]:
    if request.param == "owned":
        client = BackfillClient(database_url, schema=schema)
    else:
        client = BackfillClient(async_engine)  # the engine maps ``backfill`` already
    async with client:
        yield client


@pytest.fixture(params=OWNERSHIP)
def sclient(
    request: pytest.FixtureRequest, database_url: str, schema: str, sync_engine: Engine
) -> Iterator[SyncBackfillClient]:
    if request.param == "owned":
        client = SyncBackfillClient(database_url, schema=schema)
    else:
        client = SyncBackfillClient(sync_engine)
    with client:
        yield client


def _jobs(engine: Engine) -> list[Job]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def _row(job: Job) -> tuple[Any, ...]:
    return (job.task, job.queue, job.priority, job.payload, job.max_attempts, job.state)


def _dead_letter(**overrides: Any) -> DeadLetterJob:
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, Any] = {
        "original_job_id": 1000,
        "task": "send_email",
        "queue": "bulk",
        "payload": {"to": "a@example.com"},
        "priority": 0,
        "max_attempts": 8,
        "failure_reason": FailureReason.MAX_ATTEMPTS_EXCEEDED.value,
        "failure_count": 8,
        "last_error": {"type": "ValueError", "message": "boom"},
        "meta": {},
        "original_created_at": t0,
        "original_run_at": t0,
        "failed_at": t0,
    }
    values.update(overrides)
    return DeadLetterJob(**values)


def _add_dead_letters(engine: Engine, *entries: DeadLetterJob) -> list[int]:
    with Session(engine) as session, session.begin():
        session.add_all(entries)
        session.flush()
        return [e.id for e in entries]


# -- enqueue: the same rows and results as the session functions ------------------------

HELPERS: list[tuple[str, Callable[..., EnqueueResult]]] = [
    ("enqueue_fast", enqueue_fast),
    ("enqueue_bulk", enqueue_bulk),
    ("enqueue_critical", enqueue_critical),
    ("enqueue_emergency", enqueue_emergency),
]


async def test_async_enqueue_and_helpers_write_what_the_session_functions_write(
    aclient: BackfillClient, sync_engine: Engine
) -> None:
    with Session(sync_engine) as session, session.begin():
        expected = [enqueue(session, "t", {"n": 0}, queue="q", priority=3, max_attempts=2)]
        expected += [fn(session, "t", {"n": 1}) for _, fn in HELPERS]
    by_session = [_row(j) for j in _jobs(sync_engine)]
    with sync_engine.begin() as conn:
        conn.execute(delete(Job.__table__))

    results = [await aclient.enqueue("t", {"n": 0}, queue="q", priority=3, max_attempts=2)]
    results += [await getattr(aclient, name)("t", {"n": 1}) for name, _ in HELPERS]

    jobs = _jobs(sync_engine)
    assert [_row(j) for j in jobs] == by_session
    assert [r.outcome for r in results] == [r.outcome for r in expected] == [INSERTED] * 5
    assert [r.id for r in results] == [j.id for j in jobs]


def test_sync_enqueue_and_helpers_write_what_the_session_functions_write(
    sclient: SyncBackfillClient, sync_engine: Engine
) -> None:
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "t", {"n": 0}, queue="q", priority=3, max_attempts=2)
        for _, fn in HELPERS:
            fn(session, "t", {"n": 1})
    by_session = [_row(j) for j in _jobs(sync_engine)]
    with sync_engine.begin() as conn:
        conn.execute(delete(Job.__table__))

    results = [sclient.enqueue("t", {"n": 0}, queue="q", priority=3, max_attempts=2)]
    results += [getattr(sclient, name)("t", {"n": 1}) for name, _ in HELPERS]

    jobs = _jobs(sync_engine)
    assert [_row(j) for j in jobs] == by_session
    assert [r.id for r in results] == [j.id for j in jobs]


async def test_async_job_key_modes(aclient: BackfillClient, sync_engine: Engine) -> None:
    later = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    first = await aclient.enqueue("t", {"v": 1}, job_key="k", run_at=later)
    replaced = await aclient.enqueue("t", {"v": 2}, job_key="k")
    kept = await aclient.enqueue("t", {"v": 3}, job_key="k", job_key_mode="unsafe_dedupe")
    other = await aclient.enqueue_fast("t", {"v": 4}, job_key="k2", run_at=later)
    preserved = await aclient.enqueue_fast(
        "t", {"v": 5}, job_key="k2", job_key_mode="preserve_run_at"
    )

    assert (replaced.id, replaced.outcome) == (first.id, REPLACED)
    assert (kept.id, kept.outcome) == (first.id, UNCHANGED)
    assert (preserved.id, preserved.outcome) == (other.id, REPLACED)
    jobs = {j.job_key: j for j in _jobs(sync_engine)}
    assert jobs["k"].payload == {"v": 2}
    assert jobs["k"].state == "available"
    assert (jobs["k2"].payload, jobs["k2"].state) == ({"v": 5}, "scheduled")


def test_sync_job_key_modes(sclient: SyncBackfillClient, sync_engine: Engine) -> None:
    first = sclient.enqueue("t", {"v": 1}, job_key="k")
    replaced = sclient.enqueue("t", {"v": 2}, job_key="k")
    kept = sclient.enqueue("t", {"v": 3}, job_key="k", job_key_mode="unsafe_dedupe")
    assert (replaced.id, replaced.outcome) == (first.id, REPLACED)
    assert (kept.id, kept.outcome) == (first.id, UNCHANGED)
    assert [j.payload for j in _jobs(sync_engine)] == [{"v": 2}]


async def test_async_many_and_batch(aclient: BackfillClient, sync_engine: Engine) -> None:
    many = await aclient.enqueue_many(
        [JobSpec("a", {"i": 1}), JobSpec("b", job_key="kb"), JobSpec("c", retry=AGGRESSIVE)]
    )
    batch = await aclient.enqueue_batch("d", [{"i": i} for i in range(3)], queue="fast")
    jobs = _jobs(sync_engine)
    assert [r.id for r in many + batch] == [j.id for j in jobs]
    assert [j.task for j in jobs] == ["a", "b", "c", "d", "d", "d"]
    assert [j.queue for j in jobs[3:]] == ["fast"] * 3
    assert jobs[2].retry_policy == AGGRESSIVE.to_json()


def test_sync_many_and_batch(sclient: SyncBackfillClient, sync_engine: Engine) -> None:
    many = sclient.enqueue_many([JobSpec("a"), JobSpec("b", job_key="kb")])
    batch = sclient.enqueue_batch("d", [{"i": 1}, {"i": 2}])
    assert [r.outcome for r in many + batch] == [INSERTED] * 4
    assert [j.task for j in _jobs(sync_engine)] == ["a", "b", "d", "d"]


async def test_batch_and_many_are_all_or_nothing(
    aclient: BackfillClient, sync_engine: Engine
) -> None:
    with pytest.raises(JobValidationError) as invalid:
        await aclient.enqueue_batch("d", [{"i": 1}, {"bad": {1, 2}}])
    assert invalid.value.field.startswith("payloads[1]")
    with pytest.raises(JobValidationError):
        await aclient.enqueue_many([JobSpec("a"), JobSpec("b", queue="x" * 101)])
    assert _jobs(sync_engine) == []


# -- identical validation errors --------------------------------------------------------

BAD_ARGUMENTS: list[dict[str, Any]] = [
    {"task": ""},
    {"task": "t", "queue": ""},
    {"task": "t", "priority": 40_000},
    {"task": "t", "payload": {"x": float("nan")}},
    {"task": "t", "payload": {"x": object()}},
    {"task": "t", "run_at": dt.datetime(2026, 1, 1)},
    {"task": "t", "max_attempts": 0},
    {"task": "t", "job_key": ""},
    {"task": "t", "job_key_mode": "sometimes"},
    {"task": "t", "metadata": ["not", "a", "dict"]},
    {"task": "t", "payload": "x" * 100, "max_payload_bytes": 10},
]


def _session_error(engine: Engine, arguments: dict[str, Any]) -> JobValidationError:
    with Session(engine) as session, pytest.raises(JobValidationError) as caught:
        enqueue(session, **arguments)
    return caught.value


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS, ids=lambda a: "-".join(a)[:40])
async def test_async_validation_errors_are_enqueues(
    aclient: BackfillClient, sync_engine: Engine, arguments: dict[str, Any]
) -> None:
    expected = _session_error(sync_engine, arguments)
    with pytest.raises(JobValidationError) as caught:
        await aclient.enqueue(**arguments)
    assert (caught.value.field, caught.value.rule) == (expected.field, expected.rule)
    assert str(caught.value) == str(expected)
    assert (await aclient.enqueue("after")).outcome is INSERTED  # the client still works
    assert [j.task for j in _jobs(sync_engine)] == ["after"]


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS, ids=lambda a: "-".join(a)[:40])
def test_sync_validation_errors_are_enqueues(
    sclient: SyncBackfillClient, sync_engine: Engine, arguments: dict[str, Any]
) -> None:
    expected = _session_error(sync_engine, arguments)
    with pytest.raises(JobValidationError) as caught:
        sclient.enqueue(**arguments)
    assert str(caught.value) == str(expected)
    assert sclient.enqueue("after").outcome is INSERTED
    assert [j.task for j in _jobs(sync_engine)] == ["after"]


async def test_many_refuses_what_enqueue_many_refuses(aclient: BackfillClient) -> None:
    with pytest.raises(JobValidationError, match=r"specs\[1\]: must be a JobSpec"):
        await aclient.enqueue_many([JobSpec("a"), "b"])  # type: ignore[list-item]


# -- a worker runs what the client enqueued ----------------------------------------------


async def test_worker_claims_client_jobs(
    aclient: BackfillClient, database_url: str, schema: str
) -> None:
    seen: list[object] = []
    registry = TaskRegistry()

    @registry.task("work")
    async def work(payload: object, ctx: JobContext) -> None:
        seen.append(payload)

    await aclient.enqueue("work", {"n": 1})
    await aclient.enqueue_fast("work", {"n": 2})
    await aclient.enqueue_batch("work", [{"n": 3}])
    with SyncBackfillClient(database_url, schema=schema) as sync_client:
        sync_client.enqueue_critical("work", {"n": 4})
    config = WorkerConfig(database_url=database_url, schema=schema, queues={"bulk": 2, "fast": 2})
    result = await WorkerRunner(config, registry).run_once()
    assert result.succeeded == 4
    assert sorted(p["n"] for p in seen) == [1, 2, 3, 4]  # type: ignore[index]


# -- transaction(): business rows and jobs commit together -------------------------------


async def test_async_transaction_commits_or_rolls_back(
    aclient: BackfillClient, sync_engine: Engine
) -> None:
    from backfill_sa.enqueue import enqueue_async

    async def fail_after_enqueue() -> None:
        async with aclient.transaction() as session:
            await enqueue_async(session, "dropped", {})
            raise RuntimeError("business rule failed")

    async with aclient.transaction() as session:
        await enqueue_async(session, "kept", {})
    with pytest.raises(RuntimeError):
        await fail_after_enqueue()
    assert [j.task for j in _jobs(sync_engine)] == ["kept"]


def test_sync_transaction_commits_or_rolls_back(
    sclient: SyncBackfillClient, sync_engine: Engine
) -> None:
    def fail_after_enqueue() -> None:
        with sclient.transaction() as session:
            enqueue(session, "dropped", {})
            raise RuntimeError("business rule failed")

    with sclient.transaction() as session:
        enqueue(session, "kept", {})
    with pytest.raises(RuntimeError):
        fail_after_enqueue()
    assert [j.task for j in _jobs(sync_engine)] == ["kept"]


# -- the dead-letter queue -------------------------------------------------------------


async def test_async_dead_letter_operations(aclient: BackfillClient, sync_engine: Engine) -> None:
    first, second, third = _add_dead_letters(
        sync_engine, _dead_letter(), _dead_letter(task="other"), _dead_letter()
    )
    listed = await aclient.list_dead_letters(task="send_email")
    assert sorted(e.id for e in listed) == [first, third]
    assert listed[0].payload == {"to": "a@example.com"}  # loaded, detached
    assert await aclient.count_dead_letters() == 3
    got = await aclient.get_dead_letter(second)
    assert got is not None
    assert got.task == "other"
    await aclient.annotate_dead_letter(first, "looked at it")
    requeued = await aclient.requeue_dead_letters([first])
    assert len(requeued.requeued_ids) == 1
    assert await aclient.delete_dead_letters([second]) == 1
    assert await aclient.purge_dead_letters(older_than=dt.timedelta(days=1)) == 1
    assert await aclient.count_dead_letters() == 0
    jobs = _jobs(sync_engine)
    assert [j.task for j in jobs] == ["send_email"]
    assert jobs[0].meta["backfill"]["dead_letter_notes"] == "looked at it"
    with pytest.raises(DeadLetterNotFoundError):
        await aclient.annotate_dead_letter(first, "gone")


def test_sync_dead_letter_operations(sclient: SyncBackfillClient, sync_engine: Engine) -> None:
    first, second = _add_dead_letters(sync_engine, _dead_letter(), _dead_letter(queue="fast"))
    assert [e.id for e in sclient.list_dead_letters(queue="fast")] == [second]
    assert sclient.count_dead_letters(task="send_email") == 2
    assert sclient.get_dead_letter(first) is not None
    sclient.annotate_dead_letter(first, "note")
    assert len(sclient.requeue_dead_letters([first]).job_ids) == 1
    assert sclient.delete_dead_letters(queue="fast") == 1
    assert sclient.purge_dead_letters(older_than=dt.timedelta(0)) == 0
    assert sclient.count_dead_letters() == 0
    with pytest.raises(JobValidationError):
        sclient.list_dead_letters(limit=0)


# -- engines, schemas, connections -------------------------------------------------------


def _backends(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(text("pg_stat_activity"))
        found = conn.execute(query.where(text("application_name = :n")), {"n": name})
        return int(found.scalar_one())


async def test_async_owned_engine_is_disposed_borrowed_is_not(
    database_url: str, schema: str, admin_engine: Engine
) -> None:
    name = f"client-{uuid.uuid4().hex[:8]}"
    settings = {"server_settings": {"application_name": name}}
    async with BackfillClient(database_url, schema=schema, connect_args=settings) as client:
        await asyncio.gather(*(client.enqueue("t") for _ in range(3)))  # several kept
        await client.enqueue_many([JobSpec("a")])
        assert _backends(admin_engine, name) >= 2
        pool = client.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() >= 2  # kept by the client
    # Disposed: its pool closed everything and was replaced (the server may list the
    # closed backends a moment longer, so the pool is what the test asks).
    assert client.engine.pool is not pool
    assert (pool.checkedout(), pool.checkedin()) == (0, 0)

    from sqlalchemy.ext.asyncio import create_async_engine

    from backfill_sa.dburl import async_url

    borrowed = create_async_engine(async_url(database_url), connect_args=settings)
    try:
        async with BackfillClient(borrowed, schema=schema) as client:
            await client.enqueue("t")
        assert _backends(admin_engine, name) == 1  # back in the app's pool, still open
        async with borrowed.connect() as conn:
            count = await conn.execute(text(f"SELECT count(*) FROM {schema}.jobs"))
            assert count.scalar() == 5
    finally:
        await borrowed.dispose()


def test_sync_owned_engine_is_disposed_borrowed_is_not(
    database_url: str, schema: str, admin_engine: Engine
) -> None:
    name = f"client-{uuid.uuid4().hex[:8]}"
    with SyncBackfillClient(
        database_url, schema=schema, connect_args={"application_name": name}
    ) as client:
        client.enqueue("t")
        assert _backends(admin_engine, name) == 1
        pool = client.engine.pool
        assert isinstance(pool, QueuePool)
    assert client.engine.pool is not pool  # disposed: closed and replaced
    assert (pool.checkedout(), pool.checkedin()) == (0, 0)
    borrowed = create_engine(sync_url(database_url), connect_args={"application_name": name})
    try:
        with SyncBackfillClient(borrowed, schema=schema) as client:
            client.enqueue("t")
        assert _backends(admin_engine, name) == 1
    finally:
        borrowed.dispose()


async def test_concurrent_async_enqueues_each_get_a_connection(
    aclient: BackfillClient, sync_engine: Engine
) -> None:
    results = await asyncio.gather(*(aclient.enqueue("t", {"i": i}) for i in range(20)))
    assert len({r.id for r in results}) == 20
    assert sorted(j.payload["i"] for j in _jobs(sync_engine)) == list(range(20))


async def test_trace_context_reaches_metadata(aclient: BackfillClient, sync_engine: Engine) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request"):
        await aclient.enqueue("traced", metadata={"tag": "x"})
        await aclient.enqueue("traced-keyed", job_key="k")
    for job in _jobs(sync_engine):
        assert "traceparent" in job.meta, job.task
    assert _jobs(sync_engine)[0].meta["tag"] == "x"


async def test_database_errors_are_dbapi_errors_and_the_client_recovers(
    database_url: str, schema: str, sync_engine: Engine
) -> None:
    async with BackfillClient(database_url, schema="no_such_schema") as client:
        with pytest.raises(DBAPIError):
            await client.enqueue("t")
    with (
        SyncBackfillClient(database_url, schema="no_such_schema") as sync_client,
        pytest.raises(DBAPIError),
    ):
        sync_client.enqueue("t")
    name = f"client-{uuid.uuid4().hex[:8]}"
    settings = {"server_settings": {"application_name": name}}
    async with BackfillClient(database_url, schema=schema, connect_args=settings) as client:
        await client.enqueue("first")
        with sync_engine.begin() as conn:  # end the connection the client keeps
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": name},
            )
        with pytest.raises(DBAPIError) as lost:
            await client.enqueue("lost")
        assert lost.value.connection_invalidated
        assert (await client.enqueue("again")).outcome is INSERTED
    assert [j.task for j in _jobs(sync_engine)] == ["first", "again"]


def test_bad_arguments_are_configuration_errors(database_url: str, sync_engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="url_or_engine"):
        SyncBackfillClient(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="url_or_engine"):
        BackfillClient(sync_engine)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="schema"):
        SyncBackfillClient(database_url, schema="Bad-Name")
    with pytest.raises(ConfigurationError, match="engine_options"):
        SyncBackfillClient(sync_engine, pool_size=3)


def test_docs_snippets_parse_and_name_real_operations() -> None:
    import ast
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        compile(block, "docs/client.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    table = text.split("## Operations", 1)[1].split("## How it runs", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = {n for line in rows for n in re.findall(r"`([a-z_]+)`", line.split(" | ")[0])}
    assert {"enqueue", "enqueue_batch", "list_dead_letters", "get_job", "queue_stats"} <= named
    for name in named - {"transaction", "wait_for_job"}:
        assert hasattr(BackfillClient, name), name
        assert hasattr(SyncBackfillClient, name), name
    assert hasattr(BackfillClient, "wait_for_job")


async def test_cancelled_enqueue_closes_its_connection_and_the_client_goes_on(
    database_url: str, schema: str, sync_engine: Engine
) -> None:
    async with BackfillClient(database_url, schema=schema) as client:
        await client.enqueue("first")
        with sync_engine.begin() as conn:  # hold the table so the next insert waits
            conn.execute(text(f"LOCK TABLE {schema}.jobs IN EXCLUSIVE MODE"))
            waiting = asyncio.ensure_future(client.enqueue("cancelled"))
            await asyncio.sleep(0)  # let it send its statement
            for _ in range(200):
                if await _blocked(sync_engine):
                    break
                await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert (await client.enqueue("after")).outcome is INSERTED
    # The server ran the cancelled insert once the lock went (nobody told it to stop):
    # a cancelled enqueue may have been written, as docs/client.md says.
    assert {"first", "after"} <= {j.task for j in _jobs(sync_engine)}


async def _blocked(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'WITH ins AS%'"
            )
        )
        return bool(found.scalar_one())


def test_sync_client_shared_by_threads(sclient: SyncBackfillClient, sync_engine: Engine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: sclient.enqueue("t", {"i": i}), range(60)))
    assert len({r.id for r in results}) == 60
    assert sorted(j.payload["i"] for j in _jobs(sync_engine)) == list(range(60))


# -- jobs and queues (backfill_sa.jobs, backfill_sa.queues) -----------------------------


async def test_async_job_and_queue_operations(
    aclient: BackfillClient, database_url: str, schema: str
) -> None:
    from backfill_sa.jobs import CancelOutcome, RetryOutcome
    from backfill_sa.states import JobState

    later = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    waiting = await aclient.enqueue("work", {"n": 1}, queue="q1")
    scheduled = await aclient.enqueue("work", {"n": 2}, queue="q1", run_at=later)
    info = await aclient.get_job(waiting.id)
    assert info is not None
    assert (info.state, info.payload, info.queue) == (JobState.AVAILABLE, {"n": 1}, "q1")
    assert [j.id for j in await aclient.list_jobs(queue="q1")] == [waiting.id, scheduled.id]
    assert (await aclient.pause_queue("q1")).paused
    stats = await aclient.queue_stats("q1")
    assert (stats[0].paused, stats[0].available, stats[0].scheduled) == (True, 1, 1)
    assert not (await aclient.resume_queue("q1")).paused
    retried = await aclient.retry_job(scheduled.id)
    assert (retried.outcome, retried.state) == (RetryOutcome.MADE_AVAILABLE, JobState.AVAILABLE)
    cancelled = await aclient.cancel_job(waiting.id)
    assert (cancelled.outcome, cancelled.state) == (CancelOutcome.CANCELLED, JobState.CANCELLED)

    registry = TaskRegistry()

    @registry.task("work")
    async def work(payload: object, ctx: JobContext) -> int:
        return 7

    config = WorkerConfig(database_url=database_url, schema=schema, queues={"q1": 1})
    assert (await WorkerRunner(config, registry).run_once()).succeeded == 1
    done = await aclient.wait_for_job(scheduled.id, timeout=dt.timedelta(seconds=30))
    assert done is not None
    assert (done.state, done.result) == (JobState.COMPLETED, 7)
    assert await aclient.get_job(424242) is None


def test_sync_job_and_queue_operations(sclient: SyncBackfillClient) -> None:
    from backfill_sa.jobs import CancelOutcome
    from backfill_sa.states import JobState

    job = sclient.enqueue("work", {"n": 1}, queue="q2")
    found = sclient.get_job(job.id)
    assert found is not None
    assert found.state == JobState.AVAILABLE
    assert [j.id for j in sclient.list_jobs(state="available")] == [job.id]
    assert sclient.pause_queue("q2").paused
    assert sclient.queue_stats("q2")[0].paused
    assert not sclient.resume_queue("q2").paused
    assert sclient.retry_job(job.id).state == JobState.AVAILABLE
    assert sclient.cancel_job(job.id).outcome == CancelOutcome.CANCELLED
    with pytest.raises(JobValidationError, match="id"):
        sclient.get_job(0)
