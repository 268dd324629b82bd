"""The worker's database access: an asyncpg pool running pre-rendered statements.

The SQL comes from SQLAlchemy Core builders (:mod:`backfill_sa.statements`), rendered
for asyncpg ahead of time into :mod:`backfill_sa.statements.worker_sql`, so a worker
process never loads SQLAlchemy. Execution goes straight to asyncpg, whose
prepared-statement cache makes each run a single round trip with no per-call
compilation or result-processing layer. Every worker statement is atomic on its
own, so connections stay in autocommit (no BEGIN/COMMIT).

Transient errors (connection lost, serialization failure, admin shutdown, too many
connections) are retried with tenacity; anything else goes to the caller's loop,
which logs it and carries on.
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeAlias, cast

import asyncpg
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from backfill_sa.dburl import libpq_dsn
from backfill_sa.schema_name import DEFAULT_SCHEMA
from backfill_sa.statements.rendered import RenderedSql

__all__ = ["TRANSIENT_SQLSTATES", "Database", "Record", "decode_json", "is_transient"]

logger = logging.getLogger(__name__)

Record: TypeAlias = Any
"""An ``asyncpg.Record`` (asyncpg ships no type stubs): index it by column name."""

TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown (pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)


def _sqlstate(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attr in ("sqlstate", "pgcode"):
            value = getattr(current, attr, None)
            if isinstance(value, str):
                return value
        current = getattr(current, "orig", None) or current.__cause__
    return None


_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
"""Server shutdown and start-up states: the connection itself is gone or unusable."""


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection it ran on cannot be used again."""
    if isinstance(
        exc,
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.CannotConnectNowError,
            # "cannot switch to state N; another operation is in progress": a pooled
            # connection whose server went away before its error was fully read
            # (raised before anything is sent, so a retry is safe).
            asyncpg.exceptions.InternalClientError,
            ConnectionError,
            OSError,
        ),
    ):
        return True
    state = _sqlstate(exc)
    return state is not None and (state in _CONNECTION_SQLSTATES or state.startswith("08"))


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is a database error worth retrying as it is."""
    if getattr(exc, "connection_invalidated", False) is True:  # SQLAlchemy's DBAPIError
        return True
    if _lost_connection(exc):
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state in TRANSIENT_SQLSTATES or state.startswith("08")
    if _is_sqlalchemy_connection_error(exc):
        return True
    return isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError))


def _is_sqlalchemy_connection_error(exc: BaseException) -> bool:
    # The worker never loads SQLAlchemy; code that does may hand us its errors.
    loaded = sys.modules.get("sqlalchemy.exc")
    return loaded is not None and isinstance(exc, (loaded.InterfaceError, loaded.OperationalError))


class _WorkerConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset round trip.

    The default reset (UNLISTEN, RESET ALL, advisory unlock, CLOSE ALL) costs one
    round trip per statement here; worker statements leave no session state behind.
    """

    def get_reset_query(self) -> str:
        return ""


_scan_json: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder())  # typeshed types the argument as the scanner itself
)


def decode_json(text: str) -> Any:
    """Decode one JSON document as ``json.loads`` does, faster for PostgreSQL's output.

    ``jsonb`` comes out of PostgreSQL without surrounding blanks, so the C scanner
    can be called directly, without ``json.loads``'s two Python frames (about 1 us
    of 1.7 for a 120-byte payload; every claimed job decodes its payload and
    metadata). Anything else (blanks, trailing data) goes through ``json.loads``.

    Raises:
        json.JSONDecodeError: ``text`` is not one JSON document.
    """
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=json.dumps, decoder=decode_json, schema="pg_catalog"
        )


class Database:
    """An asyncpg pool bound to one schema, with retrying execution.

    Args:
        url: PostgreSQL URL in any accepted form.
        schema: schema that ``backfill`` maps to.
        pool_size: connections kept open.
        retry_for: how long transient errors are retried before giving up.
        statement_cache: keep each statement prepared on its connection (one round
            trip per run). Turn it off behind a transaction-pooling proxy (PgBouncer
            with ``pool_mode = transaction``), where the next statement may run on
            another server connection that never saw the PREPARE: asyncpg then sends
            each statement unnamed, parsed again with its parameters.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 5,
        retry_for: timedelta = timedelta(seconds=60),
        statement_cache: bool = True,
    ) -> None:
        """Prepare the pool (it opens on first use)."""
        self.schema = schema
        self._dsn = libpq_dsn(url)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._retry_for = retry_for.total_seconds()
        self._sql: dict[tuple[object, ...], str] = {}
        self._statement_cache_size = 100 if statement_cache else 0

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._pool_size,
                        init=_init_connection,
                        connection_class=_WorkerConnection,
                        max_inactive_connection_lifetime=300,
                        statement_cache_size=self._statement_cache_size,
                    )
        return self._pool

    async def execute(
        self,
        statement: RenderedSql,
        params: Mapping[str, Any] | None = None,
        *,
        retry: bool = True,
    ) -> Sequence[Record]:
        """Run one statement and return its rows (empty when it returns none).

        The statement object must live as long as this Database (the statements of
        :mod:`backfill_sa.statements.worker_sql` are module constants): its text for
        this schema (and inline values) is cached by identity. The first try runs
        without tenacity's bookkeeping; a transient failure falls back to retries with
        exponential backoff and jitter.
        ``retry=False`` raises the first failure instead: for statements that are not
        safe to repeat blindly (a claim whose reply was lost has taken jobs that only
        the caller can give back).

        Raises:
            asyncpg.PostgresError: a non-transient error, or a transient one that
                outlasted the retry window.
            KeyError: a parameter the statement needs is missing.
            TypeError: an inline parameter (``limit``) is not an ``int``.
        """
        values = params or {}
        key = (id(statement), *(values.get(n) for n in statement.inline))
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = statement.for_schema(self.schema, values)
        args = statement.arguments(values)
        try:
            return await self._fetch(sql, args)
        except Exception as exc:
            await self._after_failure(exc)
            if not retry or not is_transient(exc):
                raise
            logger.warning("transient database error, retrying: %s", exc)
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.05, max=5.0) + wait_random(0, 0.05),
            stop=stop_after_delay(self._retry_for),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await self._fetch(sql, args)
                except Exception as exc:
                    await self._after_failure(exc)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _after_failure(self, exc: BaseException) -> None:
        """After a lost connection, replace every pooled one before its next use.

        When the server restarts, all of them are dead; one whose error is still
        being read would otherwise be handed out again and fail with asyncpg's
        "another operation is in progress".
        """
        if self._pool is not None and _lost_connection(exc):
            await self._pool.expire_connections()

    async def _fetch(self, sql: str, args: list[Any]) -> Sequence[Record]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            try:
                rows: list[Record] = await conn.fetch(sql, *args)
            except asyncio.CancelledError:
                # The reply of a cancelled statement may never come (a connection
                # gone dark): releasing would wait for it. Close the connection.
                conn.terminate()
                raise
            return rows

    async def dispose(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except Exception:
                pool.terminate()
