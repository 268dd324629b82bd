"""Pruning keeps the jobs table bounded through a W3-sized drain with retention on.

The clock is driven through the data: after each round the test moves every
finished row's ``finished_at`` and ``prune_at`` back by a fixed step, as if that
much time had passed, so which rows are due is decided by the test, not by timing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.db import Database
from backfill_sa.worker.maintenance import Pruner
from tests.worker.conftest import add_jobs, count, execute, rows, unfinished

pytestmark = pytest.mark.slow

ROUNDS = 5
PER_ROUND = 4_000  # 20,000 jobs in all: the size of W3's default drain
RETENTION = timedelta(hours=1)
STEP = timedelta(minutes=25)  # a round's worth of time: a job is kept for two rounds


def _let_time_pass(engine: Engine, step: timedelta) -> None:
    execute(
        engine,
        "UPDATE {s}.jobs SET finished_at = finished_at - :step, prune_at = prune_at - :step"
        " WHERE finished_at IS NOT NULL",
        step=step,
    )


async def test_pruning_keeps_only_a_retention_window_of_finished_jobs(
    db: Database,
    sync_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    @registry.task("echo")
    async def echo(payload: Any, ctx: JobContext) -> Any:
        return payload

    cfg = config(queues={"bulk": 10}, batch_size=10, retention=RETENTION)
    pruner = Pruner(db, batch=cfg.prune_batch_size)
    rounds: list[list[int]] = []
    for n in range(ROUNDS):
        rounds.append(add_jobs(sync_engine, [JobSpec("echo", n) for _ in range(PER_ROUND)]))
        drained = await WorkerRunner(cfg, registry).run_once()
        assert drained.succeeded == PER_ROUND
        assert unfinished(sync_engine) == 0

        _let_time_pass(sync_engine, STEP)
        pruned = await pruner.run_once()

        # A job finished STEP ago has RETENTION - STEP left; one finished 2 * STEP ago
        # has RETENTION - 2 * STEP; one finished 3 * STEP ago is past its retention.
        kept_rounds = rounds[-2:]
        due_round = rounds[-3] if n >= 2 else []
        assert pruned.pruned == len(due_round)
        assert pruned.statements == len(due_round) // cfg.prune_batch_size + 1
        kept = sorted(r["id"] for r in rows(sync_engine, "SELECT id FROM {s}.jobs"))
        assert kept == sorted(i for ids in kept_rounds for i in ids)
        assert count(sync_engine, "jobs") <= 2 * PER_ROUND
        assert count(sync_engine, "jobs", "state <> 'completed'") == 0

    # Nothing else is due: another pruning round deletes nothing and the window stays.
    again = await pruner.run_once()
    assert (again.pruned, again.statements) == (0, 1)
    assert count(sync_engine, "jobs") == 2 * PER_ROUND
    # Once the last round's retention ends too, the table is empty.
    _let_time_pass(sync_engine, RETENTION)
    assert (await pruner.run_once()).pruned == 2 * PER_ROUND
    assert count(sync_engine, "jobs") == 0
