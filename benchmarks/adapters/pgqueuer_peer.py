"""pgqueuer adapter: enqueue through ``Queries.enqueue`` on asyncpg; worker as ``pgq run`` does.

Concurrency 10 is pgqueuer's per-entrypoint ``concurrency_limit`` with its default
batch of 10 (``max_concurrent_tasks`` must be at least twice the batch, so it cannot
say 10 with batches of 10). Its CLI runs on uvloop when uvloop is installed, as it is
here, and so does our stand-in for it (:mod:`benchmarks.pgqueuer_app`): the report
records it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from benchmarks.adapters import Adapter, Payload, Poller, SqlPoller, WorkerSpec
from benchmarks.probe import LATENCY_FILE_ENV

__all__ = ["PgqueuerAdapter"]


class PgqueuerAdapter(Adapter):
    """pgqueuer in database ``bench_pgq``."""

    name: ClassVar[str] = "pgqueuer"
    distribution: ClassVar[str] = "pgqueuer"
    database: ClassVar[str] = "bench_pgq"
    tables: ClassVar[tuple[str, ...]] = (
        "pgqueuer",
        "pgqueuer_log",
        "pgqueuer_statistics",
        "pgqueuer_schedules",
    )
    concurrency_limit: ClassVar[int] = 10

    _conn: asyncpg.Connection | None = None
    _queries: Queries | None = None

    async def setup(self) -> None:
        """Create ``bench_pgq`` and install pgqueuer's schema there.

        Raises:
            psycopg.Error | asyncpg.PostgresError: the server refused.
        """
        self.server.create_database(self.database)
        self._conn = await asyncpg.connect(self.dsn)
        self._queries = Queries(AsyncpgDriver(self._conn))
        await self._queries.install()

    async def close(self) -> None:
        """Close the enqueue connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def queries(self) -> Queries:
        """pgqueuer's query object (after :meth:`setup`)."""
        if self._queries is None:
            raise RuntimeError("pgqueuer adapter: setup() has not run")
        return self._queries

    async def enqueue_one(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """One ``enqueue`` call: one autocommitted statement."""
        await self.queries.enqueue(task, json.dumps(payload).encode(), priority)

    async def enqueue_batch(
        self, task: str, payloads: Sequence[Payload], *, queue: str = "bench", priority: int = 0
    ) -> None:
        """One ``enqueue`` call with lists: one statement for the batch."""
        await self.queries.enqueue(
            [task] * len(payloads),
            [json.dumps(p).encode() for p in payloads],
            [priority] * len(payloads),
        )

    def worker(self, queues: Mapping[str, int], latency_file: Path) -> WorkerSpec:
        """pgqueuer's supervisor with the benchmark factory; concurrency: sum of ``queues``."""
        env = self.base_env()
        env.update(
            {
                "BENCH_DSN": self.dsn,
                "BENCH_CONCURRENCY": str(sum(queues.values())),
                LATENCY_FILE_ENV: str(latency_file),
            }
        )
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        return WorkerSpec(
            argv=[self.python, "-m", "benchmarks.pgqueuer_app"],
            env=env,
            event_loop=loop,
        )

    def open_poller(self) -> Poller:
        """Count jobs still queued or picked."""
        return SqlPoller(
            self.dsn, "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"
        )
