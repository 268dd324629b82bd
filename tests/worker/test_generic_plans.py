"""The worker's statements are planned once: generic plans that still use the indexes.

PostgreSQL replans a prepared statement on every execution unless its generic plan
looks no worse than the custom ones. The worker's SQL is written so that it does
(the claim's ``LIMIT`` is written into the text, and updates reach their CTE's rows
through ``= ANY(ARRAY(...))``), which took about 40% off PostgreSQL's CPU per claim.
These tests hold both halves: with a large table, every statement's generic plan
reads ``jobs`` through an index, and the claim really runs on a generic plan. A
third holds the statements that find the jobs a worker holds to the primary key,
even when the statistics say nothing runs and the running index is full of the dead
entries of every job run since the last VACUUM.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import Engine

from backfill_sa.dburl import libpq_dsn
from backfill_sa.statements import worker_sql
from tests.worker.conftest import execute

_ROWS = 30_000


@pytest.fixture
def big_table(sync_engine: Engine, schema: str) -> str:
    """The test's schema with 30,000 jobs (available, scheduled, running, completed,
    cancelled), analysed."""
    execute(
        sync_engine,
        "INSERT INTO {s}.jobs (task, queue, payload, state, run_at, locked_by, locked_at,"
        " finished_at, prune_at)"
        " SELECT 'noop', 'bulk', '{}'::jsonb, st, now() + (CASE WHEN st = 'scheduled'"
        " THEN interval '1 day' ELSE interval '0' END),"
        " CASE WHEN st = 'running' THEN 'w' END, CASE WHEN st = 'running' THEN now() END,"
        " CASE WHEN st IN ('completed', 'cancelled') THEN now() END,"
        " CASE WHEN st IN ('completed', 'cancelled') THEN now() + interval '1 day' END"
        f" FROM generate_series(1, {_ROWS}) AS i,"
        " LATERAL (SELECT (ARRAY['available', 'scheduled', 'running', 'completed',"
        " 'cancelled'])[1 + i % 5] AS st) AS s",
    )
    execute(sync_engine, "ANALYZE {s}.jobs")
    return schema


async def _generic_plan(database_url: str, schema: str, name: str) -> str:
    """EXPLAIN of the generic plan of ``worker_sql.<name>`` in ``schema`` (NULL params)."""
    statement = getattr(worker_sql, name)
    sql = statement.for_schema(schema, {"limit": 10})
    nulls = ", ".join("NULL" for _ in statement.params)
    conn = await asyncpg.connect(libpq_dsn(database_url))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE probe AS {sql}")
        explain = f"EXPLAIN EXECUTE probe{f'({nulls})' if nulls else ''}"
        return "\n".join(row[0] for row in await conn.fetch(explain))
    finally:
        await conn.close()


@pytest.mark.parametrize("name", worker_sql.__all__)
async def test_every_generic_plan_reads_jobs_through_an_index(
    database_url: str, big_table: str, name: str
) -> None:
    plan = await _generic_plan(database_url, big_table, name)
    assert "Seq Scan on jobs" not in plan, plan
    assert "Seq Scan on dead_letter_jobs" not in plan, plan


async def test_the_claim_runs_on_a_generic_plan(database_url: str, big_table: str) -> None:
    claim = worker_sql.job_claim_batch
    sql = claim.for_schema(big_table, {"limit": 5})
    conn = await asyncpg.connect(libpq_dsn(database_url))
    try:
        claimed = 0
        for _ in range(8):  # PostgreSQL weighs a generic plan after five custom ones
            rows = await conn.fetch(
                sql, *claim.arguments({"claim_queue": "bulk", "worker_id": "w"})
            )
            claimed += len(rows)
        generic, custom = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE '%SKIP LOCKED%'"
            " AND statement NOT LIKE '%pg_prepared_statements%'"
        )
    finally:
        await conn.close()
    assert claimed == 40
    assert generic >= 3, (generic, custom)


# The statements that find running jobs by the (id, lease) pairs a worker holds.
_FENCED = (
    "job_complete_many",
    "job_cancel_many",
    "job_retry_many",
    "job_dead_letter_many",
    "job_complete_and_claim",
)


@pytest.fixture
def many_runs_since_vacuum(sync_engine: Engine, schema: str) -> str:
    """20,000 available jobs analysed while none ran; then 10,000 of them run and
    finish (no VACUUM), leaving their dead entries in the running index."""
    execute(
        sync_engine,
        "INSERT INTO {s}.jobs (task, queue, payload)"
        f" SELECT 'noop', 'bulk', '{{}}'::jsonb FROM generate_series(1, {_ROWS * 2 // 3})",
    )
    execute(sync_engine, "ANALYZE {s}.jobs")
    execute(
        sync_engine,
        "UPDATE {s}.jobs SET state = 'running', locked_by = 'w', locked_at = now()"
        " WHERE id IN (SELECT id FROM {s}.jobs ORDER BY id LIMIT :n)",
        n=_ROWS // 3,
    )
    assert execute(sync_engine, "DELETE FROM {s}.jobs WHERE state = 'running'") == _ROWS // 3
    return schema


@pytest.mark.parametrize("name", _FENCED)
async def test_held_jobs_are_found_by_primary_key_whatever_the_statistics(
    database_url: str, many_runs_since_vacuum: str, name: str
) -> None:
    plan = await _generic_plan(database_url, many_runs_since_vacuum, name)
    assert "ix_jobs_running" not in plan, plan
    assert "pk_jobs" in plan, plan
