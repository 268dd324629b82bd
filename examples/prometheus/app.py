"""backfill_sa's metrics on a Prometheus ``/metrics`` endpoint, with a worker at work.

    pip install 'backfill-sa[prometheus]'
    DATABASE_URL=postgresql://... python -m examples.prometheus.app --port 9464
    curl http://127.0.0.1:9464/metrics

It enqueues jobs that succeed, fail once, fail for good and wait an hour, runs a
worker until they have settled, prints the URL, then serves until SIGTERM or Ctrl-C
(a worker in production serves for its whole life). ``alerts.yml`` beside this file
has the alert rules for these metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import enqueue, enqueue_batch
from backfill_sa.errors import PermanentError, RetryableError
from backfill_sa.migrations import upgrade
from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.telemetry import Telemetry
from backfill_sa.worker import WorkerRunner

registry = TaskRegistry()


@registry.task("resize")
async def resize(payload: dict[str, Any], ctx: JobContext) -> None:
    """Succeeds."""


@registry.task("flaky", retry=RetryPolicy(initial_delay=timedelta(milliseconds=100)))
async def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
    """Fails its first attempt, succeeds on the retry."""
    if ctx.attempt == 1:
        raise RetryableError("upstream timed out")


@registry.task("charge")
async def charge(payload: dict[str, Any], ctx: JobContext) -> None:
    """Fails for good: the job goes to the dead-letter queue."""
    raise PermanentError("card declined")


async def serve(host: str, port: int) -> int:
    """Enqueue, run the worker until the jobs settle, then serve until a signal."""
    worker_id = f"example-{os.getpid()}"
    meter_provider = MeterProvider(
        resource=Resource.create(
            {"service.name": "backfill-example", "service.instance.id": worker_id}
        ),
        metric_readers=[PrometheusMetricReader()],
    )
    telemetry = Telemetry(meter_provider=meter_provider)  # hand the same one to both sides
    start_http_server(port, addr=host)

    engine = create_engine(sync_url(os.environ["DATABASE_URL"]))
    upgrade(engine)
    with Session(engine) as session, session.begin():
        enqueue_batch(session, "resize", [{"image": n} for n in range(20)], telemetry=telemetry)
        for n in range(3):
            enqueue(session, "flaky", {"n": n}, telemetry=telemetry)
        for n in range(2):
            enqueue(session, "charge", {"order": n}, telemetry=telemetry)
        later = dt.datetime.now(dt.timezone.utc) + timedelta(hours=1)
        enqueue_batch(session, "report", [{}] * 5, run_at=later, telemetry=telemetry)
    engine.dispose()

    config = WorkerConfig(
        database_url=os.environ["DATABASE_URL"],
        worker_id=worker_id,
        queues={"bulk": 5},
        poll_interval=timedelta(milliseconds=100),
        heartbeat_interval=timedelta(seconds=1),
    )
    runner = WorkerRunner(config, registry, telemetry=telemetry)
    handle = runner.start()
    deadline = time.monotonic() + 60
    while runner.result.succeeded < 23 or runner.result.dead_lettered < 2:
        if not handle.running or time.monotonic() > deadline:
            print("the jobs did not settle", file=sys.stderr)
            await handle.stop(force=True)
            return 1
        await asyncio.sleep(0.05)
    await runner.snapshot_queues()  # the leader refreshes it every heartbeat anyway
    print(f"serving metrics at http://{host}:{port}/metrics", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await handle.stop()
    meter_provider.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the example; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m examples.prometheus.app")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: local only)")
    parser.add_argument("--port", type=int, default=9464, help="port of /metrics (9464)")
    args = parser.parse_args(argv)
    return asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
