"""One rule for task defaults: the call's values, else the task's (with the registry), else ours."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.enqueue import enqueue, enqueue_async, job_spec
from backfill_sa.errors import JobValidationError
from backfill_sa.models import Job
from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import JobContext, TaskRegistry

SLOW = RetryPolicy(max_attempts=6, initial_delay=timedelta(seconds=2))


def _registry() -> TaskRegistry:
    registry = TaskRegistry()

    async def handler(payload: Any, ctx: JobContext) -> None:
        return None

    registry.register("resize", handler, queue="images", priority=-3, max_attempts=1)
    registry.register("ping", handler, retry=SLOW)
    return registry


def _jobs(engine: Engine) -> list[tuple[str, int, int, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Job.queue, Job.priority, Job.max_attempts, Job.retry_policy).order_by(Job.id)
        ).all()
    return [tuple(row) for row in rows]


def test_enqueue_with_the_registry_takes_the_tasks_defaults(sync_engine: Engine) -> None:
    registry = _registry()
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "resize", registry=registry)
        enqueue(session, "resize", registry=registry, queue="bulk", max_attempts=4)
        enqueue(session, "ping", registry=registry)
        registry["resize"].enqueue(session)
        enqueue(session, "resize")  # no registry: the library's defaults

    jobs = _jobs(sync_engine)
    assert [job[:3] for job in jobs] == [
        ("images", -3, 1),
        ("bulk", -3, 4),
        ("bulk", 0, 6),
        ("images", -3, 1),  # Task.enqueue: the same rule
        ("bulk", 0, 8),
    ]
    assert jobs[2][3] == SLOW.to_json()
    assert jobs[4][3] is None


async def test_enqueue_async_follows_the_same_rule(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    registry = _registry()
    async with AsyncSession(async_engine) as session, session.begin():
        await enqueue_async(session, "resize", {"n": 1}, registry=registry, priority=7)

    assert [job[:3] for job in _jobs(sync_engine)] == [("images", 7, 1)]


def test_a_task_the_registry_lacks_is_refused_before_writing(sync_engine: Engine) -> None:
    with pytest.raises(JobValidationError) as info:
        job_spec("nope", None, _registry())

    assert info.value.field == "task"
    assert "'nope' is not registered" in str(info.value)
    with Session(sync_engine) as session, session.begin(), pytest.raises(JobValidationError):
        enqueue(session, "nope", registry=_registry())
    assert _jobs(sync_engine) == []
