"""Transactional tasks through PgBouncer in transaction pooling mode.

With ``pooled=True`` the worker's own sessions keep no prepared statements between
transactions (asyncpg's and SQLAlchemy's caches off, unique statement names;
psycopg never prepares), so each job's transaction may run on any server
connection the pooler hands out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec, enqueue, enqueue_async
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.reliability.conftest import DATABASE, OwnSchema
from tests.reliability.servers import PgBouncer
from tests.worker.conftest import add_jobs, count, execute, rows

JOBS = 150


async def test_transactional_tasks_complete_through_pgbouncer(
    bouncer: PgBouncer, own_schema: OwnSchema
) -> None:
    execute(own_schema.engine, "CREATE TABLE {s}.ledger (key text PRIMARY KEY, job_id bigint)")
    insert = text(f'INSERT INTO "{own_schema.name}".ledger (key, job_id) VALUES (:k, :j)')
    registry = TaskRegistry()

    @registry.task("a", transactional=True)
    async def in_async(payload: Any, ctx: JobContext) -> int:
        await ctx.async_session.execute(insert, {"k": payload["key"], "j": ctx.job_id})
        await enqueue_async(ctx.async_session, "next", {"after": ctx.job_id}, queue="later")
        return ctx.job_id

    @registry.task("s", transactional=True)
    def in_thread(payload: Any, ctx: JobContext) -> int:
        ctx.sync_session.execute(insert, {"k": payload["key"], "j": ctx.job_id})
        enqueue(ctx.sync_session, "next", {"after": ctx.job_id}, queue="later")
        return ctx.job_id

    specs = [JobSpec("a" if n % 2 else "s", {"key": f"k{n}"}) for n in range(JOBS)]
    ids = add_jobs(own_schema.engine, specs)
    config = WorkerConfig(
        database_url=bouncer.url_for(DATABASE),
        pooled=True,
        schema=own_schema.name,
        queues={"bulk": 8},
        poll_interval=timedelta(milliseconds=50),
        shutdown_timeout=timedelta(seconds=5),
    )

    result = await WorkerRunner(config, registry).run_once()

    assert (result.succeeded, result.refused, result.retried) == (JOBS, 0, 0)
    assert count(own_schema.engine, "dead_letter_jobs") == 0
    ledger = rows(own_schema.engine, "SELECT key, job_id FROM {s}.ledger")
    assert sorted((r["key"], r["job_id"]) for r in ledger) == sorted(
        (f"k{n}", job_id) for n, job_id in enumerate(ids)
    )
    done = rows(own_schema.engine, "SELECT id, result FROM {s}.jobs WHERE state = 'completed'")
    assert sorted((r["id"], r["result"]) for r in done) == [(i, i) for i in ids]
    follow = rows(own_schema.engine, "SELECT payload FROM {s}.jobs WHERE task = 'next'")
    assert sorted(r["payload"]["after"] for r in follow) == ids
