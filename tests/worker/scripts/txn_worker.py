"""A worker process with one transactional task, for the crash and stall tests.

Task ``book`` inserts ``(payload key, job id, worker id)`` into ``ledger`` through
``ctx.session``, then sleeps ``--sleep`` seconds (or waits for the ``--hold`` file
to exist) with its transaction open. Any
exception the handler raises is appended to ``--failures`` (one line each) before
it propagates, so a killed process still leaves its failures behind.

Protocol on stdout, one JSON object a line: ``{"ready": true}`` once set up, and
the RunResult counts when the run ends (SIGTERM, or the end of a ``--burst``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from backfill_sa.config import WorkerConfig
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--failures", required=True, type=Path)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0, help="after the insert, seconds")
    parser.add_argument("--hold", type=Path, help="after the insert, wait until this file exists")
    parser.add_argument("--heartbeat-ms", type=int, default=200)
    parser.add_argument("--expiry-ms", type=int, default=1000)
    parser.add_argument("--burst", action="store_true", help="run_once instead of run")
    return parser.parse_args(argv)


async def _wait_for_file(path: Path) -> None:
    """Return once ``path`` exists (the test process creates it)."""
    for _ in range(12_000):  # ten minutes at most
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path} never appeared")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    insert = text(
        f'INSERT INTO "{args.schema}".ledger (key, job_id, worker_id) VALUES (:k, :j, :w)'
    )
    registry = TaskRegistry()

    @registry.task("book", transactional=True)
    async def book(payload: Any, ctx: JobContext) -> None:
        try:
            await ctx.async_session.execute(
                insert, {"k": payload["key"], "j": ctx.job_id, "w": args.worker_id}
            )
            if args.sleep:
                await asyncio.sleep(args.sleep)
            if args.hold is not None:
                await _wait_for_file(args.hold)
        except Exception as exc:
            with args.failures.open("a") as log:
                log.write(f"{ctx.job_id} {type(exc).__name__}: {exc}\n".replace("\n", " ") + "\n")
            raise

    config = WorkerConfig(
        database_url=args.url,
        schema=args.schema,
        queues={"bulk": args.concurrency},
        poll_interval=timedelta(milliseconds=50),
        heartbeat_interval=timedelta(milliseconds=args.heartbeat_ms),
        heartbeat_expiry=timedelta(milliseconds=args.expiry_ms),
        stale_lock_cleanup_interval=timedelta(milliseconds=args.heartbeat_ms),
        shutdown_timeout=timedelta(seconds=10),
        worker_id=args.worker_id,
    )
    runner = WorkerRunner(config, registry)
    _emit({"ready": True})
    if args.burst:
        result = await runner.run_once()
    else:
        result = await runner.run(handle_signals=True)
    _emit(dataclasses.asdict(result))


if __name__ == "__main__":
    asyncio.run(_main(_args(None)))
