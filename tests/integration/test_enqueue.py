"""enqueue / enqueue_many against PostgreSQL: fields, states, job_key modes, batches, ORM adds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.enqueue import (
    BATCH_SIZE,
    EnqueueOutcome,
    EnqueueResult,
    JobSpec,
    enqueue,
    enqueue_async,
    enqueue_bulk,
    enqueue_bulk_async,
    enqueue_critical,
    enqueue_critical_async,
    enqueue_emergency,
    enqueue_emergency_async,
    enqueue_fast,
    enqueue_fast_async,
    enqueue_many,
    enqueue_many_async,
)
from backfill_sa.errors import JobValidationError
from backfill_sa.models import Job
from backfill_sa.retry import AGGRESSIVE, CONSERVATIVE

UTC = dt.timezone.utc
INSERTED, REPLACED, UNCHANGED = (
    EnqueueOutcome.INSERTED,
    EnqueueOutcome.REPLACED,
    EnqueueOutcome.UNCHANGED,
)


def _future(hours: float = 1) -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(hours=hours)


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL statements ``engine`` sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _job(session: Session, job_id: int) -> Job:
    return session.execute(select(Job).where(Job.id == job_id)).scalar_one()


def _jobs(session: Session) -> list[Job]:
    return list(session.execute(select(Job).order_by(Job.id)).scalars())


def _set(session: Session, job_id: int, **values: object) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(**values))


# --- fields and states ----------------------------------------------------------


def test_every_field_round_trips(sync_engine: Engine) -> None:
    run_at = dt.datetime(2040, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    payload = {"to": "a@example.com", "n": [1, 2.5, None, True, {"deep": "é"}]}
    with Session(sync_engine) as session, session.begin():
        result = enqueue(
            session,
            "send_email",
            payload,
            queue="mail",
            priority=-7,
            run_at=run_at,
            max_attempts=4,
            retry=AGGRESSIVE,
            job_key="mail:1",
            metadata={"traceparent": "00-abc-01", "tags": ["x"]},
        )
    assert result.outcome is INSERTED
    with Session(sync_engine) as session:
        job = _job(session, result.id)
        assert (job.task, job.queue, job.payload) == ("send_email", "mail", payload)
        assert (job.priority, job.run_at, job.state) == (-7, run_at, "scheduled")
        assert (job.max_attempts, job.attempts, job.job_key) == (4, 0, "mail:1")
        assert job.retry_policy == AGGRESSIVE.to_json()
        assert job.meta == {"traceparent": "00-abc-01", "tags": ["x"]}
        assert (job.locked_by, job.locked_at, job.last_error, job.lease) == (None, None, None, 0)


async def test_every_field_round_trips_async(async_engine: AsyncEngine) -> None:
    run_at = _future(5).replace(microsecond=654321)
    async with AsyncSession(async_engine) as session, session.begin():
        result = await enqueue_async(
            session,
            "resize",
            ["a", 1],
            queue="images",
            priority=300,
            run_at=run_at,
            retry=CONSERVATIVE,
            metadata={"tenant": "acme"},
        )
    async with AsyncSession(async_engine) as session:
        job = (await session.execute(select(Job).where(Job.id == result.id))).scalar_one()
    assert (job.task, job.queue, job.payload, job.priority) == ("resize", "images", ["a", 1], 300)
    assert (job.run_at, job.state, job.job_key) == (run_at, "scheduled", None)
    assert job.max_attempts == CONSERVATIVE.max_attempts
    assert job.retry_policy == CONSERVATIVE.to_json()
    assert job.meta == {"tenant": "acme"}


def test_defaults(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        before = session.execute(select(func.now())).scalar_one()
        job = _job(session, enqueue(session, "t").id)
        assert (job.queue, job.priority, job.payload, job.meta) == ("bulk", 0, {}, {})
        assert (job.max_attempts, job.retry_policy, job.state) == (8, None, "available")
        assert job.run_at == before  # now() is the transaction's start time


def test_state_is_scheduled_only_for_a_future_run_at(sync_engine: Engine) -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    with Session(sync_engine) as session, session.begin():
        future_id = enqueue(session, "t", run_at=_future()).id
        past_id = enqueue(session, "t", run_at=past).id
        assert _job(session, future_id).state == "scheduled"
        assert _job(session, past_id).state == "available"
        assert _job(session, past_id).run_at == past


@pytest.mark.parametrize(
    ("helper", "queue", "priority"),
    [
        (enqueue_fast, "fast", -5),
        (enqueue_bulk, "bulk", 0),
        (enqueue_critical, "fast", -10),
        (enqueue_emergency, "fast", -20),
    ],
)
def test_helpers_pick_backfills_queue_and_priority(
    sync_engine: Engine, helper: Any, queue: str, priority: int
) -> None:
    with Session(sync_engine) as session, session.begin():
        result = helper(session, "t", {"a": 1}, job_key="k", max_attempts=2)
        job = _job(session, result.id)
        assert (job.queue, job.priority, job.payload) == (queue, priority, {"a": 1})
        assert (job.job_key, job.max_attempts) == ("k", 2)


@pytest.mark.parametrize(
    ("helper", "queue", "priority"),
    [
        (enqueue_fast_async, "fast", -5),
        (enqueue_bulk_async, "bulk", 0),
        (enqueue_critical_async, "fast", -10),
        (enqueue_emergency_async, "fast", -20),
    ],
)
async def test_async_helpers_pick_backfills_queue_and_priority(
    async_engine: AsyncEngine, helper: Any, queue: str, priority: int
) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        result = await helper(session, "t", {"a": 1})
        job = (await session.execute(select(Job).where(Job.id == result.id))).scalar_one()
        assert (job.queue, job.priority) == (queue, priority)


def test_invalid_arguments_run_no_sql(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        session.execute(select(1))  # the transaction is open; count from here
        with _statements(sync_engine) as seen:
            with pytest.raises(JobValidationError) as info:
                enqueue(session, "t", {"bad": {"value": float("nan")}})
            assert info.value.field == "payload.bad.value"
            with pytest.raises(JobValidationError):
                enqueue(session, "t", priority=40_000)
            with pytest.raises(JobValidationError):
                enqueue_many(session, [JobSpec("t"), "not a spec"])  # type: ignore[list-item]
        assert seen == []
        assert _jobs(session) == []


def test_no_key_enqueue_is_one_statement(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        session.execute(select(1))
        with _statements(sync_engine) as seen:
            enqueue(session, "t", {"a": 1})
            enqueue(session, "t", job_key="k")
            enqueue(session, "t", job_key="k")
        assert len(seen) == 3


# --- job_key modes --------------------------------------------------------------


def test_replace_updates_the_waiting_job_in_place(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        first = enqueue(session, "a", {"v": 1}, job_key="k", run_at=_future())
        _set(session, first.id, attempts=2, last_error={"message": "boom"})
        run_at = _future(2)
        second = enqueue(
            session,
            "b",
            {"v": 2},
            queue="other",
            priority=3,
            run_at=run_at,
            max_attempts=9,
            retry=AGGRESSIVE,
            job_key="k",
            metadata={"m": 1},
        )
        assert second == EnqueueResult(first.id, REPLACED)
        session.expire_all()
        job = _job(session, first.id)
        assert (job.task, job.payload, job.queue, job.priority) == ("b", {"v": 2}, "other", 3)
        assert (job.run_at, job.state, job.max_attempts) == (run_at, "scheduled", 9)
        assert (job.attempts, job.last_error) == (0, None)
        assert (job.retry_policy, job.meta) == (AGGRESSIVE.to_json(), {"m": 1})
        assert len(_jobs(session)) == 1


def test_replace_makes_a_scheduled_job_available_when_run_at_is_now(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        first = enqueue(session, "a", job_key="k", run_at=_future())
        enqueue(session, "a", job_key="k")
        session.expire_all()
        assert _job(session, first.id).state == "available"


def test_preserve_run_at_keeps_the_run_at_of_a_job_not_yet_attempted(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        run_at = _future(3)
        first = enqueue(session, "a", {"v": 1}, job_key="k", run_at=run_at)
        second = enqueue(session, "a", {"v": 2}, job_key="k", job_key_mode="preserve_run_at")
        assert second == EnqueueResult(first.id, REPLACED)
        session.expire_all()
        job = _job(session, first.id)
        assert (job.payload, job.run_at, job.state) == ({"v": 2}, run_at, "scheduled")


def test_preserve_run_at_takes_the_new_run_at_after_an_attempt(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        first = enqueue(session, "a", job_key="k", run_at=_future(3))
        _set(session, first.id, attempts=1)  # waiting out a retry backoff
        new_run_at = _future(1)
        enqueue(session, "a", job_key="k", run_at=new_run_at, job_key_mode="preserve_run_at")
        session.expire_all()
        job = _job(session, first.id)
        assert (job.run_at, job.attempts) == (new_run_at, 0)


@pytest.mark.parametrize("mode", ["replace", "preserve_run_at"])
def test_a_running_job_loses_its_key_and_its_retries_and_a_new_job_is_inserted(
    sync_engine: Engine, mode: Any
) -> None:
    with Session(sync_engine) as session, session.begin():
        running = enqueue(session, "a", {"v": 1}, job_key="k")
        _set(session, running.id, state="running", attempts=2, locked_by="w1")
        with _statements(sync_engine) as seen:
            new = enqueue(session, "a", {"v": 2}, job_key="k", job_key_mode=mode)
        assert len(seen) == 2
        assert new.outcome is INSERTED
        assert new.id != running.id
        session.expire_all()
        old = _job(session, running.id)
        assert (old.state, old.job_key, old.max_attempts, old.attempts) == ("running", None, 2, 2)
        assert old.payload == {"v": 1}
        fresh = _job(session, new.id)
        assert (fresh.job_key, fresh.payload, fresh.state) == ("k", {"v": 2}, "available")


def test_a_running_job_with_no_attempts_keeps_max_attempts_of_one(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        running = enqueue(session, "a", job_key="k")
        _set(session, running.id, state="running")
        enqueue(session, "a", job_key="k")
        session.expire_all()
        assert _job(session, running.id).max_attempts == 1


def test_unsafe_dedupe_leaves_an_existing_job_alone(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        first = enqueue(session, "a", {"v": 1}, job_key="k", job_key_mode="unsafe_dedupe")
        assert first.outcome is INSERTED
        again = enqueue(
            session, "b", {"v": 2}, queue="q", job_key="k", job_key_mode="unsafe_dedupe"
        )
        assert again == EnqueueResult(first.id, UNCHANGED)
        _set(session, first.id, state="running", attempts=1)
        while_running = enqueue(session, "b", {"v": 3}, job_key="k", job_key_mode="unsafe_dedupe")
        assert while_running == EnqueueResult(first.id, UNCHANGED)
        session.expire_all()
        (job,) = _jobs(session)
        assert (job.task, job.payload, job.queue, job.max_attempts) == ("a", {"v": 1}, "bulk", 8)


async def test_job_key_modes_async(async_engine: AsyncEngine) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        first = await enqueue_async(session, "a", job_key="k")
        assert (await enqueue_async(session, "a", job_key="k")).outcome is REPLACED
        await session.execute(update(Job).where(Job.id == first.id).values(state="running"))
        new = await enqueue_async(session, "a", job_key="k", job_key_mode="preserve_run_at")
        assert new.outcome is INSERTED
        dedupe = await enqueue_async(session, "a", job_key="k", job_key_mode="unsafe_dedupe")
        assert dedupe == EnqueueResult(new.id, UNCHANGED)


# --- enqueue_many ---------------------------------------------------------------


def test_enqueue_many_round_trips_in_order(sync_engine: Engine) -> None:
    run_at = _future()
    specs = [
        JobSpec(
            f"task{i}",
            {"i": i},
            queue="fast" if i % 2 else "bulk",
            priority=i - 5,
            run_at=run_at if i % 3 == 0 else None,
            retry=AGGRESSIVE if i == 4 else None,
            metadata={"i": i},
        )
        for i in range(10)
    ]
    with Session(sync_engine) as session, session.begin():
        results = enqueue_many(session, specs)
        assert [r.outcome for r in results] == [INSERTED] * 10
        for spec, result in zip(specs, results, strict=True):
            job = _job(session, result.id)
            assert (job.task, job.payload, job.meta) == (spec.task, spec.payload, spec.metadata)
            assert (job.queue, job.priority) == (spec.queue, spec.priority)
            assert job.state == ("scheduled" if spec.run_at else "available")
            if spec.run_at:
                assert job.run_at == run_at
            assert job.max_attempts == spec.row.max_attempts
            assert job.retry_policy == (AGGRESSIVE.to_json() if spec.retry else None)


def test_enqueue_many_sends_one_statement_per_batch(sync_engine: Engine) -> None:
    count = 2 * BATCH_SIZE + 7
    specs = [JobSpec("t", {"i": i}) for i in range(count)]
    with Session(sync_engine) as session, session.begin():
        session.execute(select(1))
        with _statements(sync_engine) as seen:
            results = enqueue_many(session, specs)
        assert len(seen) == 3
        rows = session.execute(select(Job.id, Job.payload)).all()
    assert len(results) == len(rows) == count
    by_id: dict[int, Any] = dict(rows)
    assert [by_id[r.id]["i"] for r in results] == list(range(count))


def test_enqueue_many_with_keys_applies_them_in_order(sync_engine: Engine) -> None:
    specs = [
        JobSpec("t", {"v": 1}, job_key="k"),
        JobSpec("t", {"v": 2}),
        JobSpec("t", {"v": 3}, job_key="k"),
        JobSpec("t", {"v": 4}, job_key="k", job_key_mode="unsafe_dedupe"),
        JobSpec("t", {"v": 5}),
    ]
    with Session(sync_engine) as session, session.begin():
        results = enqueue_many(session, specs)
        assert [r.outcome for r in results] == [INSERTED, INSERTED, REPLACED, UNCHANGED, INSERTED]
        assert results[0].id == results[2].id == results[3].id
        assert _job(session, results[0].id).payload == {"v": 3}
        assert len(_jobs(session)) == 3


def test_enqueue_many_of_nothing_runs_no_sql(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        with _statements(sync_engine) as seen:
            assert enqueue_many(session, []) == []
        assert seen == []


async def test_enqueue_many_async_round_trips(async_engine: AsyncEngine) -> None:
    specs = [JobSpec("t", {"i": i}, queue=f"q{i % 3}") for i in range(50)]
    async with AsyncSession(async_engine) as session, session.begin():
        results = await enqueue_many_async(session, iter(specs))
        found = (await session.execute(select(Job.id, Job.payload))).all()
        rows: dict[int, Any] = dict(found)
    assert [rows[r.id]["i"] for r in results] == list(range(50))


# --- ORM path -------------------------------------------------------------------


def test_orm_added_job_gets_defaults_and_state(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        now_job = Job(task="orm")
        later_job = Job(task="orm", payload={"a": 1}, run_at=_future(), retry_policy=AGGRESSIVE)
        session.add_all([now_job, later_job])
        session.flush()
        session.expire_all()
        assert (now_job.queue, now_job.priority, now_job.payload) == ("bulk", 0, {})
        assert (now_job.state, now_job.max_attempts, now_job.meta) == ("available", 8, {})
        assert (later_job.state, later_job.max_attempts) == ("scheduled", 12)
        assert later_job.retry_policy == AGGRESSIVE.to_json()


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"task": ""}, "task"),
        ({"task": "t", "payload": {"x": [float("nan")]}}, "payload.x[0]"),
        ({"task": "t", "priority": 99_999}, "priority"),
        ({"task": "t", "run_at": dt.datetime(2030, 1, 1)}, "run_at"),
        ({"task": "t", "retry_policy": "fast"}, "retry_policy"),
        ({"task": "t", "state": "done"}, "state"),
    ],
)
def test_orm_added_job_is_validated_and_writes_nothing(
    sync_engine: Engine, values: dict[str, Any], field: str
) -> None:
    with Session(sync_engine) as session:
        session.add(Job(**values))
        with pytest.raises(JobValidationError) as info:
            session.commit()
        assert info.value.field == field
        session.rollback()
        assert _jobs(session) == []


async def test_orm_added_job_async(async_engine: AsyncEngine) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        job = Job(task="orm", queue="fast", payload=[1])
        session.add(job)
        await session.flush()
        state = (await session.execute(select(Job.state).where(Job.id == job.id))).scalar_one()
    assert state == "available"


# --- enqueue_many and the caller's trace context ----------------------------------


def test_enqueue_many_stores_the_trace_context_on_every_job(sync_engine: Engine) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    specs = [
        JobSpec("a", {"n": 1}, metadata={"tag": "x"}),
        JobSpec("b", {"n": 2}, job_key="k"),
        JobSpec("c", {"n": 3}),
    ]
    with (
        tracer.start_as_current_span("request") as span,
        Session(sync_engine) as session,
        session.begin(),
    ):
        results = enqueue_many(session, specs)
        plain = enqueue_many(session, [JobSpec("d"), JobSpec("e")])
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert [r.outcome for r in results + plain] == [INSERTED] * 5
    with Session(sync_engine) as session:
        jobs = _jobs(session)
    assert [job.task for job in jobs] == ["a", "b", "c", "d", "e"]
    assert [job.id for job in jobs] == [r.id for r in results + plain]
    for job in jobs:
        assert trace_id in job.meta["traceparent"]
    assert jobs[0].meta["tag"] == "x"


def test_enqueue_many_without_a_span_stores_metadata_as_given(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        results = enqueue_many(
            session, [JobSpec("a", metadata={"tag": "x"}), JobSpec("b"), JobSpec("c", job_key="k")]
        )
    with Session(sync_engine) as session:
        jobs = _jobs(session)
    assert [job.id for job in jobs] == [r.id for r in results]
    assert [job.meta for job in jobs] == [{"tag": "x"}, {}, {}]
