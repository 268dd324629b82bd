"""Read-only SQL of the admin app: queue statistics, job listings, workers, overview.

Every function builds one SQLAlchemy Core statement from validated arguments and runs
nothing; :mod:`backfill_sa.admin.app` executes them. The statements name the
``backfill`` schema, so the connection's ``schema_translate_map`` points them at a
deployment's own schema. Ages and liveness are computed with the database clock, so a
browser or server with a skewed clock still sees the truth.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Double,
    Select,
    Table,
    Text,
    case,
    cast,
    false,
    func,
    literal_column,
    null,
    select,
    union,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

from backfill_sa.models import (
    JobState,
    dead_letter_table,
    jobs_table,
    queues_table,
    workers_table,
)

__all__ = [
    "JobFilter",
    "job_count",
    "job_list",
    "overview_counts",
    "queue_stats",
    "schema_has_tables",
    "worker_list",
]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
queues: Table = queues_table
workers: Table = workers_table

_now = func.now()


def _state(state: JobState) -> ColumnElement[str]:
    # Rendered inline, as the worker's statements do: a partial index on a state can
    # only be used when the constant is in the SQL text.
    return literal_column(f"'{state.value}'", Text)


def _seconds_since(moment: ColumnElement[dt.datetime]) -> ColumnElement[float | None]:
    """Seconds from ``moment`` to now, as a float, never negative; null stays null."""
    seconds = func.greatest(cast(func.extract("epoch", _now - moment), Double), 0.0)
    return case((moment.is_(None), null()), else_=seconds)


def _alive(expiry: dt.timedelta) -> ColumnElement[bool]:
    return workers.c.last_heartbeat_at >= _now - expiry


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing shows; ``None`` means no condition, all given must hold."""

    queue: str | None = None
    state: JobState | None = None
    task: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """Return the WHERE conditions of this filter."""
        found: list[ColumnElement[bool]] = []
        if self.queue is not None:
            found.append(jobs.c.queue == self.queue)
        if self.state is not None:
            found.append(jobs.c.state == _state(self.state))
        if self.task is not None:
            found.append(jobs.c.task == self.task)
        return found


def queue_stats() -> Select[str, int, int, int, float | None, bool, int | None, int]:
    """One row per known queue: job counts by state, backlog age, settings, dead letters.

    A queue is known when it has jobs, a row in ``queues`` (settings) or dead-letter
    entries. Columns: ``name``, ``available``, ``scheduled``, ``running``,
    ``oldest_available_age_seconds`` (how long the longest-waiting runnable job has
    been due; null when none is), ``paused``, ``concurrency``, ``dead_letters``.
    Counting reads the whole jobs table (one scan, however many queues).
    """
    state = jobs.c.state
    counts = (
        select(
            jobs.c.queue.label("name"),
            func.count().filter(state == _state(JobState.AVAILABLE)).label("available"),
            func.count().filter(state == _state(JobState.SCHEDULED)).label("scheduled"),
            func.count().filter(state == _state(JobState.RUNNING)).label("running"),
            func.min(jobs.c.run_at).filter(state == _state(JobState.AVAILABLE)).label("oldest"),
        )
        .group_by(jobs.c.queue)
        .cte("job_counts")
    )
    dead = (
        select(dlq.c.queue.label("name"), func.count().label("dead_letters"))
        .group_by(dlq.c.queue)
        .cte("dead_counts")
    )
    names = union(select(counts.c.name), select(queues.c.name), select(dead.c.name)).subquery(
        "names"
    )
    return (
        select(
            names.c.name,
            func.coalesce(counts.c.available, 0).label("available"),
            func.coalesce(counts.c.scheduled, 0).label("scheduled"),
            func.coalesce(counts.c.running, 0).label("running"),
            _seconds_since(counts.c.oldest).label("oldest_available_age_seconds"),
            func.coalesce(queues.c.paused, false()).label("paused"),
            queues.c.concurrency,
            func.coalesce(dead.c.dead_letters, 0).label("dead_letters"),
        )
        .select_from(
            names.outerjoin(counts, counts.c.name == names.c.name)
            .outerjoin(queues, queues.c.name == names.c.name)
            .outerjoin(dead, dead.c.name == names.c.name)
        )
        .order_by(names.c.name)
    )


def overview_counts(worker_expiry: dt.timedelta) -> Select[dt.datetime, int, int, int]:
    """One row: the database's ``now``, dead letters, live workers, all workers.

    A worker is live when its last heartbeat is younger than ``worker_expiry``.
    """
    total = select(func.count()).select_from(workers).scalar_subquery()
    alive = select(func.count()).select_from(workers).where(_alive(worker_expiry))
    return select(
        _now.label("now"),
        select(func.count()).select_from(dlq).scalar_subquery().label("dead_letters"),
        alive.scalar_subquery().label("workers_alive"),
        total.label("workers_total"),
    )


_JOB_SUMMARY = (
    jobs.c.id,
    jobs.c.task,
    jobs.c.queue,
    jobs.c.state,
    jobs.c.priority,
    jobs.c.run_at,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.job_key,
    jobs.c.locked_by,
    jobs.c.locked_at,
    jobs.c.created_at,
    jobs.c.updated_at,
    jobs.c.last_error["type"].astext.label("error_type"),
    jobs.c.last_error["message"].astext.label("error_message"),
)
"""Listing columns: no payload, metadata or traceback, which may be large."""


def job_list(where: JobFilter, *, limit: int, offset: int) -> Select[Unpack[tuple[Any, ...]]]:
    """Job summaries matching ``where`` in claim order (priority, run_at, id).

    Claim order is the order in which workers take available jobs, so the first
    page of ``state=available`` is what runs next.
    """
    return (
        select(*_JOB_SUMMARY)
        .where(*where.conditions())
        .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
        .limit(limit)
        .offset(offset)
    )


def job_count(where: JobFilter) -> Select[int]:
    """The number of jobs matching ``where``."""
    return select(func.count()).select_from(jobs).where(*where.conditions())


def worker_list(worker_expiry: dt.timedelta) -> Select[Unpack[tuple[Any, ...]]]:
    """Registered workers, oldest first, with liveness and their running jobs.

    Columns: the ``workers`` row, ``alive`` (heartbeat younger than
    ``worker_expiry``), ``seconds_since_heartbeat`` and ``running`` (jobs this
    worker holds now).
    """
    running = (
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.state == _state(JobState.RUNNING), jobs.c.locked_by == workers.c.id)
        .scalar_subquery()
    )
    return select(
        workers.c.id,
        workers.c.hostname,
        workers.c.pid,
        workers.c.queues,
        workers.c.started_at,
        workers.c.last_heartbeat_at,
        _alive(worker_expiry).label("alive"),
        _seconds_since(workers.c.last_heartbeat_at).label("seconds_since_heartbeat"),
        running.label("running"),
    ).order_by(workers.c.started_at, workers.c.id)


def schema_has_tables(schema: str) -> Select[bool]:
    """One boolean: whether ``schema`` holds backfill_sa's jobs table."""
    name = f'"{schema}".{jobs_table.name}'
    return select(func.to_regclass(name).is_not(None))
