"""FastAPI: a request-scoped AsyncSession, a worker in the app's lifespan, the admin app.

FastAPI and Starlette are imported inside the functions, so importing this module
(or ``backfill_sa``) loads neither. Needs the ``fastapi`` extra (FastAPI 0.121 or
newer, for dependencies that end before the response is sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from backfill_sa.config import WorkerConfig
from backfill_sa.tasks import TaskRegistry
from backfill_sa.telemetry import Telemetry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from backfill_sa.admin.auth import Authenticator, TokenAuth
    from backfill_sa.worker import WorkerHandle

__all__ = ["embedded_worker", "mount_admin", "session_dependency", "worker_lifespan"]


def session_dependency(maker: async_sessionmaker[AsyncSession]) -> Any:
    """Return ``Depends(...)`` giving each request an AsyncSession in a transaction.

    The transaction commits when the endpoint returns and rolls back when it raises,
    before the response is sent (``scope="function"``), so jobs enqueued in it
    commit or vanish with the request's rows, and a client never sees a success
    that was not committed::

        DbSession = Annotated[AsyncSession, session_dependency(maker)]

        @app.post("/orders")
        async def place(order: OrderIn, session: DbSession) -> dict[str, int]:
            session.add(row := Order(...))
            await session.flush()
            await enqueue_async(session, "send_receipt", {"order_id": row.id})
            return {"id": row.id}

    Args:
        maker: the application's async_sessionmaker (a test's joined one in tests).
    """
    from fastapi import Depends

    async def transactional_session() -> AsyncIterator[AsyncSession]:
        async with maker() as session, session.begin():
            yield session

    return Depends(transactional_session, scope="function")


@asynccontextmanager
async def embedded_worker(
    config: WorkerConfig, registry: TaskRegistry, *, telemetry: Telemetry | None = None
) -> AsyncIterator[WorkerHandle]:
    """Run a worker in this process's event loop for the ``async with`` block.

    On exit the worker stops gracefully (running jobs get ``config.shutdown_timeout``
    to finish; the rest go back to the queue).

    Raises:
        Exception: whatever stopped the worker early (e.g. a missing schema).
    """
    from backfill_sa.worker import WorkerRunner

    handle = WorkerRunner(config, registry, telemetry=telemetry).start()
    try:
        yield handle
    finally:
        await handle.stop()


def worker_lifespan(
    config: WorkerConfig, registry: TaskRegistry, *, telemetry: Telemetry | None = None
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """Return a ``lifespan`` for ``FastAPI(lifespan=...)`` that runs a worker alongside.

    For small deployments: one process serves requests and runs jobs. Compose it
    with a lifespan of your own by entering :func:`embedded_worker` there instead.

    Args:
        config: the worker's settings (queues, concurrency, schema).
        registry: the application's tasks.
        telemetry: metrics and spans (default: the global providers).
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with embedded_worker(config, registry, telemetry=telemetry):
            yield

    return lifespan


def mount_admin(
    app: Any,
    engine: AsyncEngine,
    *,
    auth: TokenAuth | Authenticator,
    path: str = "/admin",
    schema: str | None = None,
    read_only: bool = False,
) -> None:
    """Mount the admin app (:func:`backfill_sa.admin.create_app`) under ``path``.

    Mounted apps do not run FastAPI dependencies, so the application's auth comes
    as ``auth``, the admin app's own: a callable of the request returning (or
    awaiting to) a :class:`~backfill_sa.admin.auth.Principal` (``read_only=True`` for
    look-only users) or ``None`` for 401, or a
    :class:`~backfill_sa.admin.auth.TokenAuth`.

    Args:
        app: the FastAPI (or Starlette) application.
        engine: an async engine on the database holding backfill_sa's tables.
        auth: the application's check, e.g. a token or session test.
        path: where to mount it.
        schema: the tables' schema (default: what ``engine`` maps ``backfill`` to).
        read_only: refuse every mutating admin request.

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name.
    """
    from backfill_sa.admin import create_app

    app.mount(path, create_app(engine, auth=auth, schema=schema, read_only=read_only))
