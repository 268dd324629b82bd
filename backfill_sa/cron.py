"""Cron schedules: five-field expressions evaluated in a time zone, tick by tick.

A :class:`CronSchedule` is what ``registry.cron(...)`` records: when to enqueue which
task. It knows its ticks as UTC instants; the worker's
:class:`~backfill_sa.worker.scheduler.CronScheduler` turns each tick into exactly one
job. Parsing and matching are done by `croniter <https://pypi.org/project/croniter/>`_
(the ``cron`` extra), always on naive wall-clock times; this module maps wall-clock
times to instants in the schedule's zone (:mod:`zoneinfo`), which is where daylight
saving time is decided:

* a wall-clock time skipped by a spring-forward transition runs at the instant it
  would have had under the offset before the gap (``02:30`` on a night that jumps
  from ``02:00`` to ``03:00`` runs at ``03:30``), as RFC 5545 (iCalendar) and
  :mod:`zoneinfo`'s ``fold=0`` say; ticks that land on the same instant run once;
* a wall-clock time repeated by a fall-back transition runs once, at its first
  occurrence, unless the hour field is ``*``: a schedule that runs every hour keeps
  running through the repeated hour (``*/15 * * * *`` runs every 15 minutes of
  real time all night).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backfill_sa.errors import ConfigurationError
from backfill_sa.validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    QUEUE_MAX_LENGTH,
    check_name,
    check_priority,
    dump_json,
)

__all__ = ["CRON_EXTRA_HINT", "SHORTHANDS", "CronSchedule", "cron_job_key"]

UTC = dt.timezone.utc

SHORTHANDS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The ``@`` shorthands and the five-field expressions they stand for."""

CRON_EXTRA_HINT = "needs the croniter package: pip install 'backfill-sa[cron]'"

NAME_MAX_LENGTH = 200
_MARGIN = timedelta(hours=3)
"""Naive wall-clock times are searched this far either side of a window: more than
any zone's offset changes by across one transition."""
_HORIZONS = (timedelta(hours=2), timedelta(days=2), timedelta(days=40), timedelta(days=800))
_NEVER_HORIZON = timedelta(days=366 * 29)
"""A matching day (29 February on a Monday, say) recurs within 28 years, or never."""


def _croniter() -> Callable[..., Any]:
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ConfigurationError("cron", CRON_EXTRA_HINT) from exc
    return croniter  # type: ignore[no-any-return]


def cron_job_key(name: str, tick: dt.datetime) -> str:
    """Return the job key of ``name``'s job for ``tick`` (unique per schedule and tick)."""
    return f"cron:{name}:{tick.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


@dataclass(frozen=True)
class CronSchedule:
    """A task enqueued on a cron schedule (see :meth:`TaskRegistry.cron`).

    Args:
        name: the schedule's identity in the database (1-200 characters); ticks
            already enqueued are remembered under it, so keep it stable.
        expression: five fields (minute hour day-of-month month day-of-week) with
            ``*``, lists, ranges, steps and month/day names, or an ``@`` shorthand
            (``@hourly``, ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``,
            ``@yearly``, ``@annually``).
        task: the task to enqueue.
        payload: the JSON payload of every job (``None`` means ``{}``).
        queue: the queue; ``None`` means the task's.
        priority: the priority; ``None`` means the task's.
        timezone: IANA zone the expression is read in (default ``"UTC"``).
        fill: after downtime, ticks at most this old are still enqueued (default
            zero: only the ticks that are late by less than the scheduler's grace).

    Raises:
        ConfigurationError: the expression, zone, name or fill breaks its rule
            (needs the ``cron`` extra: without croniter every schedule is refused).
        JobValidationError: the task name, queue, priority or payload breaks its rule.
    """

    name: str
    expression: str
    task: str
    payload: Any = None
    queue: str | None = None
    priority: int | None = None
    timezone: str = "UTC"
    fill: timedelta = timedelta(0)
    fields: str = field(init=False, repr=False, compare=False)
    """The five fields the expression stands for."""
    zone: ZoneInfo = field(init=False, repr=False, compare=False)
    every_hour: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= NAME_MAX_LENGTH:
            raise ConfigurationError("name", "must be 1-200 characters")
        check_name("task", self.task, NAME_MAX_LENGTH)
        if self.queue is not None:
            check_name("queue", self.queue, QUEUE_MAX_LENGTH)
        if self.priority is not None:
            check_priority(self.priority)
        dump_json(self.payload, "payload", DEFAULT_MAX_PAYLOAD_BYTES)
        if not isinstance(self.fill, timedelta) or self.fill < timedelta(0):
            raise ConfigurationError("fill", "must be a timedelta of zero or more")
        if not isinstance(self.timezone, str):
            raise ConfigurationError("timezone", "must be an IANA zone name such as 'UTC'")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(
                "timezone", f"{self.timezone!r} is not a known IANA zone name"
            ) from exc
        fields = self._five_fields()
        croniter = _croniter()
        try:
            croniter(fields, dt.datetime(2000, 1, 1))
        except Exception as exc:  # croniter's errors: CroniterBadCronError and others
            raise ConfigurationError(
                "expression", f"{self.expression!r} is not a valid cron expression: {exc}"
            ) from exc
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "every_hour", fields.split()[1] == "*")
        try:
            first = self.next_tick(dt.datetime(2000, 1, 1, tzinfo=UTC), _NEVER_HORIZON)
        except Exception:  # croniter gives up on dates that never come (30 February)
            first = None
        if first is None:
            raise ConfigurationError("expression", f"{self.expression!r} never matches a date")

    def _five_fields(self) -> str:
        if not isinstance(self.expression, str):
            raise ConfigurationError("expression", "must be a string such as '*/5 * * * *'")
        text = " ".join(self.expression.split())
        if text.startswith("@"):
            if text.lower() not in SHORTHANDS:
                raise ConfigurationError(
                    "expression",
                    f"{self.expression!r}: shorthands are {', '.join(SHORTHANDS)}",
                )
            return SHORTHANDS[text.lower()]
        if len(text.split(" ")) != 5:
            raise ConfigurationError(
                "expression",
                f"{self.expression!r} must have five fields: minute hour day month weekday",
            )
        return text

    # -- ticks -----------------------------------------------------------------

    def _instants(self, naive: dt.datetime) -> list[dt.datetime]:
        """The UTC instants of one wall-clock match (one, or two in a repeated hour)."""
        if self.zone.key == "UTC":
            return [naive.replace(tzinfo=UTC)]
        first = naive.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if not self.every_hour:
            return [first]
        second = naive.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        # fold=1 lands later only in a repeated hour (in a gap it lands earlier).
        return [first, second] if second > first else [first]

    def _wall_clock(self, instant: dt.datetime) -> dt.datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def _matches(self, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
        """Naive wall-clock matches after ``start`` up to ``end``."""
        it = _croniter()(self.fields, start)
        while True:
            naive: dt.datetime = it.get_next(dt.datetime)
            if naive > end:
                return
            yield naive

    def ticks(self, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
        """Return the ticks after ``after`` up to and including ``until``, in order.

        Args:
            after: timezone-aware start (exclusive).
            until: timezone-aware end (inclusive).

        Returns:
            Distinct UTC instants, oldest first.
        """
        margin = timedelta(0) if self.zone.key == "UTC" else _MARGIN
        start = self._wall_clock(after) - margin - timedelta(minutes=1)
        end = self._wall_clock(until) + margin
        found = {
            instant
            for naive in self._matches(start, end)
            for instant in self._instants(naive)
            if after < instant <= until
        }
        return sorted(found)

    def next_tick(
        self, after: dt.datetime, horizon: timedelta = _HORIZONS[-1]
    ) -> dt.datetime | None:
        """Return the first tick after ``after`` (within ``horizon``), or None.

        Args:
            after: timezone-aware instant (exclusive).
            horizon: how far to look.
        """
        for step in (*(h for h in _HORIZONS if h < horizon), horizon):
            ticks = self.ticks(after, after + step)
            if ticks:
                return ticks[0]
        return None

    def job_key(self, tick: dt.datetime) -> str:
        """Return the job key of this schedule's job for ``tick``."""
        return cron_job_key(self.name, tick)
