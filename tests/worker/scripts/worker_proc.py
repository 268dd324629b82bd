"""A worker process for the crash and multi-process tests.

Runs a :class:`~backfill_sa.worker.WorkerRunner` on the test's schema with one task,
``record``, whose handler (after an optional sleep) logs the attempt in ``runs`` and
inserts the job id into ``results``: a plain insert with ``--strict`` (a duplicate
fails the attempt), ``ON CONFLICT DO NOTHING`` otherwise.

Protocol on stdout, one JSON object a line: ``{"ready": true}`` once set up (with
``--wait-go`` it then reads one line from stdin before running), and the RunResult
counts when the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import timedelta
from typing import Any

import asyncpg

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import libpq_dsn
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--queue", action="append", help="queue served (repeatable; bulk)")
    parser.add_argument("--sleep", type=float, default=0.0, help="handler sleep, seconds")
    parser.add_argument("--strict", action="store_true", help="plain insert into results")
    parser.add_argument("--burst", action="store_true", help="run_once instead of run")
    parser.add_argument("--wait-go", action="store_true", help="read a stdin line first")
    return parser.parse_args(argv)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(libpq_dsn(args.url), min_size=1, max_size=args.concurrency)
    assert pool is not None
    schema = f'"{args.schema}"'
    insert = f"INSERT INTO {schema}.results (job_id, worker_id) VALUES ($1, $2)"
    if not args.strict:
        insert += " ON CONFLICT DO NOTHING"
    log = f"INSERT INTO {schema}.runs (job_id, worker_id, attempt) VALUES ($1, $2, $3)"

    registry = TaskRegistry()

    @registry.task("record")
    async def record(payload: Any, ctx: JobContext) -> None:
        if args.sleep:
            await asyncio.sleep(args.sleep)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(log, ctx.job_id, args.worker_id, ctx.attempt)
            await conn.execute(insert, ctx.job_id, args.worker_id)

    config = WorkerConfig(
        database_url=args.url,
        schema=args.schema,
        queues=dict.fromkeys(args.queue or ["bulk"], args.concurrency),
        poll_interval=timedelta(milliseconds=50),
        worker_id=args.worker_id,
    )
    runner = WorkerRunner(config, registry)
    _emit({"ready": True})
    if args.wait_go:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    try:
        if args.burst:
            result = await runner.run_once()
        else:
            result = await runner.run(handle_signals=True)
    finally:
        await pool.close()
    _emit(dataclasses.asdict(result))


if __name__ == "__main__":
    asyncio.run(_main(_args(None)))
