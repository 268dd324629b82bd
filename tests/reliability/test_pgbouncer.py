"""PgBouncer in transaction pooling mode between the application, the workers and PostgreSQL.

PgBouncer (Debian's package) runs in front of the tests' own server with a generated
configuration (``pool_mode = transaction``, 20 server connections). Sessions enqueue
through it with the client settings docs/deployment.md gives; workers claim and
complete through it with ``pooled=True``; LISTEN goes to a direct URL when one is
configured, and otherwise the worker polls and says so once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import async_url, sync_url
from backfill_sa.enqueue import JobSpec, enqueue, enqueue_async, enqueue_many
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.reliability.conftest import DATABASE, OwnSchema
from tests.reliability.procs import WorkerProc, ended_once, read_runs, started_together
from tests.reliability.servers import PgBouncer
from tests.worker.conftest import add_jobs, count, wait_for

POLLING_WARNING = "LISTEN is off"


def _translate(schema: str) -> dict[str, Any]:
    return {"schema_translate_map": {"backfill": schema}}


def test_sync_session_enqueues_through_pgbouncer(bouncer: PgBouncer, own_schema: OwnSchema) -> None:
    # psycopg prepares a statement on the server after 5 runs; behind a transaction
    # pooler the next transaction may land on a server connection without it (one
    # client in a row usually gets the same one back, so this test cannot show it).
    engine = create_engine(
        sync_url(bouncer.url_for(DATABASE)),
        connect_args={"prepare_threshold": None},
        execution_options=_translate(own_schema.name),
    )
    try:
        for n in range(30):  # well past psycopg's prepare threshold
            with Session(engine) as session, session.begin():
                enqueue(session, "t", {"n": n})
                enqueue_many(session, [JobSpec("t", {"n": n, "many": True})])
        with Session(engine) as session, session.begin():
            enqueue(session, "t", {"n": "rolled back"})
            session.rollback()
    finally:
        engine.dispose()
    assert count(own_schema.engine, "jobs") == 60


async def test_async_session_enqueues_through_pgbouncer(
    bouncer: PgBouncer, own_schema: OwnSchema
) -> None:
    engine = create_async_engine(
        async_url(bouncer.url_for(DATABASE)),
        # asyncpg's own statement cache and SQLAlchemy's: both off behind the pooler.
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0},
        execution_options=_translate(own_schema.name),
    )
    try:
        for n in range(30):
            async with AsyncSession(engine) as session, session.begin():
                await enqueue_async(session, "t", {"n": n})
    finally:
        await engine.dispose()
    assert count(own_schema.engine, "jobs") == 30


def _pooled_config(bouncer: PgBouncer, own_schema: OwnSchema, **overrides: Any) -> WorkerConfig:
    values: dict[str, Any] = {
        "database_url": bouncer.url_for(DATABASE),
        "pooled": True,
        "schema": own_schema.name,
        "queues": {"bulk": 5},
        "poll_interval": timedelta(milliseconds=50),
        "shutdown_timeout": timedelta(seconds=5),
    }
    values.update(overrides)
    return WorkerConfig(**values)


async def test_pooled_worker_without_listen_url_polls_and_warns_once(
    bouncer: PgBouncer, own_schema: OwnSchema, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[int] = []
    registry = TaskRegistry()

    @registry.task("t")
    async def handler(payload: Any, ctx: JobContext) -> None:
        done.append(ctx.job_id)

    caplog.set_level(logging.WARNING, logger="backfill_sa")
    runner = WorkerRunner(_pooled_config(bouncer, own_schema), registry)
    handle = runner.start()
    try:
        ids = add_jobs(own_schema.engine, [JobSpec("t", {"n": n}) for n in range(50)])
        await wait_for(lambda: len(done) == 50, timeout=30, what="50 jobs by polling")
        later = add_jobs(own_schema.engine, [JobSpec("t", {"n": n}) for n in range(50)])
        await wait_for(lambda: len(done) == 100, timeout=30, what="50 more")
        assert runner.listener is None
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=30)
    assert sorted(done) == sorted(ids + later)
    assert result.succeeded == 100
    warnings = [r for r in caplog.records if POLLING_WARNING in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert count(own_schema.engine, "jobs") == 0


async def test_pooled_worker_listens_on_the_direct_listen_url(
    bouncer: PgBouncer, own_schema: OwnSchema, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []
    registry = TaskRegistry()

    @registry.task("t")
    async def handler(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    caplog.set_level(logging.WARNING, logger="backfill_sa")
    # A poll interval far longer than the wait below: only a NOTIFY can wake the fetcher.
    config = _pooled_config(
        bouncer, own_schema, listen_url=own_schema.url, poll_interval=timedelta(minutes=5)
    )
    runner = WorkerRunner(config, registry)
    handle = runner.start()
    try:
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            timeout=20,
            what="the LISTEN connection",
        )
        first = add_jobs(own_schema.engine, [JobSpec("t", {"n": 1})])
        await wait_for(lambda: ran == first, timeout=20, what="the first job")
        # The fetcher went back to its 5-minute wait after the first job (whichever
        # wake-up found it): only the second job's NOTIFY can wake it now.
        second = add_jobs(own_schema.engine, [JobSpec("t", {"n": 2})])
        await wait_for(lambda: ran == first + second, timeout=20, what="the NOTIFY")
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=30)
    assert result.succeeded == 2
    assert not [r for r in caplog.records if POLLING_WARNING in r.getMessage()]


@pytest.mark.slow
def test_20000_jobs_drained_through_pgbouncer_each_exactly_once(
    bouncer: PgBouncer, own_schema: OwnSchema, tmp_path: Path
) -> None:
    jobs, workers = 20_000, 4
    ids = add_jobs(own_schema.engine, [JobSpec("record", {"n": n}) for n in range(jobs)])
    procs = [
        WorkerProc.start(
            url=bouncer.url_for(DATABASE),
            schema=own_schema.name,
            worker_id=f"bouncer-w{i}",
            runs_dir=tmp_path,
            extra=("--pooled", "--concurrency", "10", "--burst", "--wait-go"),
        )
        for i in range(workers)
    ]
    with started_together(procs):
        counts = [p.finish() for p in procs]
    runs = read_runs(p.runs for p in procs)
    ended = ended_once(runs)
    assert sorted(ended) == ids
    assert [job_id for job_id, n in ended.items() if n > 1] == []
    assert len(runs) == 2 * jobs  # one start and one end per job: nothing ran twice
    assert sum(c["succeeded"] for c in counts) == jobs
    assert [(c["retried"], c["dead_lettered"], c["refused"]) for c in counts] == [(0, 0, 0)] * 4
    assert count(own_schema.engine, "jobs") == 0
    assert count(own_schema.engine, "dead_letter_jobs") == 0
