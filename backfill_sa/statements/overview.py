"""Read-only overview SQL: queue statistics, dead-letter totals, workers.

What the admin app's overview and the ``stats`` command show. Every function builds
one SQLAlchemy Core statement and runs nothing. The statements name the ``backfill``
schema, so the connection's ``schema_translate_map`` points them at a deployment's
own schema. Ages and liveness are computed with the database clock.
"""

from __future__ import annotations

import datetime as dt
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
from backfill_sa.tables import job_locks_table

__all__ = [
    "dead_letter_stats",
    "overview_counts",
    "queue_stats",
    "queues_served",
    "state_literal",
    "worker_list",
]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
queues: Table = queues_table
workers: Table = workers_table
job_locks: Table = job_locks_table

_now = func.now()


def state_literal(state: JobState) -> ColumnElement[str]:
    """The state as an inline SQL literal (usable by a partial index)."""
    # Rendered inline, as the worker's statements do: a partial index on a state can
    # only be used when the constant is in the SQL text.
    return literal_column(f"'{state.value}'", Text)


def _seconds_since(moment: ColumnElement[dt.datetime]) -> ColumnElement[float | None]:
    """Seconds from ``moment`` to now, as a float, never negative; null stays null."""
    seconds = func.greatest(cast(func.extract("epoch", _now - moment), Double), 0.0)
    return case((moment.is_(None), null()), else_=seconds)


def _alive(expiry: dt.timedelta) -> ColumnElement[bool]:
    return workers.c.last_heartbeat_at >= _now - expiry


def queue_stats() -> Select[Any]:
    """One row per known queue: job counts by state, backlog age, settings, dead letters.

    A queue is known when it has jobs, a row in ``queues`` (settings) or dead-letter
    entries. Columns: ``name``, ``available``, ``scheduled``, ``running``,
    ``oldest_available_age_seconds`` (how long the longest-waiting runnable job has
    been due; null when none is), ``paused``, ``concurrency``, ``dead_letters``, and
    the flow limits (``global_concurrency``, ``partition_by``,
    ``partition_concurrency``, ``rate_limit`` per ``rate_period_seconds``,
    ``rate_limit_per_partition``) with ``limited_running`` (jobs running under flow
    control, holding locks) and ``serial_waiting`` (available serial-keyed jobs).
    Counting reads the whole jobs table (one scan, however many queues).
    """
    state = jobs.c.state
    counts = (
        select(
            jobs.c.queue.label("name"),
            func.count().filter(state == state_literal(JobState.AVAILABLE)).label("available"),
            func.count().filter(state == state_literal(JobState.SCHEDULED)).label("scheduled"),
            func.count().filter(state == state_literal(JobState.RUNNING)).label("running"),
            func.min(jobs.c.run_at)
            .filter(state == state_literal(JobState.AVAILABLE))
            .label("oldest"),
            func.count()
            .filter(state == state_literal(JobState.AVAILABLE), jobs.c.serial_key.is_not(None))
            .label("serial_waiting"),
        )
        .group_by(jobs.c.queue)
        .cte("job_counts")
    )
    dead = (
        select(dlq.c.queue.label("name"), func.count().label("dead_letters"))
        .group_by(dlq.c.queue)
        .cte("dead_counts")
    )
    held = (
        select(job_locks.c.queue.label("name"), func.count().label("limited_running"))
        .group_by(job_locks.c.queue)
        .cte("lock_counts")
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
            queues.c.global_concurrency,
            queues.c.partition_by,
            queues.c.partition_concurrency,
            queues.c.rate_limit,
            (queues.c.rate_period_ms / 1000.0).label("rate_period_seconds"),
            func.coalesce(queues.c.rate_limit_per_partition, false()).label(
                "rate_limit_per_partition"
            ),
            func.coalesce(held.c.limited_running, 0).label("limited_running"),
            func.coalesce(counts.c.serial_waiting, 0).label("serial_waiting"),
        )
        .select_from(
            names.outerjoin(counts, counts.c.name == names.c.name)
            .outerjoin(queues, queues.c.name == names.c.name)
            .outerjoin(dead, dead.c.name == names.c.name)
            .outerjoin(held, held.c.name == names.c.name)
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


def worker_list(worker_expiry: dt.timedelta) -> Select[Unpack[tuple[Any, ...]]]:
    """Registered workers, oldest first, with liveness and their running jobs.

    Columns: the ``workers`` row, ``alive`` (heartbeat younger than
    ``worker_expiry``), ``seconds_since_heartbeat`` and ``running`` (jobs this
    worker holds now).
    """
    running = (
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.state == state_literal(JobState.RUNNING), jobs.c.locked_by == workers.c.id)
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


def dead_letter_stats() -> Select[str, str, str, int, dt.datetime, dt.datetime]:
    """Dead-letter entries grouped by task, queue and failure reason.

    Columns: ``task``, ``queue``, ``failure_reason``, ``entries``, ``oldest`` and
    ``newest`` (``failed_at``). Largest groups first.
    """
    return (
        select(
            dlq.c.task,
            dlq.c.queue,
            dlq.c.failure_reason,
            func.count().label("entries"),
            func.min(dlq.c.failed_at).label("oldest"),
            func.max(dlq.c.failed_at).label("newest"),
        )
        .group_by(dlq.c.task, dlq.c.queue, dlq.c.failure_reason)
        .order_by(func.count().desc(), dlq.c.task, dlq.c.queue, dlq.c.failure_reason)
    )


def queues_served() -> Select[Any]:
    """Queue names that registered workers serve (their ``queues`` keys), distinct.

    Workers unregister at a clean stop and are forgotten after a long silence, so
    this is what workers serve now or served recently.
    """
    return select(func.jsonb_object_keys(workers.c.queues).label("name")).distinct()
