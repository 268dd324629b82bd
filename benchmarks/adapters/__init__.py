"""One adapter per library: the same operations, each done the library's own way.

An adapter owns one database on the server (created in :meth:`Adapter.setup`, dropped in
:meth:`Adapter.teardown`), enqueues through the library's public API, knows how to start
the library's worker as a separate process, and how to count unfinished jobs.
"""

from __future__ import annotations

import abc
import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import psycopg
from psycopg import sql
from sqlalchemy import MetaData, create_engine

from backfill_sa.dburl import sync_url
from benchmarks.database import Server

__all__ = [
    "ADAPTERS",
    "DEFAULT_LIBS",
    "Adapter",
    "Payload",
    "Poller",
    "WorkerSpec",
    "load_adapter",
]

Payload = dict[str, object]
"""A job's JSON payload."""

REPO_ROOT = Path(__file__).resolve().parents[2]

ADAPTERS: Mapping[str, str] = {
    "ours": "benchmarks.adapters.ours:OursAdapter",
    "ours-retention0": "benchmarks.adapters.ours:OursNoRetentionAdapter",
    "pgqueuer": "benchmarks.adapters.pgqueuer_peer:PgqueuerAdapter",
    "procrastinate": "benchmarks.adapters.procrastinate_peer:ProcrastinateAdapter",
    "pgqueuer-unbounded": "benchmarks.adapters.pgqueuer_peer:PgqueuerUnboundedAdapter",
    "pgqueuer-entrypoint-limit": (
        "benchmarks.adapters.pgqueuer_peer:PgqueuerEntrypointLimitAdapter"
    ),
}
"""Library name -> ``module:class`` of its adapter, in report order."""

DEFAULT_LIBS = ("ours", "pgqueuer", "pgqueuer-unbounded", "procrastinate")
"""What runs unless ``--libs`` says otherwise."""


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one worker process.

    Attributes:
        argv: the command line.
        env: variables added to the harness's environment.
        event_loop: the event loop the worker runs on (for the record).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    event_loop: str = "asyncio"


class Poller(Protocol):
    """A connection that counts unfinished jobs; its backend is left out of PG CPU."""

    @property
    def backend_pid(self) -> int:
        """The server process serving this connection."""

    def unfinished(self) -> int:
        """Return how many drained jobs are not finished yet."""

    def any_unfinished(self) -> bool:
        """Return whether any drained job is not finished yet (cheaper than counting)."""

    def close(self) -> None:
        """Close the connection."""


NO_PARALLEL = "SET max_parallel_workers_per_gather = 0"
"""Polls run without parallel workers: those would be processes outside the per-database
CPU accounting, competing for the cores the drain needs."""


class SqlPoller:
    """A :class:`Poller` running two SQL queries on an autocommit psycopg connection."""

    def __init__(self, dsn: str, table: str, where: str) -> None:
        """Connect to ``dsn``; unfinished jobs are the rows of ``table`` matching ``where``.

        Raises:
            psycopg.Error: cannot connect.
        """
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.execute(NO_PARALLEL)
        self._count = f"SELECT count(*) FROM {table} WHERE {where}"
        self._exists = f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {where})"
        row = self._conn.execute("SELECT pg_backend_pid()").fetchone()
        self._pid = int(row[0]) if row else 0

    @property
    def backend_pid(self) -> int:
        """The server process serving this connection."""
        return self._pid

    def unfinished(self) -> int:
        """Run the counting query.

        Raises:
            psycopg.Error: the query failed.
        """
        row = self._conn.execute(self._count).fetchone()
        return int(row[0]) if row else 0

    def any_unfinished(self) -> bool:
        """Probe for one unfinished job.

        Raises:
            psycopg.Error: the query failed.
        """
        row = self._conn.execute(self._exists).fetchone()
        return bool(row[0]) if row else False

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class Adapter(abc.ABC):
    """The operations every workload needs, implemented per library."""

    name: ClassVar[str]
    """Short name used on the command line and in reports."""
    distribution: ClassVar[str]
    """Distribution whose version the report records."""
    database: ClassVar[str]
    """Database this adapter creates and drops."""
    tables: ClassVar[tuple[str, ...]]
    """Qualified tables emptied between workloads and analysed before a drain."""
    worker_variant: ClassVar[bool] = False
    """True for another worker configuration of a library already measured: the
    enqueue-only workloads (W1, W2) would repeat that library's figures, so they skip."""

    def __init__(self, server: Server) -> None:
        """Bind to ``server``; nothing is created before :meth:`setup`."""
        self.server = server
        self.dsn = server.dsn_for(self.database)

    @property
    def python(self) -> str:
        """The interpreter that runs workers."""
        return sys.executable

    def base_env(self) -> dict[str, str]:
        """Environment every worker of this adapter gets."""
        return {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}

    @abc.abstractmethod
    async def setup(self) -> None:
        """Create the database and install the library's schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the harness's connections (the database stays)."""

    def teardown(self) -> None:
        """Drop the database.

        Raises:
            psycopg.Error: the server refused.
        """
        self.server.drop_database(self.database)

    def reset(self) -> None:
        """Empty the library's tables, so each workload starts from nothing.

        Raises:
            psycopg.Error: the server refused.
        """
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("TRUNCATE {} CASCADE").format(
                    sql.SQL(", ").join(sql.SQL(t) for t in self.tables)
                )
            )

    def analyze(self, *, checkpoint: bool = False) -> None:
        """Refresh planner statistics of the library's tables (as autovacuum would).

        With ``checkpoint``, a ``CHECKPOINT`` follows: every drain then starts at the
        same point of the WAL cycle (it pays full-page images for each page it first
        touches) instead of wherever the load before it left the checkpointer.

        Raises:
            psycopg.Error: the server refused.
        """
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for table in self.tables:
                conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(table)))
            if checkpoint:
                conn.execute("CHECKPOINT")

    @abc.abstractmethod
    async def enqueue_one(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """Enqueue one job in a transaction of its own, committed on return."""

    async def produce_one(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """Enqueue one job as a service that only produces jobs does (W1client, W4client):
        the library's standalone enqueue, committed on return. By default
        :meth:`enqueue_one`, which is already that for the peers."""
        await self.enqueue_one(task, payload, queue=queue, priority=priority)

    async def create_business_tables(self, metadata: MetaData) -> None:
        """Create the application's tables of ``metadata`` in this library's database
        (W1tx's ``bench_orders``), if they are not there.

        Raises:
            sqlalchemy.exc.DBAPIError: the server refused.
        """
        engine = create_engine(sync_url(self.dsn))
        try:
            metadata.create_all(engine)
        finally:
            engine.dispose()

    @abc.abstractmethod
    async def enqueue_batch(
        self, task: str, payloads: Sequence[Payload], *, queue: str = "bench", priority: int = 0
    ) -> None:
        """Enqueue ``payloads`` in one transaction, the library's bulk way."""

    @abc.abstractmethod
    def worker(self, queues: Mapping[str, int], latency_file: Path) -> WorkerSpec:
        """Describe one worker process serving ``queues`` (name -> concurrency)."""

    @abc.abstractmethod
    def open_poller(self) -> Poller:
        """Open a connection that counts the unfinished jobs of a drain."""


def load_adapter(name: str) -> type[Adapter]:
    """Import the adapter class of library ``name``.

    Raises:
        KeyError: no adapter of that name.
        ImportError: the library (or our own API) cannot be imported.
    """
    module_name, _, attr = ADAPTERS[name].partition(":")
    module = importlib.import_module(module_name)
    adapter: type[Adapter] = getattr(module, attr)
    return adapter
