"""WorkerRunner: starts a worker's services, runs them until stopped, shuts down cleanly.

One :class:`~backfill_sa.worker.fetcher.QueueFetcher` per queue claims and starts
jobs; outcomes go to the :class:`~backfill_sa.worker.completer.Completer`, which
writes them in batches. Heartbeats, promotion of due scheduled jobs, cron schedules
and (on the elected leader) the rescue of stale claims run beside them. The runner owns their
lifetimes: start-up, LISTEN wake-ups, signals, the shutdown drain and the last writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import redacted_url
from backfill_sa.notify import cancel_channel_for, channel_for
from backfill_sa.statements.worker_sql import queue_set_limits, queue_settings, schema_probe
from backfill_sa.states import FailureReason
from backfill_sa.tasks import TaskRegistry
from backfill_sa.telemetry import Outcome as TelemetryOutcome
from backfill_sa.telemetry import OutcomeKey, QueueSnapshot, Telemetry, default_telemetry
from backfill_sa.worker.completer import Completer, RunResult
from backfill_sa.worker.db import Database
from backfill_sa.worker.executor import Executor
from backfill_sa.worker.fetcher import FetchServices, QueueFetcher, wait_any
from backfill_sa.worker.listener import Listener
from backfill_sa.worker.maintenance import (
    CancelWatch,
    Heartbeat,
    LeaderElection,
    Promoter,
    Pruner,
    Rescuer,
    RescueResult,
)
from backfill_sa.worker.outcomes import Outcome
from backfill_sa.worker.queue_stats import QueueStats
from backfill_sa.worker.scheduler import CronScheduler, resolve_schedules

if TYPE_CHECKING:
    from backfill_sa.worker.transactional import TransactionalSessions

__all__ = ["WorkerHandle", "WorkerRunner"]

logger = logging.getLogger(__name__)


class WorkerRunner:
    """Runs jobs of the configured queues with the application's task registry.

    Args:
        config: the worker's settings.
        registry: the application's tasks.
        telemetry: where metrics and spans go (default:
            :func:`~backfill_sa.telemetry.default_telemetry`, on the OpenTelemetry
            API's global providers: a no-op until an SDK is installed).

    Example::

        runner = WorkerRunner(WorkerConfig(database_url=url), registry)
        await runner.run()                    # until SIGTERM / runner.stop()
        result = await runner.run_once()      # burst: what is due now, then return
    """

    def __init__(
        self,
        config: WorkerConfig,
        registry: TaskRegistry,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        """Prepare the runner; nothing connects until :meth:`run`."""
        self.config = config
        self.registry = registry
        self.worker_id = config.worker_id or (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self.telemetry = telemetry or default_telemetry()
        self._stats: QueueStats | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._queues: dict[str, QueueFetcher] = {}
        self.listener: Listener | None = None
        self.result = RunResult()
        self._executor: Executor | None = None

    # -- control ---------------------------------------------------------------

    async def schema_ready(self) -> bool:
        """Return whether the configured schema holds backfill_sa's tables.

        Raises:
            asyncpg.PostgresError, OSError: the database cannot be reached.
        """
        db = Database(
            self.config.database_url,
            schema=self.config.schema,
            pool_size=1,
            statement_cache=not self.config.pooled,
        )
        try:
            rows = await db.execute(
                schema_probe, {"qualified_name": f'"{self.config.schema}".jobs'}, retry=False
            )
        finally:
            await db.dispose()
        return rows[0][0] is not None

    def stop(self) -> None:
        """Ask for a graceful stop: claim nothing more, let running jobs finish."""
        if self._stop is not None:
            self._stop.set()

    def force_stop(self) -> None:
        """Stop at once: cancel running jobs and give them back to the queue."""
        if self._force is not None:
            self._force.set()
        self.stop()

    async def snapshot_queues(self) -> QueueSnapshot:
        """Take the queue gauges' snapshot now (normally the leader's maintenance does).

        Raises:
            RuntimeError: the worker is not running.
            asyncpg.PostgresError, OSError: the statement failed.
        """
        if self._stats is None:
            raise RuntimeError("snapshot_queues: the worker is not running")
        return await self._stats.run_once()

    def start(self) -> WorkerHandle:
        """Run the worker in a background task and return a handle to stop it.

        Raises:
            RuntimeError: called outside a running event loop.
        """
        return WorkerHandle(self, asyncio.get_running_loop().create_task(self.run()))

    async def run_once(self) -> RunResult:
        """Process every job that is due now, then return (burst mode).

        Raises:
            asyncpg.PostgresError, OSError: as :meth:`run`.
        """
        return await self.run(burst=True)

    # -- main ------------------------------------------------------------------

    async def run(self, *, burst: bool = False, handle_signals: bool = False) -> RunResult:
        """Run until stopped (or, with ``burst``, until nothing is due); return counts.

        Args:
            burst: process what is due now, then return.
            handle_signals: install SIGTERM/SIGINT handlers (first: graceful stop,
                second: stop at once). The CLI sets this.

        Raises:
            asyncpg.PostgresError, OSError: the database could not be reached at start
                (or, in burst mode, a claim failed for a reason other than a transient
                connection error).
        """
        cfg = self.config
        self._stop = stop = asyncio.Event()
        self._force = asyncio.Event()
        self.result = RunResult()
        db = Database(
            cfg.database_url,
            schema=cfg.schema,
            pool_size=len(cfg.queues) + 3,
            telemetry=self.telemetry,
            statement_cache=not cfg.pooled,
        )
        completer = Completer(db, self.result, on_written=self._on_written)
        transactions = self._transactions()
        self._executor = executor = Executor(
            self.registry,
            self.worker_id,
            threads=sum(cfg.queues.values()),
            telemetry=self.telemetry,
            retention=cfg.retention,
            queue_retention=cfg.queue_retention,
            max_result_bytes=cfg.max_result_bytes,
            transactions=transactions,
        )
        heartbeat = Heartbeat(db, self.worker_id, cfg.queues)
        leader = LeaderElection(db, self.worker_id, ttl=cfg.heartbeat_expiry)
        promoter = Promoter(db)
        self._stats = stats = QueueStats(db, heartbeat_expiry=cfg.heartbeat_expiry)
        rescuer = Rescuer(
            db,
            heartbeat_expiry=cfg.heartbeat_expiry,
            stale_job_lock_timeout=cfg.stale_job_lock_timeout,
            keep_ms=executor.keep_ms,
        )
        scheduler = (
            CronScheduler(db, resolve_schedules(self.registry)) if self.registry.schedules else None
        )
        pruner = Pruner(db, batch=cfg.prune_batch_size)
        cancel_watch = CancelWatch(db, self.worker_id)
        self._queues = {name: QueueFetcher(name, limit) for name, limit in cfg.queues.items()}
        services = FetchServices(
            worker_id=self.worker_id,
            db=db,
            executor=executor,
            completer=completer,
            promoter=promoter,
            telemetry=self.telemetry,
            poll_interval=cfg.poll_interval.total_seconds(),
            batch_size=cfg.batch_size,
            stop=stop,
        )
        loop = asyncio.get_running_loop()
        if handle_signals:
            self._install_signals(loop)
        background: list[asyncio.Task[Any]] = []
        fetchers: list[asyncio.Task[None]] = []
        flushed = asyncio.Event()
        unwatch = self.telemetry.watch_running(self._running_now)
        unwatch_queues = self.telemetry.watch_queues(stats.current)
        try:
            await heartbeat.run_once()
            logger.info(
                "worker %s started: queues %s; tasks %s; database %s, schema %s%s",
                self.worker_id,
                ", ".join(f"{name}={limit}" for name, limit in cfg.queues.items()),
                ", ".join(sorted(self.registry)) or "(none registered)",
                redacted_url(cfg.database_url),
                cfg.schema,
                " (burst)" if burst else "",
                extra={"worker_id": self.worker_id, "queues": dict(cfg.queues)},
            )
            for name, limits in cfg.queue_limits.items():
                await db.execute(queue_set_limits, limits.params(name))
            await self._refresh_queue_settings(db)
            if await leader.run_once():
                self._record_rescue(await rescuer.run_once())
                await pruner.run_once()
                await self._snapshot(stats)
            if scheduler is not None:
                await scheduler.run_once()
            await promoter.run_once()
            background.append(loop.create_task(completer.run(flushed)))
            if not burst:
                listen_url = self._listen_url()
                if listen_url is not None:
                    self.listener = Listener(
                        listen_url,
                        channel_for(cfg.schema),
                        self._wake,
                        also={cancel_channel_for(cfg.schema): self._on_cancel_notify},
                        telemetry=self.telemetry,
                    )
                    background.append(loop.create_task(self.listener.run(stop)))
                background.append(
                    loop.create_task(self._every(cfg.poll_interval, self._promote(promoter), stop))
                )
                if scheduler is not None:
                    background.append(
                        loop.create_task(
                            self._every(cfg.poll_interval, self._schedule(scheduler), stop)
                        )
                    )
                background.append(
                    loop.create_task(
                        self._every(
                            cfg.heartbeat_interval,
                            self._maintain(
                                db,
                                heartbeat=heartbeat,
                                leader=leader,
                                rescuer=rescuer,
                                pruner=pruner,
                                cancel_watch=cancel_watch,
                                stats=stats,
                            ),
                            stop,
                        )
                    )
                )
            fetchers += [
                loop.create_task(fetcher.run(services, burst=burst))
                for fetcher in self._queues.values()
            ]
            if burst:
                await asyncio.gather(*fetchers)
                stop.set()
            else:
                await stop.wait()
                await self._settle(fetchers)
            await self._drain(executor)
            flushed.set()
            await self._await_flush(background[0])
        finally:
            stop.set()
            flushed.set()
            for task in (*fetchers, *background):
                task.cancel()
            await asyncio.gather(*fetchers, *background, return_exceptions=True)
            # Last writes are bounded: with the database gone, outcomes not written
            # stay claimed under this worker and are rescued once its heartbeat expires.
            for last_write in (completer.flush, leader.resign):
                await self._bounded(last_write(), "final write")
            if completer.pending == 0:
                await self._bounded(heartbeat.unregister(), "unregistering")
            else:
                logger.warning(
                    "%d job outcomes could not be written; their jobs will be rescued",
                    completer.pending,
                )
            executor.close()
            unwatch()
            unwatch_queues()
            self._stats = None
            if transactions is not None:
                await transactions.dispose()
            await db.dispose()
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        return self.result

    def _transactions(self) -> TransactionalSessions | None:
        """The sessions of transactional tasks, or None when the registry has none.

        Imported here so that a worker without transactional tasks never loads
        SQLAlchemy.

        Raises:
            ConfigurationError: see :class:`TransactionalSessions`.
        """
        if not self.registry.has_transactional:
            return None
        from backfill_sa.worker.transactional import TransactionalSessions

        return TransactionalSessions(
            self.registry,
            database_url=self.config.database_url,
            schema=self.config.schema,
            pooled=self.config.pooled,
            pool_size=sum(self.config.queues.values()),
        )

    async def _settle(self, fetchers: list[asyncio.Task[None]]) -> None:
        """Let each fetcher finish the claim it is in, up to the shutdown timeout.

        A claim whose reply never comes (a connection gone dark without a reset)
        must not hold the stop up for ever: it is cancelled. What it may have
        claimed stays under this worker's name and is rescued once the worker has
        unregistered. Raises what a fetcher raised.
        """
        if not fetchers:
            return
        timeout = self.config.shutdown_timeout.total_seconds()
        done, pending = await asyncio.wait(fetchers, timeout=timeout)
        for task in pending:
            logger.warning("a claim did not return within the shutdown timeout; cancelled")
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()

    def _listen_url(self) -> str | None:
        """Where to LISTEN: ``listen_url``, else ``database_url`` unless it is pooled.

        Through a transaction pooler a LISTEN lands on whichever server connection
        runs it and is lost when that connection goes back to the pool: no
        notification would ever arrive, so the worker polls instead and says so once.
        """
        cfg = self.config
        if cfg.listen_url is not None:
            return cfg.listen_url
        if not cfg.pooled:
            return cfg.database_url
        logger.warning(
            "database_url goes through a pooler (pooled=True) and no listen_url"
            " (BACKFILL_LISTEN_URL) is set: LISTEN is off; jobs are found by polling"
            " every %.3fs",
            cfg.poll_interval.total_seconds(),
        )
        return None

    async def _await_flush(self, completer_task: asyncio.Task[None]) -> None:
        """Wait for the completer to write what is left: up to the shutdown timeout,
        or not at all once a forced stop is asked for."""
        assert self._force is not None
        force = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait(
                [completer_task, force],
                timeout=self.config.shutdown_timeout.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            force.cancel()

    async def _bounded(self, write: Awaitable[None], what: str) -> None:
        """Run a shutdown write for at most a few seconds (none after a forced stop)."""
        assert self._force is not None
        timeout = 0.5 if self._force.is_set() else 5.0
        try:
            await asyncio.wait_for(write, timeout=timeout)
        except Exception as exc:  # includes the timeout
            logger.warning("%s at shutdown failed: %r", what, exc)

    def _record_rescue(self, rescue: RescueResult) -> None:
        self.result.rescued += rescue.rescued
        if rescue.by_task_queue:
            self.telemetry.record_rescued(rescue.by_task_queue)
        if rescue.dead_by_task_queue:
            reason = FailureReason.MAX_ATTEMPTS_EXCEEDED.value
            self.telemetry.record_outcomes(
                {
                    OutcomeKey(TelemetryOutcome.DEAD_LETTERED, task, queue, reason): n
                    for (task, queue), n in rescue.dead_by_task_queue.items()
                }
            )

    def _running_now(self) -> dict[str, int]:
        return {name: len(fetcher.running) for name, fetcher in self._queues.items()}

    @property
    def peak_running(self) -> dict[str, int]:
        """Most jobs of each queue seen running at once during the last run."""
        return {name: fetcher.peak for name, fetcher in self._queues.items()}

    # -- waking and stopping ---------------------------------------------------

    def _wake(self, queue: str) -> None:
        if queue == "*":
            for fetcher in self._queues.values():
                fetcher.wake.set()
            return
        target = self._queues.get(queue)
        if target is not None:
            target.wake.set()

    def _on_cancel_notify(self, payload: str) -> None:
        try:
            job_id = int(payload)
        except ValueError:
            logger.warning("ignoring a cancel notification with payload %r", payload)
            return
        self.cancel_running(job_id)

    def cancel_running(self, job_id: int) -> bool:
        """Stop job ``job_id`` if this worker runs it; return whether it does.

        Its handler sees ``ctx.cancel_requested``; an ``async def`` handler is also
        cancelled at its next ``await``. The attempt ends ``cancelled``, not retried.
        Applications call :func:`backfill_sa.jobs.cancel_job`, which reaches every
        worker; this is what a worker does when it hears of it.
        """
        executor = self._executor
        if executor is None:
            return False
        for fetcher in self._queues.values():
            for task, running_id in fetcher.running.items():
                if running_id == job_id:
                    if executor.request_cancel(job_id):
                        task.cancel()
                    return True
        return False

    # -- shutdown --------------------------------------------------------------

    async def _drain(self, executor: Executor) -> None:
        """Let running jobs finish within the shutdown timeout, then cancel the rest."""
        assert self._force is not None
        tasks = {t for fetcher in self._queues.values() for t in fetcher.running}
        if not tasks:
            return
        timeout = self.config.shutdown_timeout.total_seconds()
        logger.info("waiting up to %.0fs for %d running jobs", timeout, len(tasks))
        deadline = asyncio.get_running_loop().time() + timeout
        force = asyncio.ensure_future(self._force.wait())
        pending = set(tasks)
        try:
            while pending and not self._force.is_set():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                await asyncio.wait(
                    [*pending, force], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending = {t for t in pending if not t.done()}
        finally:
            force.cancel()
        pending = {t for t in tasks if not t.done()}
        if pending:
            logger.warning("cancelling %d jobs still running at shutdown", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(sig: signal.Signals) -> None:
            if self._stop is not None and self._stop.is_set():
                logger.warning("second %s: stopping at once", sig.name)
                self.force_stop()
            else:
                logger.info("%s: finishing running jobs, then stopping", sig.name)
                self.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)

    # -- background ------------------------------------------------------------

    async def _every(
        self, interval: timedelta, action: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        seconds = interval.total_seconds()
        while not stop.is_set():
            await wait_any(stop, timeout=seconds)
            if stop.is_set():
                return
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("background task failed; it will run again")

    def _promote(self, promoter: Promoter) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            for queue in await promoter.run_once():
                self._wake(queue)

        return action

    def _schedule(self, scheduler: CronScheduler) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            for queue in (await scheduler.run_once()).queues:
                self._wake(queue)

        return action

    def _maintain(
        self,
        db: Database,
        *,
        heartbeat: Heartbeat,
        leader: LeaderElection,
        rescuer: Rescuer,
        pruner: Pruner,
        cancel_watch: CancelWatch,
        stats: QueueStats,
    ) -> Callable[[], Awaitable[None]]:
        interval = self.config.stale_lock_cleanup_interval
        last_cleanup = time.monotonic()

        async def action() -> None:
            nonlocal last_cleanup
            await heartbeat.run_once()
            await self._refresh_queue_settings(db)
            for job_id in await cancel_watch.run_once():
                self.cancel_running(job_id)
            if not await leader.run_once():
                stats.clear()  # the new leader reports the queues
                return
            await pruner.run_once()
            await self._snapshot(stats)
            if interval is None:
                return
            if time.monotonic() - last_cleanup >= interval.total_seconds():
                last_cleanup = time.monotonic()
                self._record_rescue(await rescuer.run_once())

        return action

    async def _snapshot(self, stats: QueueStats) -> None:
        """Refresh the queue gauges' snapshot while metrics are collected; a failure
        keeps the last one and is logged (maintenance carries on)."""
        if not self.telemetry.metering:
            stats.clear()
            return
        try:
            await stats.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("taking the queue snapshot failed; keeping the last one")

    async def _refresh_queue_settings(self, db: Database) -> None:
        limited = dict.fromkeys(self._queues, False)
        for row in await db.execute(queue_settings):
            fetcher = self._queues.get(row["name"])
            if fetcher is not None:
                fetcher.set_capacity(row["concurrency"] or self.config.queues[row["name"]])
                limited[row["name"]] = bool(row["limited"])
        for name, flag in limited.items():
            self._queues[name].set_limited(flag)

    def _on_written(self, outcomes: list[Outcome]) -> None:
        if not self.telemetry.metering:
            return
        counts: Counter[OutcomeKey] = Counter(
            OutcomeKey(TelemetryOutcome(o.kind.value), o.task, o.queue, o.reason) for o in outcomes
        )
        self.telemetry.record_outcomes(counts)


class WorkerHandle:
    """A worker running in a background task (from :meth:`WorkerRunner.start`)."""

    def __init__(self, runner: WorkerRunner, task: asyncio.Task[RunResult]) -> None:
        """Wrap the task running ``runner``."""
        self.runner = runner
        self.task = task

    @property
    def running(self) -> bool:
        """Whether the worker has not finished yet."""
        return not self.task.done()

    async def stop(self, *, force: bool = False) -> RunResult:
        """Stop the worker (gracefully unless ``force``) and return its counts.

        Raises:
            Exception: whatever made the worker fail, if it failed.
        """
        if force:
            self.runner.force_stop()
        else:
            self.runner.stop()
        return await self.task

    async def wait(self) -> RunResult:
        """Wait for the worker to finish on its own and return its counts.

        Raises:
            Exception: whatever made the worker fail, if it failed.
        """
        return await self.task
