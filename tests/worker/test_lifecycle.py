"""Finished jobs are kept: completed with their result, pruned when retention ends."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import EnqueueOutcome, JobSpec, enqueue
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.validation import JobKeyMode
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.db import Database
from backfill_sa.worker.maintenance import Pruner
from tests.worker.conftest import add, add_jobs, count, execute, job, rows, unfinished


async def test_success_keeps_the_job_completed_with_its_result(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("answer")
    async def answer(payload: Any, ctx: JobContext) -> dict[str, Any]:
        return {"sum": payload["a"] + payload["b"], "text": "é", "list": [1, None]}

    job_id = add(sync_engine, "answer", {"a": 2, "b": 3})
    result = await WorkerRunner(config(), registry).run_once()

    assert result.succeeded == 1
    row = job(sync_engine, job_id)
    assert row is not None
    assert row["state"] == "completed"
    assert row["result"] == {"sum": 5, "text": "é", "list": [1, None]}
    assert row["last_error"] is None
    assert row["finished_at"] is not None
    assert row["prune_at"] - row["finished_at"] == timedelta(hours=24)
    assert row["locked_by"] is not None  # who ran it stays visible


async def test_a_result_over_the_cap_is_recorded_as_the_jobs_error(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("big")
    def big(payload: Any, ctx: JobContext) -> str:
        return "x" * int(payload["n"])

    fits = add(sync_engine, "big", {"n": 18})  # "x" * 18 is 20 bytes of JSON
    over = add(sync_engine, "big", {"n": 19})
    result = await WorkerRunner(config(max_result_bytes=20), registry).run_once()

    assert result.succeeded == 2
    kept = job(sync_engine, fits)
    assert kept is not None
    assert (kept["state"], kept["result"], kept["last_error"]) == ("completed", "x" * 18, None)
    dropped = job(sync_engine, over)
    assert dropped is not None
    assert (dropped["state"], dropped["result"]) == ("completed", None)
    assert dropped["last_error"]["type"] == "backfill_sa.ResultNotStored"
    assert "21 bytes" in dropped["last_error"]["message"]
    assert "max_result_bytes (20)" in dropped["last_error"]["message"]


async def test_a_result_that_is_not_json_is_recorded_as_the_jobs_error(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    values: dict[str, object] = {"object": object(), "nan": math.nan, "set": {1, 2}}

    @registry.task("odd")
    async def odd(payload: Any, ctx: JobContext) -> object:
        return values[payload]

    ids = {name: add(sync_engine, "odd", name) for name in values}
    result = await WorkerRunner(config(), registry).run_once()

    assert result.succeeded == len(values)
    for job_id in ids.values():
        row = job(sync_engine, job_id)
        assert row is not None
        assert (row["state"], row["result"]) == ("completed", None)
        assert row["last_error"]["type"] == "backfill_sa.ResultNotStored"
        assert "not JSON-serialisable" in row["last_error"]["message"]


async def test_results_of_a_busy_queue_are_written_with_the_next_claim(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    """Successes ride along with the fetch's claim statement: results go too."""

    @registry.task("double")
    async def double(payload: Any, ctx: JobContext) -> int:
        return int(payload) * 2

    ids = add_jobs(sync_engine, [JobSpec("double", n) for n in range(60)])
    result = await WorkerRunner(config(queues={"bulk": 3}, batch_size=3), registry).run_once()

    assert result.succeeded == 60
    found = rows(sync_engine, "SELECT id, state, result, payload FROM {s}.jobs ORDER BY id")
    assert [r["id"] for r in found] == ids
    assert all(r["state"] == "completed" for r in found)
    assert [r["result"] for r in found] == [r["payload"] * 2 for r in found]


async def test_retention_zero_deletes_at_once_and_task_and_queue_settings_win(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    @registry.task("plain")
    async def plain(payload: Any, ctx: JobContext) -> None:
        return None

    @registry.task("kept", retention=timedelta(minutes=5))
    async def kept(payload: Any, ctx: JobContext) -> None:
        return None

    gone = add(sync_engine, "plain")
    by_queue = add(sync_engine, "plain", queue="audit")
    by_task = add(sync_engine, "kept")
    cfg = config(
        queues={"bulk": 2, "audit": 1},
        retention=timedelta(0),
        queue_retention={"audit": timedelta(days=7)},
    )
    result = await WorkerRunner(cfg, registry).run_once()

    assert result.succeeded == 3
    assert job(sync_engine, gone) is None
    for job_id, keep in ((by_queue, timedelta(days=7)), (by_task, timedelta(minutes=5))):
        row = job(sync_engine, job_id)
        assert row is not None
        assert row["state"] == "completed"
        assert row["prune_at"] - row["finished_at"] == keep


async def test_finished_rows_are_never_claimed(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    ran: list[int] = []

    @registry.task("t")
    async def t(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    job_id = add(sync_engine, "t")
    first = await WorkerRunner(config(), registry).run_once()
    second = await WorkerRunner(config(), registry).run_once()

    assert (first.succeeded, second.succeeded) == (1, 0)
    assert ran == [job_id]


def _finished(engine: Engine, n: int, *, due: bool, state: str = "completed") -> None:
    execute(
        engine,
        "INSERT INTO {s}.jobs (task, state, finished_at, prune_at)"
        " SELECT 't', :state, now(), now() + CASE WHEN :due THEN interval '-1 second'"
        " ELSE interval '1 hour' END FROM generate_series(1, :n)",
        n=n,
        due=due,
        state=state,
    )


async def test_pruner_deletes_due_finished_jobs_in_bounded_batches(
    db: Database, sync_engine: Engine
) -> None:
    _finished(sync_engine, 15, due=True)
    _finished(sync_engine, 10, due=True, state="cancelled")
    _finished(sync_engine, 5, due=False)
    add(sync_engine, "waiting")
    pruner = Pruner(db, batch=10, max_statements=2)

    first = await pruner.run_once()
    assert (first.pruned, first.statements) == (20, 2)
    second = await pruner.run_once()
    assert (second.pruned, second.statements) == (5, 1)
    third = await pruner.run_once()
    assert (third.pruned, third.statements) == (0, 1)

    assert count(sync_engine, "jobs", "state = 'completed'") == 5
    assert count(sync_engine, "jobs", "state = 'cancelled'") == 0
    assert unfinished(sync_engine) == 1


async def test_the_leader_prunes_while_it_drains(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    """A worker run starts with a pruning round on the leader."""
    _finished(sync_engine, 7, due=True)
    _finished(sync_engine, 3, due=False)
    await WorkerRunner(config(), registry).run_once()
    assert count(sync_engine, "jobs") == 3


async def test_job_key_mode_period_keeps_the_key_taken_while_a_finished_job_is_retained(
    db: Database,
    sync_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    @registry.task("daily_report")
    async def report(payload: Any, ctx: JobContext) -> None:
        return None

    def enqueue_report(mode: JobKeyMode = "period") -> tuple[int, EnqueueOutcome]:
        with Session(sync_engine) as session, session.begin():
            found = enqueue(session, "daily_report", {}, job_key="daily_report", job_key_mode=mode)
        return found.id, found.outcome

    first, outcome = enqueue_report()
    assert outcome is EnqueueOutcome.INSERTED
    assert enqueue_report() == (first, EnqueueOutcome.UNCHANGED)  # waiting: held

    await WorkerRunner(config(), registry).run_once()
    assert enqueue_report() == (first, EnqueueOutcome.UNCHANGED)  # completed, retained

    # The other modes ignore retained jobs: only unfinished jobs hold a key for them.
    replaced, outcome = enqueue_report("replace")
    assert outcome is EnqueueOutcome.INSERTED
    assert replaced != first
    assert enqueue_report() == (replaced, EnqueueOutcome.UNCHANGED)  # the waiting one
    await WorkerRunner(config(), registry).run_once()

    execute(sync_engine, "UPDATE {s}.jobs SET prune_at = now() - interval '1 second'")
    assert (await Pruner(db).run_once()).pruned == 2
    after, outcome = enqueue_report()
    assert outcome is EnqueueOutcome.INSERTED
    assert after not in (first, replaced)
