"""Property: every enqueued job stays findable by ``get_job`` until its retention ends.

Each example enqueues a few jobs with a fate (completes, fails for good, is
cancelled while waiting, waits for a far ``run_at``) and a retention (0, 1 hour,
2 days), then walks them through their life: waiting, running (looked up from
inside the handler), finished, and pruned as the clock moves. The clock is driven
through the data (``finished_at`` and ``prune_at`` moved back), so what is due is
decided by the test. At every step ``get_job`` and ``get_job_async`` agree and say
exactly what the model expects: the job in its state while it is retained, None
once pruned, the dead-letter entry for a job that failed for good.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import async_url
from backfill_sa.enqueue import JobSpec, enqueue_many
from backfill_sa.errors import PermanentError
from backfill_sa.jobs import DEAD_LETTERED, JobInfo, cancel_job, get_job, get_job_async
from backfill_sa.states import JobState
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.db import Database
from backfill_sa.worker.maintenance import Pruner
from tests.worker.conftest import execute, make_config, rows

pytestmark = pytest.mark.slow

Fate = Literal["complete", "fail", "cancel", "later"]
KEEPS = {"zero": timedelta(0), "hour": timedelta(hours=1), "days": timedelta(days=2)}


@dataclass(frozen=True)
class Plan:
    """One job: what happens to it and how long it is kept once finished."""

    fate: Fate
    keep: Literal["zero", "hour", "days"]


plans = st.lists(
    st.builds(
        Plan,
        fate=st.sampled_from(["complete", "fail", "cancel", "later"]),
        keep=st.sampled_from(["zero", "hour", "days"]),
    ),
    min_size=1,
    max_size=10,
)

Expected = tuple[str, Any] | None
"""What get_job should say: (state, detail) or None; detail is the result or DLQ id."""


def _registry(seen: dict[int, JobInfo | None], engine: AsyncEngine) -> TaskRegistry:
    registry = TaskRegistry()

    async def look(job_id: int) -> None:
        async with AsyncSession(engine) as session:
            seen[job_id] = await get_job_async(session, job_id)

    for name, keep in KEEPS.items():

        async def complete(payload: Any, ctx: JobContext) -> Any:
            await look(ctx.job_id)
            return payload

        registry.register(f"complete_{name}", complete, retention=keep)

    @registry.task("fail")
    async def fail(payload: Any, ctx: JobContext) -> None:
        await look(ctx.job_id)
        raise PermanentError("never works")

    return registry


def _spec(index: int, plan: Plan, now: dt.datetime) -> JobSpec:
    task = "fail" if plan.fate == "fail" else f"complete_{plan.keep}"
    run_at = now + timedelta(days=30) if plan.fate == "later" else None
    return JobSpec(task, {"index": index}, run_at=run_at)


def _state(info: JobInfo | None) -> Expected:
    if info is None:
        return None
    if info.state == DEAD_LETTERED:
        return (DEAD_LETTERED, info.dead_letter_id)
    if info.state is JobState.COMPLETED:
        return (info.state.value, info.result)
    return (info.state.value, None)


async def _check(
    sync_engine: Engine, engine: AsyncEngine, ids: list[int], expected: list[Expected]
) -> None:
    """get_job and get_job_async both answer exactly ``expected`` for every job."""
    with Session(sync_engine) as session:
        found_sync = [_state(get_job(session, i)) for i in ids]
    async with AsyncSession(engine) as session:
        found_async = [_state(await get_job_async(session, i)) for i in ids]
    assert found_sync == expected
    assert found_async == expected


def _let_time_pass(engine: Engine, step: timedelta) -> None:
    execute(
        engine,
        "UPDATE {s}.jobs SET finished_at = finished_at - :step, prune_at = prune_at - :step"
        " WHERE finished_at IS NOT NULL",
        step=step,
    )


async def _life(sync_engine: Engine, database_url: str, schema: str, plan_list: list[Plan]) -> None:
    engine = create_async_engine(
        async_url(database_url),
        poolclass=NullPool,
        execution_options={"schema_translate_map": {"backfill": schema}},
    )
    db = Database(database_url, schema=schema, pool_size=1)
    try:
        await _walk(sync_engine, engine, db, make_config(database_url, schema), plan_list)
    finally:
        await db.dispose()
        await engine.dispose()


async def _walk(
    sync_engine: Engine,
    engine: AsyncEngine,
    db: Database,
    config: WorkerConfig,
    plan_list: list[Plan],
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with Session(sync_engine) as session, session.begin():
        ids = [
            r.id for r in enqueue_many(session, [_spec(i, p, now) for i, p in enumerate(plan_list)])
        ]
    waiting: list[Expected] = [
        ("scheduled" if p.fate == "later" else "available", None) for p in plan_list
    ]
    await _check(sync_engine, engine, ids, waiting)

    # Cancelled while waiting, kept for its own retention.
    with Session(sync_engine) as session, session.begin():
        for job_id, plan in zip(ids, plan_list, strict=True):
            if plan.fate == "cancel":
                cancel_job(session, job_id, retention=KEEPS[plan.keep])
    current = [
        ("cancelled", None) if p.fate == "cancel" else w
        for p, w in zip(plan_list, waiting, strict=True)
    ]
    await _check(sync_engine, engine, ids, current)
    # A retention of 0 ends at once: the next pruning round deletes it.
    await Pruner(db).run_once()
    current = [
        None if (p.fate, p.keep) == ("cancel", "zero") else c
        for p, c in zip(plan_list, current, strict=True)
    ]
    await _check(sync_engine, engine, ids, current)

    # Running: each handler looks its own job up before it returns or fails.
    seen: dict[int, JobInfo | None] = {}
    await WorkerRunner(config, _registry(seen, engine)).run_once()
    ran = [i for i, p in zip(ids, plan_list, strict=True) if p.fate in ("complete", "fail")]
    assert sorted(seen) == sorted(ran)
    assert all(info is not None and info.state is JobState.RUNNING for info in seen.values())

    dead = {
        r["original_job_id"]: r["id"]
        for r in rows(sync_engine, "SELECT id, original_job_id FROM {s}.dead_letter_jobs")
    }
    finished: list[Expected] = []
    for job_id, plan, was in zip(ids, plan_list, current, strict=True):
        if plan.fate == "fail":
            finished.append((DEAD_LETTERED, dead[job_id]))
        elif plan.fate == "complete":
            # Retention 0 deletes the row in the statement that completes it.
            finished.append(
                None if plan.keep == "zero" else ("completed", {"index": ids.index(job_id)})
            )
        else:
            finished.append(was)
    await _check(sync_engine, engine, ids, finished)

    # Retention not over: pruning changes nothing.
    await Pruner(db).run_once()
    await _check(sync_engine, engine, ids, finished)

    # Two hours later the one-hour retention has ended; the two-day one has not.
    _let_time_pass(sync_engine, timedelta(hours=2))
    await Pruner(db).run_once()
    later = [
        None if p.keep == "hour" and p.fate in ("complete", "cancel") else f
        for p, f in zip(plan_list, finished, strict=True)
    ]
    await _check(sync_engine, engine, ids, later)

    # Three days later every retention has ended: only the waiting job and the dead
    # letters remain findable.
    _let_time_pass(sync_engine, timedelta(days=3))
    await Pruner(db).run_once()
    last = [
        f if p.fate in ("fail", "later") else None for p, f in zip(plan_list, finished, strict=True)
    ]
    await _check(sync_engine, engine, ids, last)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan_list=plans)
def test_every_job_is_found_until_its_retention_ends(
    sync_engine: Engine, database_url: str, schema: str, plan_list: list[Plan]
) -> None:
    execute(sync_engine, "DELETE FROM {s}.jobs; DELETE FROM {s}.dead_letter_jobs")
    asyncio.run(_life(sync_engine, database_url, schema, plan_list))
