"""The client's executors: sessions on kept connections that run one Session function.

:class:`SyncSessions` calls the function with a sync Session; :class:`AsyncSessions`
runs the same function through ``AsyncSession.run_sync``. Either keeps its sessions
(each bound to a connection of its own) between calls in a stack: a caller takes an
idle one or opens another, and puts it back when its call returned. At most
``limit`` calls run at once (a semaphore), so at most ``limit`` connections are kept
and more callers wait for one instead of exhausting the engine's pool. A call that
raised closes its session and connection instead (its state is unknown; the pool
decides whether the connection can be used again).

``autocommit=True`` sessions run each statement as its own transaction (the
connection's isolation level is ``AUTOCOMMIT`` until it goes back to the pool); the
others run the function in ``session.begin()``, committed when it returns.

:meth:`AsyncSessions.write_job` is ``enqueue``'s write with one shortcut: a job
without a key on an asyncpg connection that nothing observes goes to the asyncpg
connection under the session directly, with the statement and values ``enqueue``
itself would send there through SQLAlchemy's cursor
(:func:`~backfill_sa.job_writer.direct_insert_one`,
:func:`~backfill_sa.job_writer.insert_values`): the same SQL, one round trip, without
the greenlet bridge and SQLAlchemy's asyncpg adapter, which cost about as much client
CPU as the rest of the call. Driver errors come out as ``sqlalchemy.exc.DBAPIError``,
as they do from ``enqueue``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar, overload

import asyncpg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.job_writer import (
    EnqueueOutcome,
    EnqueueResult,
    direct_insert_one,
    insert_values,
    write_job,
)
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.schema_name import DEFAULT_SCHEMA, validate_schema_name
from backfill_sa.telemetry import Telemetry
from backfill_sa.validation import JobSpec

__all__ = ["AsyncSessions", "SyncSessions", "with_schema"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@overload
def with_schema(engine: Engine, schema: str | None) -> Engine: ...
@overload
def with_schema(engine: AsyncEngine, schema: str | None) -> AsyncEngine: ...
def with_schema(engine: Engine | AsyncEngine, schema: str | None) -> Engine | AsyncEngine:
    """Return ``engine`` with ``backfill`` mapped to ``schema`` (sharing its pool).

    ``None`` keeps the engine as it is. The engine's other schema translations stay.

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name.
    """
    if schema is None:
        return engine
    validate_schema_name(schema)
    current = engine.get_execution_options().get("schema_translate_map") or {}
    return engine.execution_options(schema_translate_map={**current, DEFAULT_SCHEMA: schema})


class SyncSessions:
    """Sync sessions kept on their own connections of ``engine``.

    Args:
        engine: where connections come from.
        autocommit: each statement its own transaction (else one per call).
        limit: calls running at once, and connections kept, at most.
    """

    def __init__(self, engine: Engine, *, autocommit: bool, limit: int) -> None:
        """Keep nothing yet: the first call opens the first session."""
        self._engine = engine
        self._autocommit = autocommit
        self._idle: list[Session] = []
        self._slots = threading.BoundedSemaphore(limit)

    def _open(self) -> Session:
        connection = self._engine.connect()
        if self._autocommit:
            connection.execution_options(isolation_level="AUTOCOMMIT")
        return Session(bind=connection, expire_on_commit=False)

    def run(
        self, fn: Callable[Concatenate[Session, _P], _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """Return ``fn(session, *args, **kwargs)`` on a kept session.

        Raises:
            Exception: whatever ``fn`` or the database raised.
        """
        with self._slots:
            try:
                session = self._idle.pop()  # atomic: threads may share this stack
            except IndexError:
                session = self._open()
            try:
                if self._autocommit:
                    result = fn(session, *args, **kwargs)
                else:
                    with session.begin():
                        result = fn(session, *args, **kwargs)
                    session.expunge_all()
            except BaseException:
                _discard(session)
                raise
            self._idle.append(session)
            return result

    def close(self) -> None:
        """Close the idle sessions and give their connections back to the pool."""
        while self._idle:
            _discard(self._idle.pop())


def _discard(session: Session) -> None:
    connection = session.bind
    session.close()
    connection.close()  # type: ignore[union-attr]  # always the Connection _open bound


class _Direct(NamedTuple):
    """What the shortcut needs: the asyncpg connection, the compiled insert, the channel."""

    driver: Any  # asyncpg.Connection (asyncpg ships no type stubs)
    sql: str
    arguments: Callable[[tuple[object, ...]], Any]
    channel: str


class _KeptAsync(NamedTuple):
    session: AsyncSession
    connection: AsyncConnection
    direct: _Direct | None


class AsyncSessions:
    """:class:`SyncSessions` for an AsyncEngine: the function runs through ``run_sync``.

    Args:
        engine: where connections come from.
        autocommit: each statement its own transaction (else one per call).
        limit: calls running at once, and connections kept, at most.
    """

    def __init__(self, engine: AsyncEngine, *, autocommit: bool, limit: int) -> None:
        """Keep nothing yet: the first call opens the first session."""
        self._engine = engine
        self._autocommit = autocommit
        self._idle: list[_KeptAsync] = []
        self._slots = asyncio.Semaphore(limit)

    async def _open(self) -> _KeptAsync:
        connection = await self._engine.connect()
        direct = None
        if self._autocommit:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            direct = await _direct(connection)
        return _KeptAsync(AsyncSession(bind=connection, expire_on_commit=False), connection, direct)

    async def run(
        self, fn: Callable[Concatenate[Session, _P], _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """Return ``fn(session, *args, **kwargs)`` run on a kept session's sync session.

        Raises:
            Exception: whatever ``fn`` or the database raised.
        """
        async with self._slots:
            kept = self._idle.pop() if self._idle else await self._open()
            session = kept.session
            try:
                if self._autocommit:
                    result = await session.run_sync(fn, *args, **kwargs)
                else:
                    async with session.begin():
                        result = await session.run_sync(fn, *args, **kwargs)
                    session.expunge_all()
            except BaseException:
                await _discard_async(kept)
                raise
            self._idle.append(kept)
            return result

    async def write_job(self, spec: JobSpec, telemetry: Telemetry) -> EnqueueResult:
        """``enqueue``'s write of ``spec`` on a kept session (see the module docstring).

        The shortcut is taken only when ``telemetry`` neither traces nor meters: a
        span or a count needs ``enqueue``'s own write.

        Raises:
            sqlalchemy.exc.DBAPIError: the database refused the statement.
        """
        async with self._slots:
            kept = self._idle.pop() if self._idle else await self._open()
            direct = kept.direct
            try:
                if (
                    direct is None
                    or spec.row.job_key is not None
                    or telemetry.tracing
                    or telemetry.metering
                ):
                    result = await kept.session.run_sync(write_job, spec, telemetry)
                else:
                    result = await _insert_direct(kept, direct, spec)
            except BaseException:
                await _discard_async(kept)
                raise
            self._idle.append(kept)
            return result

    async def close(self) -> None:
        """Close the idle sessions and give their connections back to the pool."""
        while self._idle:
            await _discard_async(self._idle.pop())


async def _insert_direct(kept: _KeptAsync, direct: _Direct, spec: JobSpec) -> EnqueueResult:
    """Run the insert on the asyncpg connection; driver errors become DBAPIError.

    Raises:
        sqlalchemy.exc.DBAPIError: the driver raised; ``connection_invalidated`` when
            the connection is gone (it is invalidated in the pool).
    """
    arguments = direct.arguments(insert_values(spec, direct.channel))
    try:
        job_id = await direct.driver.fetchval(direct.sql, *arguments)
    except asyncio.CancelledError:
        # The reply may never come (a connection gone dark): giving the connection
        # back would wait for it. Close it at once; the pool forgets it.
        direct.driver.terminate()
        await kept.connection.invalidate()
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        lost = direct.driver.is_closed() or isinstance(
            exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)
        )
        if lost:
            await kept.connection.invalidate(exc)
        raise DBAPIError.instance(
            direct.sql, arguments, exc, Exception, connection_invalidated=lost
        ) from exc
    return EnqueueResult(int(job_id), EnqueueOutcome.INSERTED)


async def _direct(connection: AsyncConnection) -> _Direct | None:
    """The shortcut for an autocommit connection, or ``None`` when it does not apply."""
    if connection.dialect.driver != "asyncpg":
        return None
    statement = await connection.run_sync(direct_insert_one)
    if statement is None or statement.names is not None:
        return None
    raw = await connection.get_raw_connection()
    channel = channel_for(schema_of(connection))
    return _Direct(raw.driver_connection, statement.sql, statement.arguments, channel)


async def _discard_async(kept: _KeptAsync) -> None:
    await kept.session.close()
    await kept.connection.close()
