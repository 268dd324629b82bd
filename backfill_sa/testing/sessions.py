"""Sessions joined to a test's outer transaction, and the manual/inline switch.

SQLAlchemy's "join a session into an external transaction" recipe: the test holds
a connection with a transaction begun; sessions are bound to that connection with
``join_transaction_mode="create_savepoint"``, so their ``commit()`` releases a
savepoint and their ``rollback()`` rolls back to it, and the outer transaction is
rolled back when the test ends. Enqueue needs nothing special: it writes through
the session's connection as it always does.

The mode lives in ``session.info`` (an :class:`~backfill_sa.testing.InlineMode`
under :data:`~backfill_sa.enqueue_hooks.ENQUEUE_HOOK_KEY`), so it belongs to one
session or one sessionmaker's sessions and never to the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from backfill_sa.enqueue_hooks import ENQUEUE_HOOK_KEY
from backfill_sa.errors import ConfigurationError
from backfill_sa.testing.drain import InlineMode

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from backfill_sa.tasks import TaskRegistry

__all__ = [
    "MODES",
    "Mode",
    "inline",
    "joined_async_sessionmaker",
    "joined_sessionmaker",
    "mode_info",
    "outer_transaction",
    "outer_transaction_async",
]

Mode = Literal["manual", "inline"]
MODES: tuple[Mode, ...] = ("manual", "inline")
"""``manual``: jobs wait for ``drain``; ``inline``: each enqueue runs its jobs at once."""


def mode_info(mode: str, registry: TaskRegistry | None = None) -> dict[str, Any]:
    """Return the ``Session.info`` entries that put sessions in ``mode``.

    Args:
        mode: ``"manual"`` or ``"inline"``.
        registry: the application's tasks (required for ``inline``).

    Raises:
        ConfigurationError: unknown mode, or ``inline`` without a registry.
    """
    if mode == "manual":
        return {}
    if mode == "inline":
        if registry is None:
            raise ConfigurationError("registry", "inline mode needs the application's registry")
        return {ENQUEUE_HOOK_KEY: InlineMode(registry)}
    raise ConfigurationError("mode", f"{mode!r} must be one of {', '.join(MODES)}")


@contextmanager
def inline(
    session: Session | AsyncSession, registry: TaskRegistry, *, raise_errors: bool = True
) -> Iterator[None]:
    """Put one session in inline mode for a ``with`` block (its former mode comes back).

    Args:
        session: a Session or AsyncSession.
        registry: the application's tasks.
        raise_errors: a failing job raises :class:`~backfill_sa.testing.JobFailed`
            from the enqueue that ran it.
    """
    info = session.info
    before = info.get(ENQUEUE_HOOK_KEY)
    info[ENQUEUE_HOOK_KEY] = InlineMode(registry, raise_errors=raise_errors)
    try:
        yield
    finally:
        if before is None:
            info.pop(ENQUEUE_HOOK_KEY, None)
        else:
            info[ENQUEUE_HOOK_KEY] = before


@contextmanager
def outer_transaction(engine: Engine) -> Iterator[Connection]:
    """Yield a connection in a transaction that is rolled back at the end, whatever happens.

    Raises:
        sqlalchemy.exc.DBAPIError: the database cannot be reached.
    """
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            if transaction.is_active:
                transaction.rollback()


@asynccontextmanager
async def outer_transaction_async(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """:func:`outer_transaction` for an AsyncEngine.

    Raises:
        sqlalchemy.exc.DBAPIError: the database cannot be reached.
    """
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            if transaction.is_active:
                await transaction.rollback()


def joined_sessionmaker(
    connection: Connection, *, info: dict[str, Any] | None = None, **options: Any
) -> sessionmaker[Session]:
    """Return a sessionmaker whose sessions join ``connection``'s transaction.

    Args:
        connection: the test's connection, in its outer transaction.
        info: ``Session.info`` of every session (e.g. :func:`mode_info`).
        **options: other ``sessionmaker`` options (``expire_on_commit``, ...).
    """
    return sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        info=dict(info or {}),
        **options,
    )


def joined_async_sessionmaker(
    connection: AsyncConnection, *, info: dict[str, Any] | None = None, **options: Any
) -> async_sessionmaker[AsyncSession]:
    """:func:`joined_sessionmaker` for an AsyncConnection (``expire_on_commit`` defaults
    to False, as async code cannot lazy-load).
    """
    options.setdefault("expire_on_commit", False)
    return async_sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        info=dict(info or {}),
        **options,
    )
