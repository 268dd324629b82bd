"""Inline mode (by marker, by fixture, by context manager) and perform."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from backfill_sa.enqueue import enqueue, enqueue_many
from backfill_sa.errors import InvalidPayloadError
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.testing import (
    DrainResult,
    JobFailed,
    assert_enqueued,
    drain,
    enqueued_jobs,
    inline,
    perform,
    refute_enqueued,
)
from tests.testing.conftest import notes

pytestmark = pytest.mark.usefixtures("notes_table")


@pytest.mark.backfill_mode("inline")
def test_inline_marker_runs_the_handler_before_enqueue_returns(
    backfill_session: Session,
) -> None:
    enqueue(backfill_session, "write_note", {"body": "at once", "then": "and after"})

    assert notes(backfill_session) == ["at once", "and after"]
    refute_enqueued(backfill_session)


@pytest.mark.parametrize("backfill_mode", ["inline"])
def test_inline_by_overriding_the_mode_fixture(
    backfill_mode: str, backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    backfill_registry["write_note"].enqueue(backfill_session, {"body": "task api"})
    enqueue_many(backfill_session, [backfill_registry["write_note"].spec({"body": "many"})])

    assert notes(backfill_session) == ["task api", "many"]


@pytest.mark.backfill_mode("inline")
def test_inline_failure_raises_from_the_enqueue_after_writing_the_retry(
    backfill_session: Session,
) -> None:
    with pytest.raises(JobFailed, match="flaky attempt 1"):
        enqueue(backfill_session, "flaky", {})

    [job] = assert_enqueued(backfill_session, task="flaky")
    assert (job.state, job.attempts) == ("scheduled", 1)


@pytest.mark.backfill_mode("inline")
def test_inline_leaves_future_jobs_for_drain(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    import datetime as dt

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    enqueue(backfill_session, "write_note", {"body": "later"}, run_at=later)

    assert notes(backfill_session) == []
    assert drain(backfill_session, backfill_registry, scheduled=True) == DrainResult(succeeded=1)


def test_manual_is_the_default(backfill_session: Session) -> None:
    enqueue(backfill_session, "write_note", {"body": "waits"})

    assert notes(backfill_session) == []
    assert_enqueued(backfill_session, task="write_note", count=1)


def test_inline_context_manager_switches_one_session(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    with inline(backfill_session, backfill_registry):
        enqueue(backfill_session, "write_note", {"body": "inline"})
    enqueue(backfill_session, "write_note", {"body": "manual"})

    assert notes(backfill_session) == ["inline"]
    assert [j.payload for j in enqueued_jobs(backfill_session)] == [{"body": "manual"}]


def test_inline_without_raising_records_the_failure(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    with inline(backfill_session, backfill_registry, raise_errors=False):
        enqueue(backfill_session, "refuse", {})

    refute_enqueued(backfill_session)


def test_an_unchanged_dedupe_does_not_run_the_job_again(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    import datetime as dt

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    enqueue(backfill_session, "write_note", {"body": "first"}, run_at=later, job_key="k")
    with inline(backfill_session, backfill_registry):
        enqueue(
            backfill_session,
            "write_note",
            {"body": "dup"},
            job_key="k",
            job_key_mode="unsafe_dedupe",
        )

    assert notes(backfill_session) == []


def _registry() -> TaskRegistry:
    registry = TaskRegistry()
    seen: list[tuple[Any, JobContext]] = []

    @registry.task("echo", queue="fast")
    def echo(payload: Any, ctx: JobContext) -> None:
        seen.append((payload, ctx))

    @registry.task("strict", parse=lambda p: int(p["n"]))
    async def strict(payload: int, ctx: JobContext) -> int:
        if payload < 0:
            raise ValueError("negative")
        return payload * 2

    registry.seen = seen  # type: ignore[attr-defined]
    return registry


def test_perform_runs_one_handler_with_a_built_context() -> None:
    registry = _registry()

    result = perform(registry, "echo", {"x": 1}, attempt=3, max_attempts=4, job_id=7)

    assert result.succeeded
    [(payload, ctx)] = registry.seen  # type: ignore[attr-defined]
    assert payload == {"x": 1}
    assert (ctx.job_id, ctx.task, ctx.queue, ctx.attempt, ctx.max_attempts) == (
        7,
        "echo",
        "fast",
        3,
        4,
    )


def test_perform_classifies_failures_as_the_worker_would() -> None:
    registry = _registry()

    retried = perform(registry, "strict", {"n": -1})
    last = perform(registry, "strict", {"n": -1}, attempt=8, max_attempts=8)
    invalid = perform(registry, "strict", {"n": "x"})

    assert (retried.outcome, retried.error and retried.error["message"]) == ("retried", "negative")
    assert retried.delay is not None
    assert retried.delay.total_seconds() > 0
    assert (last.outcome, last.reason) == ("dead_lettered", "max_attempts_exceeded")
    assert (invalid.outcome, invalid.reason) == ("dead_lettered", "invalid_payload")
    doubled = perform(registry, "strict", {"n": 1})
    assert (doubled.succeeded, doubled.result) == (True, 2)
    assert InvalidPayloadError.__name__ in str(invalid.error)
