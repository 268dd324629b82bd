"""A worker process for the reliability tests: many workers, PgBouncer, a stalled worker.

Runs a :class:`~backfill_sa.worker.WorkerRunner` with one task, ``record``, whose
handler appends ``<job id> <attempt> <worker id> <event>`` to the ``--runs`` file
(``start`` when the handler begins, ``end`` when it returns, each line flushed), so
the test can count every run of every job, even of a process that was stopped.
With ``--misbehave`` a payload ``{"then": "retry"}`` or ``{"then": "dead"}`` makes the
handler raise a retryable or a permanent error after its sleep.

Protocol on stdout, one JSON object a line: ``{"ready": true}`` once set up (with
``--wait-go`` it then reads one line from stdin before running), and the RunResult
counts when the run ends (SIGTERM asks a non-burst run to stop).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import timedelta
from typing import Any, TextIO

from backfill_sa.config import WorkerConfig
from backfill_sa.errors import PermanentError, RetryableError
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--listen-url", default=None)
    parser.add_argument("--pooled", action="store_true")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--runs", required=True, help="file the handler appends to")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.0, help="handler sleep, seconds")
    parser.add_argument("--misbehave", action="store_true", help="obey payload['then']")
    parser.add_argument("--poll-ms", type=int, default=50)
    parser.add_argument("--heartbeat-ms", type=int, default=10_000)
    parser.add_argument("--expiry-ms", type=int, default=60_000)
    parser.add_argument("--burst", action="store_true", help="run_once instead of run")
    parser.add_argument("--wait-go", action="store_true", help="read a stdin line first")
    return parser.parse_args(argv)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace, runs: TextIO) -> None:
    registry = TaskRegistry()

    @registry.task("record")
    async def record(payload: Any, ctx: JobContext) -> None:
        runs.write(f"{ctx.job_id} {ctx.attempt} {args.worker_id} start\n")
        if args.sleep:
            await asyncio.sleep(args.sleep)
        then = payload.get("then") if isinstance(payload, dict) and args.misbehave else None
        runs.write(f"{ctx.job_id} {ctx.attempt} {args.worker_id} end\n")
        if then == "retry":
            raise RetryableError("asked to fail")
        if then == "dead":
            raise PermanentError("asked to give up")

    config = WorkerConfig(
        database_url=args.url,
        listen_url=args.listen_url,
        pooled=args.pooled,
        schema=args.schema,
        queues={"bulk": args.concurrency},
        poll_interval=timedelta(milliseconds=args.poll_ms),
        heartbeat_interval=timedelta(milliseconds=args.heartbeat_ms),
        heartbeat_expiry=timedelta(milliseconds=args.expiry_ms),
        worker_id=args.worker_id,
    )
    runner = WorkerRunner(config, registry)
    _emit({"ready": True})
    if args.wait_go:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if args.burst:
        result = await runner.run_once()
    else:
        result = await runner.run(handle_signals=True)
    _emit(dataclasses.asdict(result))


if __name__ == "__main__":
    arguments = _args(None)
    with open(arguments.runs, "a", buffering=1) as runs_file:  # line-buffered: each run at once
        asyncio.run(_main(arguments, runs_file))
