"""pgqueuer's benchmark worker: ``python -m benchmarks.pgqueuer_app``.

Does what ``pgq run benchmarks.pgqueuer_app:create --batch-size 10`` does (pgqueuer's
supervisor ``pgqueuer.run`` on uvloop when installed), without its CLI, whose
``--log-level`` handling fails with the installed typer (``AttributeError: 'str' object
has no attribute 'name'`` in ``setup_fancy_logger``). Reads ``BENCH_DSN``,
``BENCH_BATCH_SIZE`` (10), ``BENCH_MAX_CONCURRENT`` (``max_concurrent_tasks``, this
process's limit; 0 = none) and ``BENCH_ENTRYPOINT_LIMIT`` (each entrypoint's
``concurrency_limit``, enforced in the database across all workers; 0 = none). The
handlers mirror :mod:`benchmarks.tasks`: ``noop`` and ``latency``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pgqueuer
from pgqueuer import AsyncpgDriver, Job, PgQueuer

from benchmarks import probe

__all__ = ["create", "main"]


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """Yield a PgQueuer with the two benchmark entrypoints on one asyncpg connection.

    Raises:
        KeyError: ``BENCH_DSN`` is not set.
    """
    connection = await asyncpg.connect(os.environ["BENCH_DSN"])
    limit = int(os.environ.get("BENCH_ENTRYPOINT_LIMIT", "0"))
    try:
        pgq = PgQueuer(AsyncpgDriver(connection))

        @pgq.entrypoint("noop", concurrency_limit=limit)
        async def noop(job: Job) -> None:
            return None

        @pgq.entrypoint("latency", concurrency_limit=limit)
        async def latency(job: Job) -> None:
            started = time.time()
            payload = json.loads(job.payload or b"{}")
            probe.record_raw(str(payload["label"]), float(payload["t0"]), started)

        yield pgq
    finally:
        await connection.close()


def main() -> None:
    """Run the worker until SIGINT/SIGTERM, on uvloop when it is installed."""
    batch_size = int(os.environ.get("BENCH_BATCH_SIZE", "10"))
    max_concurrent = int(os.environ.get("BENCH_MAX_CONCURRENT", "0")) or None
    work = pgqueuer.run(create, batch_size=batch_size, max_concurrent_tasks=max_concurrent)
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
    else:
        uvloop.run(work)


if __name__ == "__main__":
    main()
