"""Property: under many concurrent sessions, the jobs that exist are exactly the committed ones.

Each example runs up to 12 sessions at once, sync (threads, psycopg) and async
(asyncpg) mixed. Every session enqueues a few jobs, some of them inside a savepoint
that it rolls back, and then commits, rolls back, or raises out of its transaction
block. Afterwards the table holds exactly the jobs of committed transactions, minus
those of rolled-back savepoints: none lost, none leaked, none twice.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from backfill_sa.dburl import async_url
from backfill_sa.enqueue import JobSpec, enqueue, enqueue_async, enqueue_many, enqueue_many_async
from tests.worker.conftest import execute, rows

pytestmark = pytest.mark.slow

Ending = Literal["commit", "rollback", "raise"]


class Abort(Exception):
    """Raised out of a transaction block: the block must roll back."""


@dataclass(frozen=True)
class Plan:
    """One session: its driver, its jobs, a rolled-back savepoint's jobs, how it ends."""

    driver: Literal["sync", "async"]
    jobs: int
    savepoint_jobs: int
    batch: bool
    ending: Ending


plans = st.lists(
    st.builds(
        Plan,
        driver=st.sampled_from(["sync", "async"]),
        jobs=st.integers(1, 4),
        savepoint_jobs=st.integers(0, 2),
        batch=st.booleans(),
        ending=st.sampled_from(["commit", "rollback", "raise"]),
    ),
    min_size=1,
    max_size=12,
)


def _keys(index: int, plan: Plan) -> tuple[list[str], list[str]]:
    kept = [f"{index}-{n}" for n in range(plan.jobs)]
    dropped = [f"{index}-sp{n}" for n in range(plan.savepoint_jobs)]
    return kept, dropped


def _run_sync(engine: Engine, index: int, plan: Plan) -> None:
    kept, dropped = _keys(index, plan)
    with Session(engine) as session:
        try:
            with session.begin():
                if plan.batch:
                    enqueue_many(session, [JobSpec("t", {"key": k}) for k in kept])
                else:
                    for key in kept:
                        enqueue(session, "t", {"key": key})
                if dropped:
                    savepoint = session.begin_nested()
                    enqueue_many(session, [JobSpec("t", {"key": k}) for k in dropped])
                    savepoint.rollback()
                if plan.ending == "raise":
                    raise Abort
                if plan.ending == "rollback":
                    session.rollback()
        except Abort:
            pass


async def _run_async(session: AsyncSession, index: int, plan: Plan) -> None:
    kept, dropped = _keys(index, plan)
    try:
        async with session.begin():
            if plan.batch:
                await enqueue_many_async(session, [JobSpec("t", {"key": k}) for k in kept])
            else:
                for key in kept:
                    await enqueue_async(session, "t", {"key": key})
            if dropped:
                savepoint = await session.begin_nested()
                await enqueue_many_async(session, [JobSpec("t", {"key": k}) for k in dropped])
                await savepoint.rollback()
            await asyncio.sleep(0)  # let the other sessions interleave
            if plan.ending == "raise":
                raise Abort
            if plan.ending == "rollback":
                await session.rollback()
    except Abort:
        pass


async def _run_all(
    sync_engine: Engine, database_url: str, schema: str, plan_list: list[Plan]
) -> None:
    engine = create_async_engine(
        async_url(database_url),
        poolclass=NullPool,
        execution_options={"schema_translate_map": {"backfill": schema}},
    )
    try:
        sessions = [AsyncSession(engine) for _ in plan_list]
        work = [
            _run_async(sessions[i], i, plan)
            if plan.driver == "async"
            else asyncio.to_thread(_run_sync, sync_engine, i, plan)
            for i, plan in enumerate(plan_list)
        ]
        await asyncio.gather(*work)
        for session in sessions:
            await session.close()
    finally:
        await engine.dispose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan_list=plans)
def test_exactly_the_committed_jobs_exist(
    sync_engine: Engine, database_url: str, schema: str, plan_list: list[Plan]
) -> None:
    execute(sync_engine, "DELETE FROM {s}.jobs")
    asyncio.run(_run_all(sync_engine, database_url, schema, plan_list))

    expected = sorted(
        itertools.chain.from_iterable(
            _keys(i, plan)[0] for i, plan in enumerate(plan_list) if plan.ending == "commit"
        )
    )
    found = sorted(
        r["key"] for r in rows(sync_engine, "SELECT payload->>'key' AS key FROM {s}.jobs")
    )
    assert found == expected
