"""Transactional tasks: the handler's session, and its job's completion in that transaction.

A ``transactional=True`` task's handler writes through ``ctx.session``; when it
returns, the job is marked completed by the same statement the completer uses
(:data:`~backfill_sa.statements.jobs_runtime.job_complete_many`, fenced by id, lease
and ``state = 'running'``) inside the handler's transaction, which then commits
once. A fence that matches nothing (the claim was rescued meanwhile) rolls the
whole transaction back: the handler's writes never land.

This module loads SQLAlchemy; the worker imports it only when its registry has a
transactional task, so other workers stay free of it.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from backfill_sa.dburl import async_url, sync_url
from backfill_sa.errors import ConfigurationError, PermanentError
from backfill_sa.notify import done_channel_for
from backfill_sa.schema_name import DEFAULT_SCHEMA
from backfill_sa.statements.jobs_runtime import job_complete_many
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker.completer import finish_params
from backfill_sa.worker.outcomes import Outcome

__all__ = ["Settle", "TransactionEndedError", "TransactionalSessions"]

Settle = Callable[[object], Outcome | None]
"""Turns the handler's return value into its success outcome, or None to roll back
(cancellation was asked for meanwhile: the attempt ends cancelled, nothing lands)."""


class TransactionEndedError(PermanentError):
    """A transactional handler committed or rolled back ``ctx.session`` itself.

    What it committed cannot be taken back, and running it again would commit it
    again: the job goes to the dead-letter queue (``permanent_error``).
    """


def _finish(
    session: Session,
    begun: SessionTransaction,
    params: dict[str, Any],
    translate: dict[str, Any],
) -> bool:
    """Complete the job in ``session``'s open transaction; return whether the fence held.

    The one body of both flavours (an AsyncSession runs it through ``run_sync``).

    Raises:
        TransactionEndedError: the handler ended the transaction itself.
        sqlalchemy.exc.DBAPIError: the handler's pending writes or the finish failed.
    """
    if session.get_transaction() is not begun or not begun.is_active:
        raise TransactionEndedError(
            "the handler committed or rolled back ctx.session itself; a transactional"
            " task's session is committed once, by the worker, with the job's completion"
        )
    session.flush()  # the handler's own errors surface as its failure, before the finish
    rows = session.execute(job_complete_many, params, execution_options=translate).all()
    return bool(rows)


class TransactionalSessions:
    """Opens transactional tasks' sessions and completes their jobs inside them.

    Args:
        registry: the application's tasks; its ``session_factory`` /
            ``sync_session_factory`` are used when set.
        database_url: the worker's database (for the sessions the worker makes).
        schema: the worker's schema (the ``backfill`` tables it completes jobs in).
        pooled: ``database_url`` goes through a transaction pooler: the worker's own
            engines keep no prepared statements between transactions.
        pool_size: connections of each engine the worker makes.

    Raises:
        ConfigurationError: a sync transactional task needs the worker's own sync
            session and psycopg is not installed.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        database_url: str,
        schema: str,
        pooled: bool,
        pool_size: int,
    ) -> None:
        """Make the engines the registry's tasks need and the app did not provide."""
        tasks = [registry[name] for name in registry if registry[name].options.transactional]
        self._engines: list[AsyncEngine | Engine] = []
        self._translate = {"schema_translate_map": {DEFAULT_SCHEMA: schema}}
        self._done_channel = done_channel_for(schema)
        # The worker's own sessions enqueue into (and read) the worker's schema.
        own_options = self._translate if schema != DEFAULT_SCHEMA else {}
        async_factory = registry.session_factory
        if async_factory is None and any(t.is_async for t in tasks):
            connect_args: dict[str, Any] = {}
            if pooled:
                # Behind a transaction pooler a prepared statement may be missing
                # (or taken) on the server connection the next transaction gets.
                connect_args = {
                    "statement_cache_size": 0,
                    "prepared_statement_cache_size": 0,
                    "prepared_statement_name_func": _unique_statement_name,
                }
            engine = create_async_engine(
                async_url(database_url),
                pool_size=pool_size,
                max_overflow=0,
                connect_args=connect_args,
                execution_options=own_options,
            )
            self._engines.append(engine)
            async_factory = async_sessionmaker(engine, expire_on_commit=False)
        sync_factory = registry.sync_session_factory
        if sync_factory is None and any(not t.is_async for t in tasks):
            if importlib.util.find_spec("psycopg") is None:
                raise ConfigurationError(
                    "sync_session_factory",
                    "a transactional plain def task needs a sync session: install the"
                    " psycopg driver (pip install 'psycopg[binary]') or give the registry"
                    " a sync_session_factory",
                )
            url = sync_url(database_url).set(drivername="postgresql+psycopg")
            sync_engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"prepare_threshold": None} if pooled else {},
                execution_options=own_options,
            )
            self._engines.append(sync_engine)
            sync_factory = sessionmaker(sync_engine, expire_on_commit=False)
        self._async_factory = async_factory
        self._sync_factory = sync_factory

    def _finish_params(self, outcome: Outcome) -> dict[str, Any]:
        return finish_params([outcome], self._done_channel)

    async def run_async(
        self,
        call: Callable[[JobContext], Awaitable[object]],
        ctx: JobContext,
        settle: Settle,
    ) -> tuple[object, bool | None]:
        """Run an ``async def`` handler in a transaction and complete its job there.

        Args:
            call: runs the handler with the context it is given.
            ctx: the job's context; the handler gets a copy with ``session`` set.
            settle: see :data:`Settle`.

        Returns:
            The handler's value, and whether the completion committed (True), was
            refused by the fence and rolled back (False), or was not tried (None).

        Raises:
            Exception: what the handler raised (its writes rolled back), or the
                finish or commit failed (whether it landed is then unknown: the
                completer's fenced write finds out).
        """
        assert self._async_factory is not None
        async with self._async_factory() as session:
            begun = (await session.begin()).sync_transaction
            assert begun is not None
            value = await call(replace(ctx, session=session))
            outcome = settle(value)
            if outcome is None:
                await session.rollback()
                return value, None
            accepted = await session.run_sync(
                _finish, begun, self._finish_params(outcome), self._translate
            )
            if accepted:
                await session.commit()
            else:
                await session.rollback()
            return value, accepted

    def run_sync(
        self,
        handler: Callable[[Any, JobContext], object],
        payload: Any,
        ctx: JobContext,
        settle: Settle,
    ) -> tuple[object, bool | None]:
        """:meth:`run_async` for a plain ``def`` handler (call it in a worker thread).

        Raises:
            Exception: as :meth:`run_async`.
        """
        assert self._sync_factory is not None
        with self._sync_factory() as session:
            begun = session.begin()
            value = handler(payload, replace(ctx, session=session))
            outcome = settle(value)
            if outcome is None:
                session.rollback()
                return value, None
            accepted = _finish(session, begun, self._finish_params(outcome), self._translate)
            if accepted:
                session.commit()
            else:
                session.rollback()
            return value, accepted

    async def dispose(self) -> None:
        """Close the engines this object made (not the application's)."""
        for engine in self._engines:
            if isinstance(engine, AsyncEngine):
                await engine.dispose()
            else:
                engine.dispose()
        self._engines.clear()


def _unique_statement_name() -> str:
    return f"__backfill_{uuid.uuid4().hex}__"
