"""Task registry and job context: which handler runs a job, and what it is told.

The application creates its own :class:`TaskRegistry` (there is no module-global
one) and hands it to the worker::

    registry = TaskRegistry()

    @registry.task("send_email", queue="fast", retry=backfill_sa.retry.FAST)
    async def send_email(payload: dict[str, Any], ctx: JobContext) -> None:
        ...

    registry["send_email"].enqueue(session, {"to": "a@example.com"})
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from backfill_sa.cron import CronSchedule
from backfill_sa.errors import ConfigurationError, InvalidPayloadError, JobValidationError
from backfill_sa.priority import BULK, Priority
from backfill_sa.retry import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from backfill_sa.enqueue import EnqueueResult, JobSpec

__all__ = ["Handler", "JobContext", "Task", "TaskOptions", "TaskRegistry"]

logger = logging.getLogger(__name__)

AsyncSessionFactory: TypeAlias = "Callable[[], AsyncSession]"
"""Makes the AsyncSession of a transactional ``async def`` task (an ``async_sessionmaker``)."""

SyncSessionFactory: TypeAlias = "Callable[[], Session]"
"""Makes the Session of a transactional plain ``def`` task (a ``sessionmaker``)."""

Handler: TypeAlias = Callable[[Any, "JobContext"], Awaitable[object] | object]
"""A task handler: ``(payload, ctx)``; ``async def`` or plain ``def`` (run in a thread)."""

ExceptionTypes: TypeAlias = tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler knows about the job it runs.

    Attributes:
        job_id: the job's id.
        task: task name.
        queue: queue name.
        attempt: this attempt's number (1 for the first).
        max_attempts: attempts allowed in all.
        priority: the job's priority.
        run_at: when the job became runnable.
        enqueued_at: when the job was enqueued.
        metadata: the job's metadata (trace context, tags).
        worker_id: id of the worker running it.
        logger: a logger adapter with the job's fields bound in ``extra``.
        cancel_event: set when someone asked to cancel the job (``cancel_job``); a
            sync handler can wait on it or poll :attr:`cancel_requested`.
        claimed_at: when this attempt was claimed, by the database clock (rate
            limits count claims).
        session: for a ``transactional=True`` task, the session whose open
            transaction also completes the job (an ``AsyncSession`` for an ``async
            def`` handler, a ``Session`` for a plain ``def`` one); None otherwise.
            Write with it, never commit or roll it back: the worker commits once.
    """

    job_id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    priority: int
    run_at: dt.datetime
    enqueued_at: dt.datetime
    metadata: Mapping[str, Any]
    worker_id: str
    logger: logging.LoggerAdapter[logging.Logger]
    cancel_event: threading.Event = field(default_factory=threading.Event, compare=False)
    session: AsyncSession | Session | None = field(default=None, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """Whether cancellation of this job was asked for; stop soon if it was.

        An ``async def`` handler is also cancelled at its next ``await``; a plain
        ``def`` handler runs in a thread and must check this itself. Either way the
        job ends ``cancelled`` and is not retried.
        """
        return self.cancel_event.is_set()

    claimed_at: dt.datetime | None = None

    @property
    def async_session(self) -> AsyncSession:
        """:attr:`session` of a transactional ``async def`` task, typed as such.

        Raises:
            TypeError: the task is not transactional, or its handler is a plain ``def``.
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        if not isinstance(self.session, AsyncSession):
            raise TypeError(f"task {self.task!r}: ctx.session is not an AsyncSession")
        return self.session

    @property
    def sync_session(self) -> Session:
        """:attr:`session` of a transactional plain ``def`` task, typed as such.

        Raises:
            TypeError: the task is not transactional, or its handler is ``async def``.
        """
        from sqlalchemy.orm import Session

        if not isinstance(self.session, Session):
            raise TypeError(f"task {self.task!r}: ctx.session is not a Session")
        return self.session


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-task defaults and failure handling.

    Attributes:
        queue: default queue when enqueued through the task.
        priority: default priority when enqueued through the task.
        retry: retry policy for this task's jobs (jobs may carry their own).
        max_attempts: default attempts (overrides ``retry.max_attempts``).
        timeout: the handler is cancelled after this long; counts as a retryable failure.
        retry_on: exceptions that retry (unclassified exceptions retry too).
        give_up_on: exceptions that send the job straight to the dead-letter queue.
        parse: turns the raw JSON payload into what the handler takes; any exception it
            raises dead-letters the job with reason ``invalid_payload``.
        retention: how long this task's finished jobs are kept (``get_job`` answers
            meanwhile); ``timedelta(0)`` deletes a succeeded job at once. None: the
            worker's ``queue_retention`` for the queue, else its ``retention``.
        serial_key: default serial key of the task's jobs: a string, or a function of
            the payload returning one (or None); ``enqueue(serial_key=...)`` wins.
        transactional: run the handler in a database transaction (``ctx.session``)
            that also marks the job completed, fenced by its claim, and commits once:
            the handler's writes land if and only if the job completes. A failure
            rolls them back. See docs/jobs.md, "Transactional tasks".
    """

    queue: str = BULK
    priority: int = Priority.BULK_DEFAULT
    retry: RetryPolicy | None = None
    max_attempts: int | None = None
    timeout: timedelta | None = None
    retry_on: ExceptionTypes = ()
    give_up_on: ExceptionTypes = ()
    parse: Callable[[Any], Any] | None = None
    retention: timedelta | None = None
    serial_key: str | Callable[[Any], str | None] | None = None
    transactional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.transactional, bool):
            raise ConfigurationError("transactional", "must be True or False")
        if self.retention is not None and (
            not isinstance(self.retention, timedelta) or self.retention < timedelta(0)
        ):
            raise ConfigurationError("retention", "must be a timedelta of zero or more, or None")
        if self.timeout is not None and (
            not isinstance(self.timeout, timedelta) or self.timeout <= timedelta(0)
        ):
            raise ConfigurationError("timeout", "must be a timedelta above zero, or None")
        if self.max_attempts is not None and not 1 <= self.max_attempts <= 32767:
            raise ConfigurationError("max_attempts", "must be between 1 and 32767")
        for name in ("retry_on", "give_up_on"):
            for exc_type in getattr(self, name):
                if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                    raise ConfigurationError(name, f"{exc_type!r} is not an exception type")


@dataclass(frozen=True, slots=True)
class Task:
    """A registered handler with its options; enqueue through it to apply its defaults."""

    name: str
    handler: Handler
    options: TaskOptions = field(default_factory=TaskOptions)
    is_async: bool = False

    def spec(self, payload: Any = None, **overrides: Any) -> JobSpec:
        """Return a :class:`~backfill_sa.enqueue.JobSpec` with this task's defaults.

        Args:
            payload: the job's JSON payload.
            **overrides: any JobSpec option (queue, priority, run_at, job_key, ...).

        Raises:
            JobValidationError: an argument breaks a rule.
        """
        from backfill_sa.enqueue import JobSpec

        options: dict[str, Any] = {
            "queue": self.options.queue,
            "priority": self.options.priority,
            "retry": self.options.retry,
            "max_attempts": self.options.max_attempts,
        }
        default_key = self.options.serial_key
        if default_key is not None and "serial_key" not in overrides:
            options["serial_key"] = default_key(payload) if callable(default_key) else default_key
        options.update(overrides)
        return JobSpec(self.name, payload, **options)

    def enqueue(self, session: Session, payload: Any = None, **overrides: Any) -> EnqueueResult:
        """Enqueue a job for this task in ``session``'s transaction (sync).

        ``overrides`` are JobSpec options, and ``telemetry=`` as for ``enqueue``.

        Raises:
            JobValidationError: an argument breaks a rule; nothing is written.
        """
        from backfill_sa.enqueue import enqueue_many

        telemetry = overrides.pop("telemetry", None)
        return enqueue_many(session, [self.spec(payload, **overrides)], telemetry=telemetry)[0]

    async def enqueue_async(
        self, session: AsyncSession, payload: Any = None, **overrides: Any
    ) -> EnqueueResult:
        """Enqueue a job for this task in ``session``'s transaction (async).

        Raises:
            JobValidationError: an argument breaks a rule; nothing is written.
        """
        from backfill_sa.enqueue import enqueue_many_async

        telemetry = overrides.pop("telemetry", None)
        spec = self.spec(payload, **overrides)
        return (await enqueue_many_async(session, [spec], telemetry=telemetry))[0]

    def enqueue_batch(
        self, session: Session, payloads: Iterable[Any], **overrides: Any
    ) -> list[EnqueueResult]:
        """Enqueue one job per payload for this task, all with the same options (sync).

        ``enqueue_batch`` with this task's defaults; ``overrides`` are JobSpec options
        other than ``job_key``, and ``telemetry=`` as for ``enqueue_batch``.

        Raises:
            JobValidationError: an option or a payload (``payloads[i]``) breaks a
                rule; nothing is written.
        """
        from backfill_sa.enqueue_hooks import observed
        from backfill_sa.job_writer import write_batch
        from backfill_sa.telemetry import default_telemetry
        from backfill_sa.validation import batch_payloads

        telemetry = overrides.pop("telemetry", None) or default_telemetry()
        template = self._batch_template(overrides)
        texts = batch_payloads(template, payloads)
        return observed(session, write_batch(session, template, texts, telemetry))

    def _batch_template(self, overrides: dict[str, Any]) -> JobSpec:
        if callable(self.options.serial_key) and "serial_key" not in overrides:
            raise JobValidationError(
                "serial_key",
                f"task {self.name!r} derives it from each payload: use enqueue_many",
            )
        return self.spec(None, **overrides)

    async def enqueue_batch_async(
        self, session: AsyncSession, payloads: Iterable[Any], **overrides: Any
    ) -> list[EnqueueResult]:
        """:meth:`enqueue_batch` for an AsyncSession.

        Raises:
            JobValidationError: an option or a payload (``payloads[i]``) breaks a
                rule; nothing is written.
        """
        from backfill_sa.enqueue_hooks import observed_async
        from backfill_sa.job_writer import write_batch
        from backfill_sa.telemetry import default_telemetry
        from backfill_sa.validation import batch_payloads

        telemetry = overrides.pop("telemetry", None) or default_telemetry()
        template = self._batch_template(overrides)
        texts = batch_payloads(template, payloads)
        return await observed_async(
            session, await session.run_sync(write_batch, template, texts, telemetry)
        )

    def parse_payload(self, payload: Any) -> Any:
        """Apply the task's ``parse`` hook to a raw payload.

        Raises:
            InvalidPayloadError: the hook rejected the payload.
        """
        if self.options.parse is None:
            return payload
        try:
            return self.options.parse(payload)
        except InvalidPayloadError:
            raise
        except Exception as exc:
            raise InvalidPayloadError(
                f"payload rejected by {self.name!r}: {type(exc).__name__}: {exc}"
            ) from exc


class TaskRegistry:
    """The application's handlers, by task name. Create one per application.

    Args:
        session_factory: makes the ``AsyncSession`` of transactional ``async def``
            tasks (``async_sessionmaker(engine)``), so the application's engine
            options, models and event listeners apply. Default: the worker makes
            sessions on its own ``database_url``.
        sync_session_factory: makes the ``Session`` of transactional plain ``def``
            tasks (``sessionmaker(engine)``). Default: the worker's ``database_url``
            through psycopg.
    """

    def __init__(
        self,
        *,
        session_factory: AsyncSessionFactory | None = None,
        sync_session_factory: SyncSessionFactory | None = None,
    ) -> None:
        """Create an empty registry.

        Raises:
            ConfigurationError: a session factory is not callable.
        """
        for name, factory in (
            ("session_factory", session_factory),
            ("sync_session_factory", sync_session_factory),
        ):
            if factory is not None and not callable(factory):
                raise ConfigurationError(name, "must be a callable returning a session, or None")
        self._tasks: dict[str, Task] = {}
        self._schedules: dict[str, CronSchedule] = {}
        self.session_factory = session_factory
        self.sync_session_factory = sync_session_factory

    def register(self, name: str, handler: Handler, **options: Any) -> Task:
        """Register ``handler`` under ``name`` with :class:`TaskOptions` ``options``.

        Raises:
            ConfigurationError: the name is empty, too long or already taken, the
                handler is not callable, or an option breaks its rule.
        """
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ConfigurationError("task", "name must be 1-200 characters")
        if name in self._tasks:
            raise ConfigurationError("task", f"{name!r} is already registered")
        if not callable(handler):
            raise ConfigurationError("handler", f"{handler!r} is not callable")
        task = Task(
            name=name,
            handler=handler,
            options=TaskOptions(**options),
            is_async=inspect.iscoroutinefunction(handler)
            or inspect.iscoroutinefunction(getattr(handler, "__call__", None)),  # noqa: B004
        )
        self._tasks[name] = task
        return task

    def task(
        self,
        name: str | None = None,
        *,
        queue: str = BULK,
        priority: int = Priority.BULK_DEFAULT,
        retry: RetryPolicy | None = None,
        max_attempts: int | None = None,
        timeout: timedelta | None = None,
        retry_on: ExceptionTypes = (),
        give_up_on: ExceptionTypes = (),
        parse: Callable[[Any], Any] | None = None,
        retention: timedelta | None = None,
        serial_key: str | Callable[[Any], str | None] | None = None,
        transactional: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`; the name defaults to the function's.

        Raises:
            ConfigurationError: as :meth:`register`.
        """

        def decorate(handler: Handler) -> Handler:
            self.register(
                name or str(getattr(handler, "__name__", "")),
                handler,
                queue=queue,
                priority=priority,
                retry=retry,
                max_attempts=max_attempts,
                timeout=timeout,
                retry_on=retry_on,
                give_up_on=give_up_on,
                parse=parse,
                retention=retention,
                serial_key=serial_key,
                transactional=transactional,
            )
            return handler

        return decorate

    def cron(
        self,
        expression: str,
        task: str,
        *,
        payload: Any = None,
        queue: str | None = None,
        priority: int | None = None,
        timezone: str = "UTC",
        fill: timedelta = timedelta(0),
        name: str | None = None,
    ) -> CronSchedule:
        """Enqueue ``task`` on a cron schedule; every worker with this registry runs it.

        Exactly one job is enqueued per tick, however many workers run (its job key
        is ``cron:<name>:<tick in UTC>``), and no tick is missed while at least one
        worker runs. See ``docs/scheduling.md``.

        Example::

            registry.cron("*/5 * * * *", "sync_accounts", queue="bulk")
            registry.cron("0 3 * * *", "nightly_report", timezone="Europe/Berlin",
                          fill=timedelta(hours=6))

        Args:
            expression: five fields (``"*/5 * * * *"``: minute hour day month
                weekday; ranges, lists, steps, ``jan``-``dec`` and ``mon``-``sun``
                allowed) or a shorthand such as ``@hourly`` or ``@daily``.
            task: name of the task to enqueue (registered here before a worker starts).
            payload: JSON payload of every job (``None`` means ``{}``).
            queue: queue of the jobs (default: the task's).
            priority: priority of the jobs (default: the task's).
            timezone: IANA zone the expression is read in (default ``"UTC"``).
            fill: after downtime, missed ticks at most this old are still enqueued
                (default: none beyond the scheduler's one-minute grace).
            name: the schedule's stable identity (default: the task name).

        Raises:
            ConfigurationError: the expression is invalid or never matches, the zone
                is unknown, ``fill`` is negative, the name is taken, or the ``cron``
                extra (croniter) is not installed.
            JobValidationError: the task name, queue, priority or payload breaks its rule.
        """
        schedule = CronSchedule(
            name=task if name is None else name,
            expression=expression,
            task=task,
            payload=payload,
            queue=queue,
            priority=priority,
            timezone=timezone,
            fill=fill,
        )
        if schedule.name in self._schedules:
            raise ConfigurationError(
                "name", f"a cron schedule named {schedule.name!r} exists; give each a name="
            )
        self._schedules[schedule.name] = schedule
        return schedule

    @property
    def schedules(self) -> tuple[CronSchedule, ...]:
        """The cron schedules registered with :meth:`cron`, in registration order."""
        return tuple(self._schedules.values())

    def with_options(self, name: str, **options: Any) -> Task:
        """Replace some options of a registered task and return the new task.

        Raises:
            KeyError: no task of that name.
        """
        task = self._tasks[name]
        updated = replace(task, options=replace(task.options, **options))
        self._tasks[name] = updated
        return updated

    @property
    def has_transactional(self) -> bool:
        """Whether any registered task is ``transactional``."""
        return any(t.options.transactional for t in self._tasks.values())

    def get(self, name: str) -> Task | None:
        """Return the task registered as ``name``, or None."""
        return self._tasks.get(name)

    def __getitem__(self, name: str) -> Task:
        """Return the task registered as ``name``.

        Raises:
            KeyError: no task of that name.
        """
        return self._tasks[name]

    def __contains__(self, name: object) -> bool:
        """Return whether a task is registered as ``name``."""
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        """Iterate over the registered task names."""
        return iter(self._tasks)

    def __len__(self) -> int:
        """Return the number of registered tasks."""
        return len(self._tasks)


def is_coroutine_result(value: object) -> bool:
    """Return whether a handler's return value must be awaited."""
    return asyncio.iscoroutine(value) or inspect.isawaitable(value)
