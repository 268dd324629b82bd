"""backfill_sa adapter: enqueue through a SQLAlchemy session; worker via ``python -m backfill_sa``.

The harness enqueues as an application would: a session per transaction from an
``async_sessionmaker`` (asyncpg) or ``sessionmaker`` (psycopg), the enqueue call, then
the caller's commit. Tables live in schema ``bench_bf`` of database ``bench_ours``,
reached through ``schema_translate_map``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import psycopg
from sqlalchemy import (
    Engine,
    Table,
    cast,
    create_engine,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from backfill_sa.client import BackfillClient, SyncBackfillClient
from backfill_sa.dburl import async_url, sync_url
from backfill_sa.enqueue import (
    JobSpec,
    enqueue,
    enqueue_async,
    enqueue_batch_async,
    enqueue_many_async,
)
from backfill_sa.migrations import upgrade
from backfill_sa.models import Job
from backfill_sa.notify import channel_for
from backfill_sa.schema_name import DEFAULT_SCHEMA
from backfill_sa.statements.jobs_insert import JOBS_INSERT_ONE
from benchmarks.adapters import NO_PARALLEL, Adapter, Payload, Poller, WorkerSpec
from benchmarks.business import ORDER, orders
from benchmarks.probe import LATENCY_FILE_ENV

__all__ = ["SCHEMA", "OursAdapter", "w1_statement_params"]

SCHEMA = "bench_bf"
TRANSLATE = {"schema_translate_map": {"backfill": SCHEMA}}
_CHANNEL = channel_for(SCHEMA)


def w1_statement_params(payload_json: str, channel: str) -> dict[str, object]:
    """``JOBS_INSERT_ONE``'s parameters for W1's job, as ``enqueue`` binds them: task
    ``noop`` in queue ``bench`` at priority 0 with the default 8 attempts. W1raw and
    pgbench's run of our statement both send exactly this."""
    return {
        "new_task": "noop",
        "new_queue": "bench",
        "new_payload": payload_json,
        "new_priority": 0,
        "new_run_at": None,
        "new_max_attempts": 8,
        "new_job_key": None,
        "new_retry_policy": None,
        "new_metadata": "{}",
        "new_serial_key": None,
        "channel": channel,
    }


_JOBS = Job.__table__
_JOBS_TABLE: Table = Job.__table__


def sum_of(terms: Iterable[Any]) -> Any:
    """``a + b + ...`` of SQL expressions."""
    total: Any = None
    for term in terms:
        total = term if total is None else total + term
    return total


def _in_state(name: str) -> ColumnElement[bool]:
    # A constant, not a bound parameter, so the planner can match the partial indexes.
    return _JOBS.c.state == literal_column(f"'{name}'")


class _OursPoller:
    """Counts a drain's unfinished jobs through the claim, running and scheduled indexes.

    Every row in ``jobs`` is unfinished, but W5 keeps a million other rows there, so
    the count only looks at the drain's own jobs (``task``, ``queue``, ``priority``)
    in each state, each branch answerable from that state's partial index; the
    existence probes are ordered like those indexes, so they stay index scans however
    the planner estimates the rows.
    """

    def __init__(self, engine: Engine, task: str, queue: str, priority: int) -> None:
        self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._conn.exec_driver_sql(NO_PARALLEL)
        self._pid = int(self._conn.execute(select(func.pg_backend_pid())).scalar_one())
        c = _JOBS.c
        branches = (
            (
                (_in_state("available"), c.queue == queue, c.priority == priority),
                (c.queue, c.priority, c.run_at, c.id),
            ),
            ((_in_state("running"), c.task == task), (c.locked_by, c.locked_at)),
            (
                (
                    _in_state("scheduled"),
                    c.run_at < func.now() + timedelta(hours=1),
                    c.task == task,
                ),
                (c.run_at,),
            ),
        )
        counts = [select(func.count()).select_from(_JOBS).where(*w) for w, _ in branches]
        self._query = select(sum_of(q.scalar_subquery() for q in counts))
        # Scalar subqueries, not EXISTS: PostgreSQL drops ORDER BY/LIMIT inside EXISTS
        # and may then pick a sequential scan through a million backlog rows.
        self._exists = select(
            or_(
                *(
                    select(literal(1))
                    .select_from(_JOBS)
                    .where(*w)
                    .order_by(*o)
                    .limit(1)
                    .scalar_subquery()
                    .is_not(None)
                    for w, o in branches
                )
            )
        )

    @property
    def backend_pid(self) -> int:
        """The server process serving this connection."""
        return self._pid

    def unfinished(self) -> int:
        """Return the drain's unfinished jobs."""
        return int(self._conn.execute(self._query).scalar_one())

    def any_unfinished(self) -> bool:
        """Probe each state's index for one of the drain's jobs."""
        return bool(self._conn.execute(self._exists).scalar_one())

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


_FLOOR_TABLE = text(
    "CREATE TABLE IF NOT EXISTS public.bench_floor"
    " (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)"
)
_FLOOR_INSERT = text("INSERT INTO public.bench_floor (payload) VALUES (CAST(:payload AS jsonb))")


def _w1_statement(driver: str) -> tuple[SQLCompiler, dict[str, Any]]:
    """``JOBS_INSERT_ONE`` compiled for ``postgresql+<driver>`` and schema ``bench_bf``,
    with W1's values for its parameters by name (``new_payload`` to be filled in)."""
    compiled = JOBS_INSERT_ONE.compile(
        dialect=make_url(f"postgresql+{driver}://").get_dialect()(),
        schema_translate_map={DEFAULT_SCHEMA: SCHEMA},
        render_schema_translate=True,
    )
    return compiled, dict(compiled.construct_params(w1_statement_params("", _CHANNEL)))


def _numbered_statement() -> tuple[str, tuple[str, ...], tuple[object, ...]]:
    """``JOBS_INSERT_ONE`` for schema ``bench_bf`` with ``$n`` placeholders (as asyncpg's
    dialect renders it, each with its cast), its parameter names in order, and W1's
    values for them (``new_payload`` to be filled in)."""
    compiled, params = _w1_statement("asyncpg")
    names = tuple(compiled.positiontup or ())
    return compiled.string, names, tuple(params[name] for name in names)


def _ok(result: psycopg.pq.abc.PGresult) -> None:
    """Raise unless a libpq result says the command succeeded."""
    if result.status not in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
        message = (result.error_message or b"").decode(errors="replace")
        raise RuntimeError(f"W1raw libpq: {message}")


class OursAdapter(Adapter):
    """backfill_sa in database ``bench_ours``, schema ``bench_bf``."""

    name: ClassVar[str] = "ours"
    distribution: ClassVar[str] = "backfill-sa"
    database: ClassVar[str] = "bench_ours"
    tables: ClassVar[tuple[str, ...]] = (
        *(f"{SCHEMA}.{t}" for t in ("jobs", "dead_letter_jobs", "workers", "leader", "queues")),
        "public.bench_floor",
    )

    _sync_engine: Engine | None = None
    _async_engine: AsyncEngine | None = None
    _autocommit_engines: tuple[AsyncEngine, Engine] | None = None
    _raw: tuple[asyncpg.Connection, str, tuple[object, ...], int] | None = None
    _raw_sync: tuple[psycopg.Connection[Any], str, dict[str, Any]] | None = None
    _libpq: tuple[psycopg.Connection[Any], list[bytes | None], int] | None = None
    _held_session: Session | None = None
    _client: BackfillClient | None = None
    _sync_client: SyncBackfillClient | None = None
    tasks_ref: str = "benchmarks.tasks:registry"
    """The registry the worker loads (``--tasks``); W3tx swaps it for its own."""

    async def setup(self) -> None:
        """Create ``bench_ours`` and migrate schema ``bench_bf`` to head.

        Raises:
            psycopg.Error | backfill_sa.errors.MigrationError: the server refused.
        """
        self.server.create_database(self.database)
        plain = create_engine(sync_url(self.dsn))
        try:
            upgrade(plain, schema=SCHEMA)
        finally:
            plain.dispose()
        self._sync_engine = create_engine(sync_url(self.dsn), execution_options=TRANSLATE)
        self._async_engine = create_async_engine(async_url(self.dsn), execution_options=TRANSLATE)
        self._autocommit_engines = (
            create_async_engine(
                async_url(self.dsn), execution_options=TRANSLATE, isolation_level="AUTOCOMMIT"
            ),
            create_engine(
                sync_url(self.dsn), execution_options=TRANSLATE, isolation_level="AUTOCOMMIT"
            ),
        )
        with self._sync_engine.begin() as connection:
            connection.execute(_FLOOR_TABLE)
        # Producers that own their engines, as a service without sessions would.
        self._client = BackfillClient(self.dsn, schema=SCHEMA)
        self._sync_client = SyncBackfillClient(self.dsn, schema=SCHEMA)

    async def close(self) -> None:
        """Dispose of the engines (and W1raw's connections, the clients)."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None
        if self._raw is not None:
            await self._raw[0].close()
            self._raw = None
        for held in (self._raw_sync, self._libpq):
            if held is not None:
                held[0].close()
        self._raw_sync = self._libpq = None
        if self._held_session is not None:
            self._held_session.close()
            self._held_session = None
        if self._autocommit_engines is not None:
            await self._autocommit_engines[0].dispose()
            self._autocommit_engines[1].dispose()
            self._autocommit_engines = None
        if self._async_engine is not None:
            await self._async_engine.dispose()
            self._async_engine = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None

    @property
    def sync_engine(self) -> Engine:
        """psycopg engine with the schema translated (after :meth:`setup`)."""
        if self._sync_engine is None:
            raise RuntimeError("ours adapter: setup() has not run")
        return self._sync_engine

    @property
    def async_engine(self) -> AsyncEngine:
        """asyncpg engine with the schema translated (after :meth:`setup`)."""
        if self._async_engine is None:
            raise RuntimeError("ours adapter: setup() has not run")
        return self._async_engine

    def async_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions as an async application makes them."""
        return async_sessionmaker(self.async_engine, expire_on_commit=False)

    def sync_sessions(self) -> sessionmaker[Session]:
        """Sessions as a sync application makes them."""
        return sessionmaker(self.sync_engine, expire_on_commit=False)

    async def enqueue_one(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """A session, ``enqueue_async``, the caller's commit."""
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            await enqueue_async(session, task, payload, queue=queue, priority=priority)
            await session.commit()

    async def produce_one(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """W1client, W4client: ``BackfillClient.enqueue`` (its own engine, a kept
        connection, one autocommitted statement)."""
        if self._client is None:
            raise RuntimeError("ours adapter: setup() has not run")
        await self._client.enqueue(task, payload, queue=queue, priority=priority)

    def produce_one_sync(self, payload: Payload) -> None:
        """W1client through ``SyncBackfillClient.enqueue`` (psycopg)."""
        if self._sync_client is None:
            raise RuntimeError("ours adapter: setup() has not run")
        self._sync_client.enqueue("noop", payload, queue="bench", priority=0)

    async def enqueue_in_session(self, payload: Payload) -> None:
        """W1tx: a business row and ``enqueue_async`` in one AsyncSession transaction."""
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            await session.execute(insert(orders).values(ORDER))
            await enqueue_async(session, "noop", payload, queue="bench", priority=0)
            await session.commit()

    def enqueue_in_session_sync(self, payload: Payload) -> None:
        """W1tx through a sync Session (psycopg): the row, ``enqueue``, the commit."""
        with Session(self.sync_engine, expire_on_commit=False) as session:
            session.execute(insert(orders).values(ORDER))
            enqueue(session, "noop", payload, queue="bench", priority=0)
            session.commit()

    async def order_in_session(self, payload: Payload) -> None:
        """W1tx's floor: the same AsyncSession committing the business row alone."""
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            await session.execute(insert(orders).values(ORDER))
            await session.commit()

    def order_in_session_sync(self, payload: Payload) -> None:
        """W1tx's floor through a sync Session."""
        with Session(self.sync_engine, expire_on_commit=False) as session:
            session.execute(insert(orders).values(ORDER))
            session.commit()

    async def enqueue_one_autocommit(self, payload: Payload) -> None:
        """W1auto: ``enqueue_async`` on an AsyncSession whose engine autocommits.

        The enqueue statement is its own transaction (no BEGIN, no COMMIT round trip):
        how an application enqueues a job that no other row has to commit with.
        """
        engine = self._autocommit()[0]
        async with AsyncSession(engine, expire_on_commit=False) as session:
            await enqueue_async(session, "noop", payload, queue="bench", priority=0)
            await session.commit()

    def enqueue_one_autocommit_sync(self, payload: Payload) -> None:
        """W1auto through a sync Session (psycopg) whose engine autocommits."""
        with Session(self._autocommit()[1], expire_on_commit=False) as session:
            enqueue(session, "noop", payload, queue="bench", priority=0)
            session.commit()

    def enqueue_one_held_session(self, payload: Payload) -> None:
        """W1auto held: ``enqueue`` on one sync Session over the autocommit engine,
        opened once and kept, as a producer script would: no session, pool checkout or
        commit per job, and each job still its own transaction."""
        if self._held_session is None:
            self._held_session = Session(self._autocommit()[1], expire_on_commit=False)
        enqueue(self._held_session, "noop", payload, queue="bench", priority=0)

    async def enqueue_one_raw(self, payload: Payload) -> None:
        """W1raw: our enqueue statement on a bare asyncpg connection, no SQLAlchemy and
        no library code per call (no validation): the ceiling for any enqueue of this
        statement from Python with this driver."""
        if self._raw is None:
            sql, names, arguments = _numbered_statement()
            connection = await asyncpg.connect(self.dsn)
            self._raw = (connection, sql, arguments, names.index("new_payload"))
        connection, statement, arguments, payload_at = self._raw
        values = list(arguments)
        values[payload_at] = json.dumps(payload)
        await connection.fetchrow(statement, *values)

    def enqueue_one_raw_sync(self, payload: Payload) -> None:
        """W1raw through psycopg: our enqueue statement on a bare autocommit psycopg
        connection, prepared after psycopg's default five executions as in the sync
        Session; no SQLAlchemy and no library code per call: the ceiling for an enqueue
        through a sync Session with this driver."""
        if self._raw_sync is None:
            compiled, params = _w1_statement("psycopg")
            connection = psycopg.connect(self.dsn, autocommit=True)
            self._raw_sync = (connection, compiled.string, params)
        connection, statement, params = self._raw_sync
        with connection.cursor() as cursor:
            cursor.execute(statement, {**params, "new_payload": json.dumps(payload)})
            cursor.fetchone()

    def enqueue_one_libpq(self, payload: Payload) -> None:
        """W1raw through libpq itself: our enqueue statement, prepared once by name, run
        with ``PQexecPrepared`` (psycopg's ``pgconn``) on an autocommit connection. No
        cursor, no adaptation, no result rows built: the least a Python process can
        spend per call, so what is left is the server's cost of our statement.

        Raises:
            RuntimeError: the server refused the statement.
        """
        if self._libpq is None:
            sql, names, arguments = _numbered_statement()
            text_values = [None if a is None else str(a).encode() for a in arguments]
            connection = psycopg.connect(self.dsn, autocommit=True)
            _ok(connection.pgconn.prepare(b"w1_libpq", sql.encode()))
            self._libpq = (connection, text_values, names.index("new_payload"))
        connection, values, payload_at = self._libpq
        values[payload_at] = json.dumps(payload).encode()
        # libpq takes NULLs (None) here; psycopg's stub for exec_prepared omits them.
        nullable: Any = values
        _ok(connection.pgconn.exec_prepared(b"w1_libpq", nullable))

    def _autocommit(self) -> tuple[AsyncEngine, Engine]:
        if self._autocommit_engines is None:
            raise RuntimeError("ours adapter: setup() has not run")
        return self._autocommit_engines

    async def insert_one(self, payload: Payload) -> None:
        """W1's floor: a session committing a one-row INSERT into a plain table (no queue)."""
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            await session.execute(_FLOOR_INSERT, {"payload": json.dumps(payload)})
            await session.commit()

    def insert_one_sync(self, payload: Payload) -> None:
        """W1's floor through a sync session (psycopg)."""
        with Session(self.sync_engine, expire_on_commit=False) as session:
            session.execute(_FLOOR_INSERT, {"payload": json.dumps(payload)})
            session.commit()

    def enqueue_one_sync(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """A sync session, ``enqueue``, the caller's commit."""
        with Session(self.sync_engine, expire_on_commit=False) as session:
            enqueue(session, task, payload, queue=queue, priority=priority)
            session.commit()

    async def enqueue_batch(
        self, task: str, payloads: Sequence[Payload], *, queue: str = "bench", priority: int = 0
    ) -> None:
        """One ``enqueue_batch_async`` call (one task, shared options), the caller's commit."""
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            await enqueue_batch_async(session, task, payloads, queue=queue, priority=priority)
            await session.commit()

    async def enqueue_specs(self, task: str, payloads: Sequence[Payload]) -> None:
        """W2specs: a ``JobSpec`` per job, one ``enqueue_many_async`` call, the commit."""
        specs = [JobSpec(task, p, queue="bench", priority=0) for p in payloads]
        async with AsyncSession(self.async_engine, expire_on_commit=False) as session:
            await enqueue_many_async(session, specs)
            await session.commit()

    def worker(self, queues: Mapping[str, int], latency_file: Path) -> WorkerSpec:
        """``python -m backfill_sa worker`` with the benchmark registry."""
        env = self.base_env()
        env.update({"DATABASE_URL": self.dsn, LATENCY_FILE_ENV: str(latency_file)})
        argv = [
            self.python,
            "-m",
            "backfill_sa",
            "worker",
            "--tasks",
            self.tasks_ref,
            "--schema",
            SCHEMA,
            "--log-level",
            "WARNING",
        ]
        for name, limit in queues.items():
            argv += ["--queue", f"{name}={limit}"]
        return WorkerSpec(argv=argv, env=env)

    def open_poller(self) -> Poller:
        """Count the drain's (task ``noop``, queue ``bench``, priority 0) unfinished jobs."""
        return self.open_filtered_poller("noop", "bench", 0)

    def open_filtered_poller(self, task: str, queue: str, priority: int) -> Poller:
        """Count unfinished jobs of ``task`` at ``priority`` in ``queue``."""
        return _OursPoller(self.sync_engine, task, queue, priority)

    def load_backlog(self, count: int, payload: Payload) -> None:
        """Insert ``count`` other jobs server-side: half available at priority 10 in queue
        ``bench``, half scheduled a day ahead; then VACUUM ANALYZE the table.

        Raises:
            sqlalchemy.exc.DBAPIError: the server refused.
        """
        body = json.dumps(payload)
        half = count // 2
        halves: list[tuple[str, int, Any, int]] = [
            ("available", 10, func.now(), half),
            ("scheduled", 0, func.now() + timedelta(days=1), count - half),
        ]
        columns = ["task", "queue", "payload", "priority", "run_at", "state"]
        with self.sync_engine.begin() as conn:
            for state, priority, run_at, rows in halves:
                series = func.generate_series(1, rows).table_valued("n")
                source = select(
                    literal("backlog"),
                    literal("bench"),
                    cast(literal(body), JSONB),
                    literal(priority),
                    run_at,
                    literal(state),
                ).select_from(series)
                conn.execute(insert(_JOBS_TABLE).from_select(columns, source))
        with self.sync_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM (ANALYZE) {SCHEMA}.jobs"))


class OursNoRetentionAdapter(OursAdapter):
    """backfill_sa with retention 0: a succeeded job's row is deleted as it completes.

    The default keeps finished jobs for 24 hours (an UPDATE per completion, pruned
    later); this row measures the drain without that history, as before it existed.
    """

    database: ClassVar[str] = "bench_ours_retention0"

    def worker(self, queues: Mapping[str, int], latency_file: Path) -> WorkerSpec:
        """The default worker, with ``BACKFILL_RETENTION_SECS=0``."""
        spec = super().worker(queues, latency_file)
        return dataclasses.replace(spec, env={**spec.env, "BACKFILL_RETENTION_SECS": "0"})
