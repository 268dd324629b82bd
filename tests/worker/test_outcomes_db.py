"""How each way an attempt ends lands in the database: retries, snoozes, the DLQ."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.errors import InvalidPayloadError, PermanentError, RetryableError, Snooze
from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import (
    add,
    add_jobs,
    count,
    dead_letters,
    job,
    make_due,
    state_of,
    unfinished,
)

UTC = dt.timezone.utc
# run_at is written as now() + delay in whole milliseconds.
ROUNDING = 0.0015


class Boom(Exception):
    """An unclassified handler failure."""


def _error(row: dict[str, Any]) -> dict[str, Any]:
    raw = row["last_error"]
    loaded: dict[str, Any] = raw if isinstance(raw, dict) else json.loads(raw)
    return loaded


@pytest.mark.parametrize("where", ["task", "job"])
async def test_retry_delays_follow_the_policy_within_jitter(
    where: str,
    sync_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    policy = RetryPolicy(
        max_attempts=6,
        initial_delay=timedelta(seconds=10),
        max_delay=timedelta(seconds=100),
        multiplier=3.0,
        jitter=0.2,
    )

    @registry.task("flaky", retry=policy if where == "task" else None, max_attempts=6)
    async def flaky(payload: Any, ctx: JobContext) -> None:
        raise Boom(f"boom on attempt {ctx.attempt}")

    spec_options: dict[str, Any] = {"retry": policy} if where == "job" else {"max_attempts": 6}
    ids = add_jobs(sync_engine, [JobSpec("flaky", {"n": n}, **spec_options) for n in range(12)])
    runner = WorkerRunner(config(queues={"bulk": 12}), registry)

    for attempt in (1, 2, 3, 4):
        result = await runner.run_once()

        assert result.retried == len(ids)
        assert result.succeeded == result.dead_lettered == 0
        base = policy.base_delay(attempt).total_seconds()
        low = base * (1 - policy.jitter)
        high = min(policy.max_delay.total_seconds(), base * (1 + policy.jitter))
        delays = []
        for job_id in ids:
            row = job(sync_engine, job_id)
            assert row is not None
            assert row["state"] == "scheduled"
            assert row["attempts"] == attempt
            assert row["locked_by"] is None
            # run_at and updated_at come from the same now() in the retry statement.
            after = float(row["scheduled_after"])
            assert low - ROUNDING <= after <= high + ROUNDING, (attempt, after, low, high)
            # Against the database clock now: at most a few seconds have passed.
            due_in = float(row["due_in"])
            assert low - 5 <= due_in <= high + ROUNDING
            error = _error(row)
            assert error["type"].endswith("Boom")
            assert error["message"] == f"boom on attempt {attempt}"
            assert "raise Boom" in error["traceback"]
            assert error["attempt"] == attempt
            delays.append(after)
        assert len(set(delays)) > 1, "jitter spreads the delays"
        make_due(sync_engine)


async def test_snooze_reschedules_without_using_an_attempt(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    attempts_seen: list[int] = []

    @registry.task("sleepy")
    async def sleepy(payload: Any, ctx: JobContext) -> None:
        attempts_seen.append(ctx.attempt)
        if len(attempts_seen) == 1:
            raise Snooze(timedelta(hours=1))

    job_id = add(sync_engine, "sleepy", max_attempts=1)
    runner = WorkerRunner(config(), registry)

    first = await runner.run_once()

    assert (first.snoozed, first.retried, first.succeeded) == (1, 0, 0)
    row = job(sync_engine, job_id)
    assert row is not None
    assert row["state"] == "scheduled"
    assert row["attempts"] == 0
    assert row["last_error"] is None
    assert abs(float(row["scheduled_after"]) - 3600) <= ROUNDING

    make_due(sync_engine, job_id)
    second = await runner.run_once()

    # max_attempts=1: had the snooze used the attempt, this run would not happen.
    assert second.succeeded == 1
    assert attempts_seen == [1, 1]
    assert unfinished(sync_engine) == count(sync_engine, "dead_letter_jobs") == 0


async def test_snooze_zero_runs_again_in_the_same_burst(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    attempts_seen: list[int] = []

    @registry.task("again")
    async def again(payload: Any, ctx: JobContext) -> None:
        attempts_seen.append(ctx.attempt)
        if len(attempts_seen) < 3:
            raise Snooze(0)

    add(sync_engine, "again")

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.snoozed, result.succeeded) == (2, 1)
    assert attempts_seen == [1, 1, 1]


async def test_retryable_error_retries(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("later")
    async def later(payload: Any, ctx: JobContext) -> None:
        raise RetryableError("upstream busy")

    job_id = add(sync_engine, "later")

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.retried, result.dead_lettered) == (1, 0)
    row = job(sync_engine, job_id)
    assert row is not None
    assert (row["state"], row["attempts"]) == ("scheduled", 1)
    assert _error(row)["type"] == "backfill_sa.errors.RetryableError"
    assert _error(row)["message"] == "upstream busy"


async def test_permanent_error_goes_straight_to_the_dlq(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("doomed", priority=3)
    async def doomed(payload: Any, ctx: JobContext) -> None:
        raise PermanentError("account closed")

    job_id = add(sync_engine, "doomed", {"account": 9}, priority=3)

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.dead_lettered, result.retried) == (1, 0)
    assert unfinished(sync_engine) == 0
    [entry] = dead_letters(sync_engine)
    assert entry["original_job_id"] == job_id
    assert entry["failure_reason"] == "permanent_error"
    assert entry["failure_count"] == 1
    assert (entry["task"], entry["queue"], entry["priority"]) == ("doomed", "bulk", 3)
    assert entry["payload"] == {"account": 9}
    assert entry["last_error"]["type"] == "backfill_sa.errors.PermanentError"
    assert entry["last_error"]["message"] == "account closed"
    assert "PermanentError" in entry["last_error"]["traceback"]


async def test_exhausted_attempts_end_in_the_dlq_with_the_last_error(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("fails")
    async def fails(payload: Any, ctx: JobContext) -> None:
        raise Boom(f"attempt {ctx.attempt} failed")

    job_id = add(sync_engine, "fails", max_attempts=2)
    runner = WorkerRunner(config(), registry)

    first = await runner.run_once()
    assert (first.retried, first.dead_lettered) == (1, 0)
    row = job(sync_engine, job_id)
    assert row is not None
    assert row["attempts"] == 1

    make_due(sync_engine, job_id)
    second = await runner.run_once()

    assert (second.retried, second.dead_lettered) == (0, 1)
    assert state_of(sync_engine, job_id) is None
    [entry] = dead_letters(sync_engine)
    assert entry["original_job_id"] == job_id
    assert entry["failure_reason"] == "max_attempts_exceeded"
    assert entry["failure_count"] == 2
    assert entry["max_attempts"] == 2
    assert entry["last_error"]["message"] == "attempt 2 failed"
    assert entry["last_error"]["attempt"] == 2
    assert "raise Boom" in entry["last_error"]["traceback"]


async def test_unknown_task_retries_with_backoff_then_dead_letters(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    ran: list[int] = []

    @registry.task("known")
    async def known(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    policy = RetryPolicy(
        max_attempts=2,
        initial_delay=timedelta(seconds=30),
        max_delay=timedelta(seconds=60),
        jitter=0.1,
    )
    ghost = add(sync_engine, "ghost", {"x": 1}, retry=policy)
    known_id = add(sync_engine, "known")
    runner = WorkerRunner(config(), registry)

    first = await runner.run_once()

    assert (first.retried, first.succeeded, first.dead_lettered) == (1, 1, 0)
    assert ran == [known_id]
    row = job(sync_engine, ghost)
    assert row is not None
    assert (row["state"], row["attempts"]) == ("scheduled", 1)
    assert 27 - ROUNDING <= float(row["scheduled_after"]) <= 33 + ROUNDING
    assert _error(row)["type"] == "backfill_sa.errors.UnknownTaskError"
    assert "ghost" in _error(row)["message"]

    make_due(sync_engine, ghost)
    second = await runner.run_once()

    assert (second.retried, second.dead_lettered) == (0, 1)
    [entry] = dead_letters(sync_engine)
    assert entry["original_job_id"] == ghost
    assert entry["failure_reason"] == "unknown_task"
    assert entry["failure_count"] == 2
    assert entry["payload"] == {"x": 1}


async def test_bad_payload_is_dead_lettered_at_once(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    called: list[Any] = []

    def parse(raw: Any) -> int:
        return int(raw["n"])

    @registry.task("typed", parse=parse)
    async def typed(payload: int, ctx: JobContext) -> None:
        called.append(payload)

    @registry.task("picky")
    async def picky(payload: Any, ctx: JobContext) -> None:
        raise InvalidPayloadError("no 'email' field")

    bad = add(sync_engine, "typed", {"n": "not a number"})
    good = add(sync_engine, "typed", {"n": "41"})
    picky_id = add(sync_engine, "picky", {})

    result = await WorkerRunner(config(), registry).run_once()

    assert (result.succeeded, result.dead_lettered, result.retried) == (1, 2, 0)
    assert called == [41]
    entries = {e["original_job_id"]: e for e in dead_letters(sync_engine)}
    assert set(entries) == {bad, picky_id}
    assert good not in entries
    for entry in entries.values():
        assert entry["failure_reason"] == "invalid_payload"
        assert entry["failure_count"] == 1
        assert entry["max_attempts"] == 8
    assert "payload rejected by 'typed'" in entries[bad]["last_error"]["message"]
    assert "ValueError" in entries[bad]["last_error"]["message"]


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (KeyError("k"), "retried"),  # in retry_on: retry_on wins over give_up_on
        (IndexError("i"), "dead"),  # a LookupError, in give_up_on only
        (ValueError("v"), "retried"),  # unclassified
    ],
)
async def test_give_up_on_and_retry_on(
    raised: Exception,
    expected: str,
    sync_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    @registry.task("picky", give_up_on=(LookupError,), retry_on=(KeyError,))
    async def picky(payload: Any, ctx: JobContext) -> None:
        raise raised

    job_id = add(sync_engine, "picky")

    result = await WorkerRunner(config(), registry).run_once()

    if expected == "retried":
        assert (result.retried, result.dead_lettered) == (1, 0)
        row = job(sync_engine, job_id)
        assert row is not None
        assert (row["state"], row["attempts"]) == ("scheduled", 1)
        assert _error(row)["type"].endswith(type(raised).__name__)
    else:
        assert (result.retried, result.dead_lettered) == (0, 1)
        [entry] = dead_letters(sync_engine)
        assert entry["failure_reason"] == "permanent_error"
        assert entry["last_error"]["type"] == "builtins.IndexError"
