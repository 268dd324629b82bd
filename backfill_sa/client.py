"""BackfillClient: a producer's handle on the queue, owning or borrowing an engine.

For services that only produce jobs (and for scripts and admin tasks) there is no ORM
session at hand; the client brings one::

    async with BackfillClient("postgresql://app@db/app") as client:
        await client.enqueue("send_email", {"to": "a@example.com"}, queue="fast")
        async with client.transaction() as session:   # with your own rows
            session.add(Order(id=42))
            await enqueue_async(session, "send_receipt", {"order_id": 42})

    with SyncBackfillClient(engine, schema="jobs") as client:   # borrowed: not disposed
        client.enqueue_many([JobSpec("a"), JobSpec("b", job_key="b-1")])

**One implementation.** Every client operation *is* a library function that takes a
sync :class:`~sqlalchemy.orm.Session`: ``enqueue``, ``enqueue_many`` and the rest of
:mod:`backfill_sa.enqueue`, the dead-letter functions of :mod:`backfill_sa.dlq`, the
job and queue functions of :mod:`backfill_sa.jobs` and :mod:`backfill_sa.queues`. A
client attribute names the function once (``enqueue = _on_kept(enqueue_fn)``) and
the descriptor binds it to the client's executor, so validation, results, ``job_key``
modes and trace propagation are those of the function itself, and the method's
signature is the function's minus the session (mypy checks calls against it). The
two flavours differ only in that small executor (:mod:`backfill_sa.client_sessions`):
the sync one calls the function, the async one runs the same function through
``AsyncSession.run_sync``, exactly as ``enqueue_async`` does. Driving the async
client from a private event-loop thread was the other way; it would put a thread
hand-off (tens of microseconds) on every sync call and a second event loop in every
sync process, for no code saved.

**The fast path.** ``enqueue`` and the priority helpers write one statement, so they
run on a session bound to a connection the client keeps, in autocommit: one round
trip per job, no pool checkout, no BEGIN/COMMIT, and the insert prepared once per
connection (asyncpg's statement cache; psycopg prepares it after five runs).
The async client sends a keyless job's insert straight to the kept asyncpg
connection (:mod:`backfill_sa.client_sessions`): measured with 2,000 enqueues each,
interleaved, ``run_sync`` on the kept session cost 555 us of client CPU per job on a
loaded machine, the same statement on the bare asyncpg connection 368, pgqueuer's
enqueue 499; the shortcut is what keeps the async client ahead of the bare-driver
peers. ``enqueue_many``, ``enqueue_batch`` and the dead-letter operations run in a
short transaction of their own on a second kept session (BEGIN ... COMMIT): all or
nothing.
Concurrent callers each get a kept session of their own (an idle one, or a new one
from the engine's pool, kept afterwards). A session whose call raised is closed, not
reused. Nothing is retried: an enqueue whose reply was lost may have been written.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from backfill_sa import dlq, jobs, queues
from backfill_sa.client_sessions import AsyncSessions, SyncSessions, with_schema
from backfill_sa.dburl import async_url, sync_url
from backfill_sa.enqueue import EnqueueOptions, EnqueueResult, job_spec
from backfill_sa.enqueue import enqueue as _enqueue
from backfill_sa.enqueue import enqueue_batch as _enqueue_batch
from backfill_sa.enqueue import enqueue_bulk as _enqueue_bulk
from backfill_sa.enqueue import enqueue_critical as _enqueue_critical
from backfill_sa.enqueue import enqueue_emergency as _enqueue_emergency
from backfill_sa.enqueue import enqueue_fast as _enqueue_fast
from backfill_sa.enqueue import enqueue_many as _enqueue_many
from backfill_sa.errors import ConfigurationError
from backfill_sa.priority import BULK, FAST, Priority
from backfill_sa.telemetry import default_telemetry

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self, Unpack

    from backfill_sa.tasks import TaskRegistry

__all__ = ["BackfillClient", "SyncBackfillClient"]

_RECHECK = timedelta(seconds=5)
"""``wait_for_job``'s default ``recheck``."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _ClientBase:
    """What both flavours share: which sessions run which operation."""

    _kept: AsyncSessions | SyncSessions
    """Autocommit sessions on kept connections: one statement per operation."""
    _atomic: AsyncSessions | SyncSessions
    """Sessions on kept connections whose operation runs in a transaction."""


class _Operation(Generic[_P, _R]):
    """A client method made from a Session function: the function, minus the session.

    ``atomic`` picks the client's transactional sessions instead of its autocommit
    ones. On a :class:`BackfillClient` the method returns an awaitable; on a
    :class:`SyncBackfillClient`, the result.
    """

    def __init__(self, fn: Callable[Concatenate[Session, _P], _R], *, atomic: bool) -> None:
        self._fn = fn
        self._atomic = atomic
        how = "in a short transaction of its own" if atomic else "autocommitted"
        self.__name__ = fn.__name__
        self.__doc__ = (
            f"``{fn.__module__}.{fn.__name__}`` on a session the client keeps, {how}"
            f" (the session argument is the client's).\n\n{fn.__doc__ or ''}"
        )

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, client: BackfillClient, owner: type[Any]) -> Callable[_P, Awaitable[_R]]: ...
    @overload
    def __get__(self, client: SyncBackfillClient, owner: type[Any]) -> Callable[_P, _R]: ...
    def __get__(self, client: _ClientBase | None, owner: type[Any]) -> Any:
        if client is None:
            return self
        sessions = client._atomic if self._atomic else client._kept
        bound = functools.partial(sessions.run, self._fn)
        vars(bound).update(__name__=self.__name__, __doc__=self.__doc__)
        return bound


def _on_kept(fn: Callable[Concatenate[Session, _P], _R]) -> _Operation[_P, _R]:
    """``fn`` as a method run on an autocommit kept session (one statement)."""
    return _Operation(fn, atomic=False)


def _in_transaction(fn: Callable[Concatenate[Session, _P], _R]) -> _Operation[_P, _R]:
    """``fn`` as a method run in a short transaction of its own, committed on return."""
    return _Operation(fn, atomic=True)


class _Operations(_ClientBase):
    """The operations, named once for both flavours (:class:`BackfillClient` defines
    its own single-job enqueues, to take the asyncpg shortcut)."""

    # Enqueue: each call is its own transaction (autocommit, one round trip).
    enqueue = _on_kept(_enqueue)
    enqueue_fast = _on_kept(_enqueue_fast)
    enqueue_bulk = _on_kept(_enqueue_bulk)
    enqueue_critical = _on_kept(_enqueue_critical)
    enqueue_emergency = _on_kept(_enqueue_emergency)
    # Several jobs: one transaction, all or nothing.
    enqueue_many = _in_transaction(_enqueue_many)
    enqueue_batch = _in_transaction(_enqueue_batch)
    # The dead-letter queue (backfill_sa.dlq).
    list_dead_letters = _in_transaction(dlq.list_dead_letters)
    count_dead_letters = _in_transaction(dlq.count_dead_letters)
    get_dead_letter = _in_transaction(dlq.get_dead_letter)
    requeue_dead_letters = _in_transaction(dlq.requeue_dead_letters)
    delete_dead_letters = _in_transaction(dlq.delete_dead_letters)
    purge_dead_letters = _in_transaction(dlq.purge_dead_letters)
    annotate_dead_letter = _in_transaction(dlq.annotate_dead_letter)
    # Jobs and queues (backfill_sa.jobs, backfill_sa.queues).
    get_job = _in_transaction(jobs.get_job)
    list_jobs = _in_transaction(jobs.list_jobs)
    cancel_job = _in_transaction(jobs.cancel_job)
    retry_job = _in_transaction(jobs.retry_job)
    pause_queue = _in_transaction(queues.pause_queue)
    resume_queue = _in_transaction(queues.resume_queue)
    queue_stats = _in_transaction(queues.queue_stats)


def _owned(url_or_engine: object, kind: type[Any]) -> bool:
    """Whether the client creates its engine from a URL (True) or borrows ``kind``.

    Raises:
        ConfigurationError: neither a URL nor an engine of the flavour's kind.
    """
    if isinstance(url_or_engine, (str, URL)):
        return True
    if isinstance(url_or_engine, kind):
        return False
    raise ConfigurationError(
        "url_or_engine",
        f"must be a database URL or an {kind.__name__}, not {type(url_or_engine).__name__}",
    )


class BackfillClient(_Operations):
    """The async client: enqueue and administer jobs without a session of your own.

    Args:
        url_or_engine: a PostgreSQL URL (any driver named in it is replaced by
            asyncpg; the client creates the engine and disposes of it on close) or an
            :class:`~sqlalchemy.ext.asyncio.AsyncEngine` of yours (borrowed: used,
            never disposed).
        schema: the schema the tables live in (``backfill`` maps to it); ``None``
            keeps the engine's own ``schema_translate_map``, or ``backfill``.
        max_connections: connections the client keeps for its single enqueues, and
            as many again for its transactions (default 4 each); more concurrent
            calls wait for one. Keep ``2 * max_connections`` within the pool's size.
        engine_options: keyword arguments for ``create_async_engine`` when the
            client creates the engine (pool size and the like); refused with a
            borrowed engine.

    Every operation is the library function of the same name run on a session the
    client keeps (see the module docstring): ``enqueue``, ``enqueue_fast``,
    ``enqueue_bulk``, ``enqueue_critical``, ``enqueue_emergency`` (one autocommitted
    statement each); ``enqueue_many``, ``enqueue_batch``, and the dead-letter
    functions ``list_dead_letters``, ``count_dead_letters``, ``get_dead_letter``,
    ``requeue_dead_letters``, ``delete_dead_letters``, ``purge_dead_letters``,
    ``annotate_dead_letter``, the job and queue functions ``get_job``, ``list_jobs``,
    ``cancel_job``, ``retry_job``, ``pause_queue``, ``resume_queue``, ``queue_stats``
    (a short transaction each); and ``wait_for_job`` (async client only, on a
    connection of its own). Objects they return are detached, with their columns
    loaded.

    Raises:
        ConfigurationError: a bad URL, schema name or ``max_connections``, or engine
            options with a borrowed engine.

    Example::

        async with BackfillClient(os.environ["DATABASE_URL"]) as client:
            result = await client.enqueue_fast("send_email", {"to": "a@example.com"})
    """

    _kept: AsyncSessions
    _atomic: AsyncSessions

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
        *,
        schema: str | None = None,
        max_connections: int = 4,
        **engine_options: Any,
    ) -> None:
        """Create or borrow the engine; no connection opens before the first call."""
        if type(max_connections) is not int or max_connections < 1:
            raise ConfigurationError("max_connections", "must be an integer of at least 1")
        self._owns_engine = _owned(url_or_engine, AsyncEngine)
        if isinstance(url_or_engine, AsyncEngine):
            if engine_options:
                raise ConfigurationError("engine_options", "apply to an engine the client creates")
            engine = url_or_engine
        else:
            engine = create_async_engine(async_url(url_or_engine), **engine_options)
        self._engine = engine
        self.engine: AsyncEngine = with_schema(engine, schema)
        """The engine the client works with (the schema applied)."""
        self._kept = AsyncSessions(self.engine, autocommit=True, limit=max_connections)
        self._atomic = AsyncSessions(self.engine, autocommit=False, limit=max_connections)

    async def enqueue(
        self,
        task: str,
        payload: object = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        registry: TaskRegistry | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> EnqueueResult:
        """Add a job, committed on return: :func:`~backfill_sa.enqueue.enqueue`'s
        arguments (task defaults from ``registry`` included), rules, ``job_key`` modes
        and result, in one autocommitted statement on a connection the client keeps.

        Raises:
            JobValidationError: an argument breaks a rule; raised before any SQL.
            sqlalchemy.exc.DBAPIError: the database refused the statement.
        """
        telemetry = options.pop("telemetry", None) or default_telemetry()
        spec = job_spec(task, payload, registry, queue=queue, priority=priority, **options)
        return await self._kept.write_job(spec, telemetry)

    # The helpers' queues and priorities are enqueue_fast's & co (a test compares).

    async def enqueue_fast(
        self, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
    ) -> EnqueueResult:
        """:meth:`enqueue` on queue ``fast`` at ``Priority.FAST_DEFAULT`` (-5).

        Raises:
            JobValidationError: an argument breaks a rule; raised before any SQL.
        """
        return await self.enqueue(
            task, payload, queue=FAST, priority=Priority.FAST_DEFAULT, **options
        )

    async def enqueue_bulk(
        self, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
    ) -> EnqueueResult:
        """:meth:`enqueue` on queue ``bulk`` at ``Priority.BULK_DEFAULT`` (0).

        Raises:
            JobValidationError: an argument breaks a rule; raised before any SQL.
        """
        return await self.enqueue(
            task, payload, queue=BULK, priority=Priority.BULK_DEFAULT, **options
        )

    async def enqueue_critical(
        self, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
    ) -> EnqueueResult:
        """:meth:`enqueue` on queue ``fast`` at ``Priority.FAST_HIGH`` (-10).

        Raises:
            JobValidationError: an argument breaks a rule; raised before any SQL.
        """
        return await self.enqueue(task, payload, queue=FAST, priority=Priority.FAST_HIGH, **options)

    async def enqueue_emergency(
        self, task: str, payload: object = None, **options: Unpack[EnqueueOptions]
    ) -> EnqueueResult:
        """:meth:`enqueue` on queue ``fast`` at ``Priority.EMERGENCY`` (-20).

        Raises:
            JobValidationError: an argument breaks a rule; raised before any SQL.
        """
        return await self.enqueue(task, payload, queue=FAST, priority=Priority.EMERGENCY, **options)

    async def wait_for_job(
        self, id: int, *, timeout: timedelta, recheck: timedelta = _RECHECK
    ) -> jobs.JobInfo | None:
        """:func:`backfill_sa.jobs.wait_for_job` on the client's engine: wait until the
        job finishes and return it (None: no such job).

        Raises:
            JobValidationError: ``id``, ``timeout`` or ``recheck`` breaks its rule.
            JobWaitTimeoutError: the job had not finished within ``timeout``.
        """
        return await jobs.wait_for_job(self.engine, id, timeout=timeout, recheck=recheck)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Yield a new AsyncSession in a transaction, committed when the block ends.

        Enqueue with ``enqueue_async`` and add your rows on it: the jobs commit with
        the rows, or roll back with them when the block raises. The session does not
        expire its objects on commit.

        Raises:
            sqlalchemy.exc.DBAPIError: the database refused a statement or the commit.
        """
        async with (
            AsyncSession(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    async def close(self) -> None:
        """Close the kept connections and, if the client created it, the engine."""
        await self._kept.close()
        await self._atomic.close()
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class SyncBackfillClient(_Operations):
    """The sync client: :class:`BackfillClient` for blocking code, same operations.

    Args:
        url_or_engine: a PostgreSQL URL (an async or plain URL gets the first
            installed sync driver: psycopg, psycopg2, pg8000; the client creates the
            engine and disposes of it on close) or an :class:`~sqlalchemy.Engine` of
            yours (borrowed: used, never disposed).
        schema: as for :class:`BackfillClient`.
        max_connections: as for :class:`BackfillClient`.
        engine_options: keyword arguments for ``create_engine`` when the client
            creates the engine; refused with a borrowed engine.

    Every operation returns its result directly; see :class:`BackfillClient`. A
    client can be shared by threads: each concurrent call gets a kept session of
    its own.

    Raises:
        ConfigurationError: a bad URL, schema name or ``max_connections``, engine
            options with a borrowed engine, or no sync driver installed.

    Example::

        with SyncBackfillClient(os.environ["DATABASE_URL"]) as client:
            client.enqueue("send_email", {"to": "a@example.com"})
    """

    _kept: SyncSessions
    _atomic: SyncSessions

    def __init__(
        self,
        url_or_engine: str | URL | Engine,
        *,
        schema: str | None = None,
        max_connections: int = 4,
        **engine_options: Any,
    ) -> None:
        """Create or borrow the engine; no connection opens before the first call."""
        if type(max_connections) is not int or max_connections < 1:
            raise ConfigurationError("max_connections", "must be an integer of at least 1")
        self._owns_engine = _owned(url_or_engine, Engine)
        if isinstance(url_or_engine, Engine):
            if engine_options:
                raise ConfigurationError("engine_options", "apply to an engine the client creates")
            engine = url_or_engine
        else:
            engine = create_engine(sync_url(url_or_engine), **engine_options)
        self._engine = engine
        self.engine: Engine = with_schema(engine, schema)
        """The engine the client works with (the schema applied)."""
        self._kept = SyncSessions(self.engine, autocommit=True, limit=max_connections)
        self._atomic = SyncSessions(self.engine, autocommit=False, limit=max_connections)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a new Session in a transaction, committed when the block ends.

        See :meth:`BackfillClient.transaction`; enqueue on it with ``enqueue``.

        Raises:
            sqlalchemy.exc.DBAPIError: the database refused a statement or the commit.
        """
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        """Close the kept connections and, if the client created it, the engine."""
        self._kept.close()
        self._atomic.close()
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
