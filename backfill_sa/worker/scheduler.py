"""CronScheduler: the maintenance service that turns cron ticks into jobs.

Every worker runs it (there is no leader to wait for after a crash). A round reads
the due schedules' state, computes the ticks since each one's ``last_tick_at`` and
enqueues them with one statement per schedule that advances ``last_tick_at`` by
compare-and-set: the first worker to get there inserts the jobs, the others insert
nothing. Between ticks a round touches no database: the scheduler remembers when
each schedule is next due.

Missed ticks (all workers were down) are enqueued when they are at most
``max(fill, grace)`` old at the time of the round; older ones are skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from backfill_sa.cron import CronSchedule
from backfill_sa.errors import ConfigurationError
from backfill_sa.notify import channel_for
from backfill_sa.statements.worker_sql import cron_enqueue_ticks, cron_schedule_sync
from backfill_sa.tasks import TaskRegistry
from backfill_sa.validation import JobRow, JobSpec
from backfill_sa.worker.db import Database

__all__ = ["CronResult", "CronScheduler", "ScheduledJob", "resolve_schedules"]

logger = logging.getLogger(__name__)

UTC = dt.timezone.utc


def _utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


@dataclass
class ScheduledJob:
    """A schedule with the job row it enqueues, and when it is next due here."""

    schedule: CronSchedule
    row: JobRow
    next_due: dt.datetime | None = None
    """The next tick after the last one this worker saw handled; None: ask the database."""


def resolve_schedules(registry: TaskRegistry) -> list[ScheduledJob]:
    """Pair each of ``registry``'s cron schedules with the job it enqueues.

    The job takes the task's defaults (queue, priority, retry policy, attempts,
    serial key) where the schedule sets none.

    Raises:
        ConfigurationError: a schedule names a task the registry does not hold.
        JobValidationError: a schedule's job breaks a rule.
    """
    resolved = []
    for schedule in registry.schedules:
        task = registry.get(schedule.task)
        if task is None:
            raise ConfigurationError(
                "task",
                f"cron schedule {schedule.name!r} enqueues {schedule.task!r},"
                " which is not registered",
            )
        options = task.options
        serial_key = options.serial_key
        if callable(serial_key):
            serial_key = serial_key(schedule.payload)
        spec = JobSpec(
            schedule.task,
            schedule.payload,
            queue=options.queue if schedule.queue is None else schedule.queue,
            priority=options.priority if schedule.priority is None else schedule.priority,
            max_attempts=options.max_attempts,
            retry=options.retry,
            metadata={"backfill": {"cron": schedule.name}},
            serial_key=serial_key,
        )
        resolved.append(ScheduledJob(schedule, spec.row))
    return resolved


@dataclass
class CronResult:
    """What one scheduler round did."""

    enqueued: int = 0
    """Jobs inserted by this worker."""
    skipped: int = 0
    """Missed ticks older than the schedule's fill window."""
    lost_races: int = 0
    """Schedules another worker advanced first."""
    queues: set[str] = field(default_factory=set)
    """Queues that received jobs."""


class CronScheduler:
    """Enqueues each cron tick exactly once across all workers.

    Args:
        db: the worker's database.
        schedules: from :func:`resolve_schedules`.
        clock: returns the current time (timezone-aware); tests drive it.
        grace: a tick this late is on time whatever the schedule's ``fill``
            (a round that ran late, a restart); default one minute.
        max_ticks: most jobs one schedule inserts per statement.
    """

    def __init__(
        self,
        db: Database,
        schedules: Sequence[ScheduledJob],
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        grace: timedelta = timedelta(minutes=1),
        max_ticks: int = 1000,
    ) -> None:
        """Prepare the scheduler (nothing is read until :meth:`run_once`)."""
        if not isinstance(grace, timedelta) or grace < timedelta(0):
            raise ConfigurationError("grace", "must be a timedelta of zero or more")
        if max_ticks < 1:
            raise ConfigurationError("max_ticks", "must be at least 1")
        self.db = db
        self.entries = list(schedules)
        self.clock = clock
        self.grace = grace
        self.max_ticks = max_ticks
        self._channel = channel_for(db.schema)

    async def run_once(self, now: dt.datetime | None = None) -> CronResult:
        """Enqueue the ticks due at ``now`` (default: the clock's time); return counts.

        Raises:
            asyncpg.PostgresError, OSError: the database failed (after retries).
            ValueError: ``now`` is naive.
        """
        now = self.clock() if now is None else now
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        result = CronResult()
        due = [e for e in self.entries if e.next_due is None or e.next_due <= now]
        if not due:
            return result
        rows = await self.db.execute(
            cron_schedule_sync,
            {
                "names": [e.schedule.name for e in due],
                "expressions": [e.schedule.expression for e in due],
                "timezones": [e.schedule.timezone for e in due],
                "now": now,
            },
        )
        last_ticks = {row["name"]: row["last_tick_at"] for row in rows}
        for entry in due:
            last = last_ticks.get(entry.schedule.name)
            if last is None:  # another worker is registering it right now
                entry.next_due = None
                continue
            await self._advance(entry, last, now, result)
        if result.skipped:
            logger.warning("skipped %d cron ticks older than their fill window", result.skipped)
        return result

    async def _advance(
        self, entry: ScheduledJob, last: dt.datetime, now: dt.datetime, result: CronResult
    ) -> None:
        schedule = entry.schedule
        ticks = schedule.ticks(last, now)
        oldest = now - max(schedule.fill, self.grace)
        while ticks:
            skipped = [t for t in ticks if t < oldest]
            kept = ticks[len(skipped) :][: self.max_ticks]
            # The skipped ticks are handled too: last_tick_at moves past them.
            new_last = kept[-1] if kept else ticks[-1]
            row = entry.row
            done = await self.db.execute(
                cron_enqueue_ticks,
                {
                    "name": schedule.name,
                    "expected": last,
                    "last_tick": new_last,
                    "expression": schedule.expression,
                    "timezone": schedule.timezone,
                    "run_ats": kept,
                    "job_keys": [schedule.job_key(t) for t in kept],
                    "task": row.task,
                    "queue": row.queue,
                    "payload": row.payload,
                    "priority": row.priority,
                    "max_attempts": row.max_attempts,
                    "retry_policy": row.retry_policy,
                    "metadata": row.metadata,
                    "serial_key": row.serial_key,
                    "channel": self._channel,
                },
            )
            if not done[0]["advanced"]:
                result.lost_races += 1
                entry.next_due = None
                return
            result.skipped += len(skipped)
            result.enqueued += done[0]["inserted"]
            if done[0]["inserted"]:
                result.queues.add(row.queue)
            last = new_last
            ticks = [t for t in ticks if t > new_last]
        entry.next_due = schedule.next_tick(last)
