"""enqueue_batch: one task, shared options, many payloads, against PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa import JobContext, Priority, TaskRegistry, enqueue_batch, enqueue_batch_async
from backfill_sa.enqueue import BATCH_SIZE, EnqueueOutcome
from backfill_sa.errors import JobValidationError
from backfill_sa.models import Job
from backfill_sa.retry import AGGRESSIVE

UTC = dt.timezone.utc


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Job)).scalar_one()


def test_every_job_gets_its_payload_and_the_shared_options(sync_engine: Engine) -> None:
    run_at = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    payloads: list[object] = [{"i": i} for i in range(5)] + [None, [1, "two"]]
    with Session(sync_engine) as session, session.begin():
        results = enqueue_batch(
            session,
            "report",
            payloads,
            queue="reports",
            priority=Priority.FAST_HIGH,
            run_at=run_at,
            retry=AGGRESSIVE,
            metadata={"tenant": "a"},
        )
    assert [r.outcome for r in results] == [EnqueueOutcome.INSERTED] * 7
    assert [r.id for r in results] == sorted(r.id for r in results)
    with Session(sync_engine) as session:
        jobs = {job.id: job for job in session.scalars(select(Job))}
    assert [jobs[r.id].payload for r in results] == [*payloads[:5], {}, [1, "two"]]
    for result in results:
        job = jobs[result.id]
        assert (job.task, job.queue, job.priority) == ("report", "reports", Priority.FAST_HIGH)
        assert (job.state, job.run_at) == ("scheduled", run_at)
        assert job.max_attempts == AGGRESSIVE.max_attempts
        assert job.retry_policy == AGGRESSIVE.to_json()
        assert job.meta == {"tenant": "a"}
        assert job.job_key is None


def test_defaults_match_enqueue(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        (result,) = enqueue_batch(session, "t", iter([{"a": 1}]))
        job = session.get_one(Job, result.id)
        assert (job.queue, job.priority, job.state) == ("bulk", 0, "available")
        assert (job.max_attempts, job.retry_policy, job.meta) == (8, None, {})


def test_one_statement_per_batch_size_in_input_order(sync_engine: Engine) -> None:
    count = BATCH_SIZE + 3
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    with Session(sync_engine) as session, session.begin():
        session.execute(select(1))
        event.listen(sync_engine, "before_cursor_execute", record)
        try:
            results = enqueue_batch(session, "t", ({"i": i} for i in range(count)))
        finally:
            event.remove(sync_engine, "before_cursor_execute", record)
        rows: dict[int, Any] = dict(session.execute(select(Job.id, Job.payload)).all())
    assert len(seen) == 2
    assert [rows[r.id]["i"] for r in results] == list(range(count))


@pytest.mark.parametrize(
    ("payloads", "field"),
    [
        ([{"ok": 1}, {"ok": 2}, {"bad": {1, 2}}], "payloads[2].bad"),
        ([{"ok": 1}, float("nan")], "payloads[1]"),
        ([{"ok": 1}, {"big": "x" * 100}], "payloads[1]"),
    ],
)
def test_a_bad_payload_is_named_by_position_and_nothing_is_written(
    sync_engine: Engine, payloads: list[object], field: str
) -> None:
    with (
        Session(sync_engine) as session,
        session.begin(),
        pytest.raises(JobValidationError) as caught,
    ):
        enqueue_batch(session, "t", payloads, max_payload_bytes=64)
    assert caught.value.field == field
    assert _count(sync_engine) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"queue": ""}, "queue"),
        ({"priority": 40_000}, "priority"),
        ({"run_at": dt.datetime(2030, 1, 1)}, "run_at"),
        ({"metadata": ["not", "a", "mapping"]}, "metadata"),
    ],
)
def test_a_bad_option_is_refused_before_any_sql(
    sync_engine: Engine, options: dict[str, Any], field: str
) -> None:
    with (
        Session(sync_engine) as session,
        session.begin(),
        pytest.raises(JobValidationError) as caught,
    ):
        enqueue_batch(session, "t", [{"a": 1}], **options)
    assert caught.value.field == field
    assert _count(sync_engine) == 0


@pytest.mark.parametrize("payloads", [{"a": 1}, "abc", b"abc"])
def test_one_payload_in_place_of_a_collection_is_refused(
    sync_engine: Engine, payloads: Any
) -> None:
    with (
        Session(sync_engine) as session,
        session.begin(),
        pytest.raises(JobValidationError) as caught,
    ):
        enqueue_batch(session, "t", payloads)
    assert caught.value.field == "payloads"
    assert type(payloads).__name__ in caught.value.rule
    assert _count(sync_engine) == 0


def test_no_payloads_runs_no_sql(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        assert enqueue_batch(session, "t", []) == []
        assert not session.in_transaction()


async def test_async_round_trip_and_rollback(async_engine: AsyncEngine) -> None:
    async with AsyncSession(async_engine) as session:
        async with session.begin():
            results = await enqueue_batch_async(session, "t", [{"i": i} for i in range(30)])
        async with session.begin():
            await enqueue_batch_async(session, "t", [{"dropped": True}])
            await session.rollback()
        found: dict[int, Any] = dict((await session.execute(select(Job.id, Job.payload))).all())
    assert [found[r.id] for r in results] == [{"i": i} for i in range(30)]
    assert len(found) == 30


def test_task_enqueue_batch_applies_the_tasks_defaults(sync_engine: Engine) -> None:
    registry = TaskRegistry()

    @registry.task("mail", queue="fast", priority=Priority.FAST_HIGH, max_attempts=3)
    async def mail(payload: Any, ctx: JobContext) -> None:  # pragma: no cover - not run
        del payload, ctx

    with Session(sync_engine) as session, session.begin():
        results = registry["mail"].enqueue_batch(session, [{"to": "a"}, {"to": "b"}], priority=-1)
        with pytest.raises(JobValidationError) as caught:
            registry["mail"].enqueue_batch(session, [{"to": "c"}], job_key="k")
        assert caught.value.field == "job_key"
        jobs = [session.get_one(Job, r.id) for r in results]
        found = [(j.queue, j.priority, j.max_attempts, j.payload) for j in jobs]
    assert found == [
        ("fast", -1, 3, {"to": "a"}),
        ("fast", -1, 3, {"to": "b"}),
    ]


async def test_task_enqueue_batch_async(async_engine: AsyncEngine) -> None:
    registry = TaskRegistry()

    @registry.task("mail", queue="fast")
    async def mail(payload: Any, ctx: JobContext) -> None:  # pragma: no cover - not run
        del payload, ctx

    async with AsyncSession(async_engine) as session, session.begin():
        results = await registry["mail"].enqueue_batch_async(session, [{"to": "a"}])
        job = await session.get_one(Job, results[0].id)
        assert (job.task, job.queue, job.payload) == ("mail", "fast", {"to": "a"})


def test_the_callers_trace_context_goes_on_every_job(sync_engine: Engine) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with (
        tracer.start_as_current_span("request") as span,
        Session(sync_engine) as session,
        session.begin(),
    ):
        results = enqueue_batch(session, "t", [{"n": 1}, {"n": 2}], metadata={"tag": "x"})
    trace_id = f"{span.get_span_context().trace_id:032x}"
    with Session(sync_engine) as session:
        metas = [session.get_one(Job, r.id).meta for r in results]
    assert [meta["tag"] for meta in metas] == ["x", "x"]
    assert all(trace_id in meta["traceparent"] for meta in metas)
