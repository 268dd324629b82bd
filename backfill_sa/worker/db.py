"""The worker's database access: an autocommit asyncpg engine and transient-error retries.

Every worker statement is a single atomic statement, so the engine runs in
autocommit mode: one round trip per statement, no BEGIN/COMMIT. Transient errors
(connection lost, serialization failure, admin shutdown, too many connections) are
retried with tenacity; anything else is raised to the caller's loop, which logs it
and carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from backfill_sa.dburl import async_url
from backfill_sa.models import DEFAULT_SCHEMA

__all__ = ["TRANSIENT_SQLSTATES", "Database", "is_transient"]

logger = logging.getLogger(__name__)

TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown (pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
        "08000",
        "08001",
        "08003",
        "08004",
        "08006",
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


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is a database error worth retrying as it is."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state in TRANSIENT_SQLSTATES or state.startswith("08")
    if isinstance(exc, (InterfaceError, OperationalError)):
        return True
    return isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError))


class Database:
    """An autocommit async engine bound to one schema, with retrying execution.

    Args:
        url: PostgreSQL URL in any accepted form (asyncpg is used).
        schema: schema that ``backfill`` maps to.
        pool_size: connections kept open.
        retry_for: how long transient errors are retried before giving up.
        engine: an existing AsyncEngine to use instead (its pool is shared; the
            autocommit and schema options are applied per connection).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 5,
        retry_for: timedelta = timedelta(seconds=60),
        engine: AsyncEngine | None = None,
    ) -> None:
        """Create the engine (no connection is opened yet)."""
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}
        if schema != DEFAULT_SCHEMA:
            options["schema_translate_map"] = {DEFAULT_SCHEMA: schema}
        self.schema = schema
        self._owns_engine = engine is None
        base = engine or create_async_engine(
            async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_recycle=3600
        )
        self.engine: AsyncEngine = base.execution_options(**options)
        self._base = base
        self._retry_for = retry_for.total_seconds()

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run one statement and return its rows (empty when it returns none).

        The first try runs without tenacity's bookkeeping; a transient failure falls
        back to retries with exponential backoff and jitter.

        Raises:
            sqlalchemy.exc.DBAPIError: a non-transient error, or a transient one that
                outlasted the retry window.
        """
        try:
            return await self._execute_once(statement, params)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("transient database error, retrying: %s", exc)
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(initial=0.05, max=5.0),
            stop=stop_after_delay(self._retry_for),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._execute_once(statement, params)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _execute_once(
        self, statement: Executable, params: Mapping[str, Any] | None
    ) -> Sequence[Row[Any]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(statement, dict(params) if params else None)
            return result.all() if result.returns_rows else ()

    async def dispose(self) -> None:
        """Close the pool if this object created it."""
        if self._owns_engine:
            await self._base.dispose()
