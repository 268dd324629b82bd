"""pgqueuer adapter: enqueue through ``Queries.enqueue`` on asyncpg; worker as ``pgq run`` does.

Concurrency 10 in one process is pgqueuer's ``max_concurrent_tasks=10``, which must be
at least twice the batch, so batches are 5 (:class:`PgqueuerAdapter`). Two variants for
context: no limit at all with pgqueuer's default batch of 10 (``pgqueuer-unbounded``,
the configuration behind the issue's 5,700-6,000 jobs/s), and the per-entrypoint
``concurrency_limit=10`` (``pgqueuer-entrypoint-limit``), which pgqueuer enforces in the
database across all workers and which costs far more per job.

pgqueuer's CLI runs on uvloop when uvloop is installed, as it is here, and so does our
stand-in for it (:mod:`benchmarks.pgqueuer_app`): the report records it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import asyncpg
from pgqueuer import AsyncpgDriver, Queries
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from backfill_sa.dburl import async_url
from benchmarks.adapters import Adapter, Payload, Poller, SqlPoller, WorkerSpec
from benchmarks.business import ORDER, orders
from benchmarks.probe import LATENCY_FILE_ENV

__all__ = ["PgqueuerAdapter", "PgqueuerEntrypointLimitAdapter", "PgqueuerUnboundedAdapter"]


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

    def limits(self, concurrency: int) -> dict[str, str]:
        """The worker's batch and limits for ``concurrency`` jobs at once in one process."""
        return {
            "BENCH_BATCH_SIZE": str(max(1, concurrency // 2)),
            "BENCH_MAX_CONCURRENT": str(concurrency),
        }

    _conn: asyncpg.Connection | None = None
    _queries: Queries | None = None
    _session_engine: AsyncEngine | None = None
    _session_queries: dict[int, tuple[asyncpg.Connection, Queries]]

    async def setup(self) -> None:
        """Create ``bench_pgq`` and install pgqueuer's schema there.

        Raises:
            psycopg.Error | asyncpg.PostgresError: the server refused.
        """
        self.server.create_database(self.database)
        self._conn = await asyncpg.connect(self.dsn)
        self._queries = Queries(AsyncpgDriver(self._conn))
        await self._queries.install()
        self._session_engine = create_async_engine(async_url(self.dsn))
        self._session_queries = {}

    async def close(self) -> None:
        """Close the enqueue connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._session_engine is not None:
            await self._session_engine.dispose()
            self._session_engine = None

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

    async def enqueue_in_session(self, payload: Payload) -> None:
        """W1tx: a business row, then ``Queries.enqueue`` on the AsyncSession's own asyncpg
        connection (inside its transaction), then the session's commit. The Queries
        object is made once per pooled connection."""
        if self._session_engine is None:
            raise RuntimeError("pgqueuer adapter: setup() has not run")
        async with AsyncSession(self._session_engine, expire_on_commit=False) as session:
            await session.execute(insert(orders).values(ORDER))
            connection = await session.connection()
            driver = (await connection.get_raw_connection()).driver_connection
            known = self._session_queries.get(id(driver))
            if known is None or known[0] is not driver:
                known = self._session_queries[id(driver)] = (
                    driver,
                    Queries(AsyncpgDriver(driver)),
                )
            await known[1].enqueue("noop", json.dumps(payload).encode(), 0)
            await session.commit()

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
                **self.limits(sum(queues.values())),
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
        return SqlPoller(self.dsn, "pgqueuer", "status IN ('queued', 'picked')")


class PgqueuerUnboundedAdapter(PgqueuerAdapter):
    """pgqueuer without any concurrency limit, batches of 10, in ``bench_pgq_unbounded``."""

    name: ClassVar[str] = "pgqueuer-unbounded"
    database: ClassVar[str] = "bench_pgq_unbounded"
    worker_variant: ClassVar[bool] = True

    def limits(self, concurrency: int) -> dict[str, str]:
        """No limit; pgqueuer's default batch of 10."""
        return {"BENCH_BATCH_SIZE": "10"}


class PgqueuerEntrypointLimitAdapter(PgqueuerAdapter):
    """pgqueuer with ``concurrency_limit`` per entrypoint, in ``bench_pgq_eplimit``."""

    name: ClassVar[str] = "pgqueuer-entrypoint-limit"
    database: ClassVar[str] = "bench_pgq_eplimit"
    worker_variant: ClassVar[bool] = True

    def limits(self, concurrency: int) -> dict[str, str]:
        """``concurrency_limit=concurrency`` on each entrypoint; pgqueuer's batch of 10."""
        return {"BENCH_BATCH_SIZE": "10", "BENCH_ENTRYPOINT_LIMIT": str(concurrency)}
