"""drain: due jobs through the real handlers, inside the test's transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from backfill_sa.enqueue import enqueue
from backfill_sa.jobs import get_job
from backfill_sa.models import DeadLetterJob, Queue
from backfill_sa.tasks import TaskRegistry
from backfill_sa.testing import (
    DrainResult,
    JobFailed,
    assert_enqueued,
    drain,
    enqueued_jobs,
    refute_enqueued,
)
from tests.testing.conftest import FLAKY_FAILURES, notes

pytestmark = pytest.mark.usefixtures("notes_table")


def test_drain_runs_the_handler_and_its_effect_is_in_the_transaction(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "write_note", {"body": "hello"}, queue="fast")

    result = drain(backfill_session, backfill_registry)

    assert result == DrainResult(succeeded=1)
    assert [(j.task, j.outcome, j.attempt) for j in result.jobs] == [("write_note", "succeeded", 1)]
    assert notes(backfill_session) == ["hello"]
    refute_enqueued(backfill_session)


def test_a_drained_job_is_left_as_a_worker_leaves_it_with_its_result(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    job = enqueue(backfill_session, "add", {"a": 2, "b": 3})

    result = drain(backfill_session, backfill_registry)

    assert result.jobs[0].result == {"sum": 5}
    info = get_job(backfill_session, job.id)
    assert info is not None
    assert (info.state, info.result, info.locked_by) == (
        "completed",
        {"sum": 5},
        "backfill-testing",
    )
    refute_enqueued(backfill_session)


def test_jobs_enqueued_by_handlers_run_in_the_same_drain(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "write_note", {"body": "first", "then": "second"}, queue="fast")

    assert drain(backfill_session, backfill_registry) == DrainResult(succeeded=2)
    assert notes(backfill_session) == ["first", "second"]


def test_drain_runs_by_priority_and_only_the_queue_asked(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "write_note", {"body": "low"}, queue="fast", priority=5)
    enqueue(backfill_session, "write_note", {"body": "high"}, queue="fast", priority=-5)
    enqueue(backfill_session, "write_note", {"body": "bulk"}, queue="bulk")

    assert drain(backfill_session, backfill_registry, queue="fast") == DrainResult(succeeded=2)
    assert notes(backfill_session) == ["high", "low"]
    assert_enqueued(backfill_session, queue="bulk", count=1)


def test_a_failed_attempt_is_rescheduled_and_not_run_again_by_default(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "flaky", {})

    result = drain(backfill_session, backfill_registry)

    assert result == DrainResult(retried=1)
    assert result.jobs[0].error is not None
    assert result.jobs[0].error["message"] == "flaky attempt 1"
    [job] = assert_enqueued(backfill_session, task="flaky", count=1)
    assert (job.state, job.attempts) == ("scheduled", 1)


def test_retries_run_until_the_job_succeeds(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "flaky", {})

    result = drain(backfill_session, backfill_registry, retries=True)

    assert result == DrainResult(retried=FLAKY_FAILURES, succeeded=1)
    assert [j.attempt for j in result.jobs] == [1, 2, 3]
    refute_enqueued(backfill_session)


def test_retries_end_in_the_dead_letter_queue_when_attempts_run_out(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "flaky", {}, max_attempts=2)

    result = drain(backfill_session, backfill_registry, retries=True)

    assert result == DrainResult(retried=1, dead_lettered=1)
    assert result.jobs[-1].reason == "max_attempts_exceeded"
    dead = backfill_session.scalars(select(DeadLetterJob)).all()
    assert [(d.task, d.failure_reason, d.failure_count) for d in dead] == [
        ("flaky", "max_attempts_exceeded", 2)
    ]


def test_a_permanent_error_dead_letters_at_once(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "refuse", {"card": "4242"})

    assert drain(backfill_session, backfill_registry) == DrainResult(dead_lettered=1)
    dead = backfill_session.scalars(select(DeadLetterJob)).one()
    assert (dead.failure_reason, dead.payload) == ("permanent_error", {"card": "4242"})


def test_raise_errors_raises_after_writing_the_outcome(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "refuse", {})

    with pytest.raises(JobFailed, match=r"'refuse', attempt 1\) -> dead_lettered") as failure:
        drain(backfill_session, backfill_registry, raise_errors=True)

    assert "PermanentError: card declined" in str(failure.value)
    assert "Traceback" in str(failure.value)
    assert backfill_session.scalars(select(DeadLetterJob.task)).all() == ["refuse"]


def test_an_unknown_task_is_handled_as_a_worker_would(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "nobody_handles_this", {}, max_attempts=1)

    result = drain(backfill_session, backfill_registry)

    assert result == DrainResult(dead_lettered=1)
    assert result.jobs[0].reason == "unknown_task"


def test_future_jobs_wait_unless_scheduled_is_asked(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    enqueue(backfill_session, "write_note", {"body": "tomorrow"}, run_at=tomorrow)

    assert drain(backfill_session, backfill_registry) == DrainResult()
    assert drain(backfill_session, backfill_registry, scheduled=True) == DrainResult(succeeded=1)
    assert notes(backfill_session) == ["tomorrow"]


def test_paused_queues_are_left_alone(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    backfill_session.add(Queue(name="fast", paused=True))
    backfill_session.flush()
    enqueue(backfill_session, "write_note", {"body": "x"}, queue="fast")

    assert drain(backfill_session, backfill_registry) == DrainResult()
    assert [j.task for j in enqueued_jobs(backfill_session)] == ["write_note"]


def test_a_job_that_enqueues_itself_forever_stops_the_drain(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    enqueue(backfill_session, "forever", {})

    with pytest.raises(AssertionError, match="drain ran 5 attempts and jobs are still due"):
        drain(backfill_session, backfill_registry, max_jobs=5)
