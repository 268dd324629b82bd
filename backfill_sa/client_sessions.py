"""The client's executors: sessions on kept connections that run one Session function.

:class:`SyncSessions` calls the function with a sync Session; :class:`AsyncSessions`
runs the same function through ``AsyncSession.run_sync``. Either keeps its sessions
(each bound to a connection of its own) between calls in a stack: a caller takes an
idle one or opens another, and puts it back when its call returned. A call that
raised closes its session and connection instead (its state is unknown; the pool
decides whether the connection can be used again).

``autocommit=True`` sessions run each statement as its own transaction (the
connection's isolation level is ``AUTOCOMMIT`` until it goes back to the pool); the
others run the function in ``session.begin()``, committed when it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar, overload

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.schema_name import DEFAULT_SCHEMA, validate_schema_name

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
    """

    def __init__(self, engine: Engine, *, autocommit: bool) -> None:
        """Keep nothing yet: the first call opens the first session."""
        self._engine = engine
        self._autocommit = autocommit
        self._idle: list[Session] = []

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
        session = self._idle.pop() if self._idle else self._open()
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


class AsyncSessions:
    """:class:`SyncSessions` for an AsyncEngine: the function runs through ``run_sync``.

    Args:
        engine: where connections come from.
        autocommit: each statement its own transaction (else one per call).
    """

    def __init__(self, engine: AsyncEngine, *, autocommit: bool) -> None:
        """Keep nothing yet: the first call opens the first session."""
        self._engine = engine
        self._autocommit = autocommit
        self._idle: list[AsyncSession] = []

    async def _open(self) -> AsyncSession:
        connection = await self._engine.connect()
        if self._autocommit:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        return AsyncSession(bind=connection, expire_on_commit=False)

    async def run(
        self, fn: Callable[Concatenate[Session, _P], _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """Return ``fn(session, *args, **kwargs)`` run on a kept session's sync session.

        Raises:
            Exception: whatever ``fn`` or the database raised.
        """
        session = self._idle.pop() if self._idle else await self._open()
        try:
            if self._autocommit:
                result = await session.run_sync(fn, *args, **kwargs)
            else:
                async with session.begin():
                    result = await session.run_sync(fn, *args, **kwargs)
                session.expunge_all()
        except BaseException:
            await _discard_async(session)
            raise
        self._idle.append(session)
        return result

    async def close(self) -> None:
        """Close the idle sessions and give their connections back to the pool."""
        while self._idle:
            await _discard_async(self._idle.pop())


async def _discard_async(session: AsyncSession) -> None:
    connection = session.bind
    await session.close()
    await connection.close()  # type: ignore[union-attr]  # always the AsyncConnection _open bound
