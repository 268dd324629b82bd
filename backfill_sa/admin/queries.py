"""Read-only SQL of the admin app: job listings (the overview's statements live in
:mod:`backfill_sa.statements.overview`, shared with the ``stats`` command, and are
re-exported here).

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
    Integer,
    Select,
    Table,
    cast,
    func,
    select,
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
from backfill_sa.statements.overview import (
    overview_counts,
    queue_stats,
    worker_list,
)
from backfill_sa.statements.overview import state_literal as _state

__all__ = [
    "JobFilter",
    "job_count",
    "job_list",
    "overview_counts",
    "queue_throughput",
    "queue_stats",
    "schema_has_tables",
    "worker_list",
]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
queues: Table = queues_table
workers: Table = workers_table

_now = func.now()


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing shows; ``None`` means no condition, all given must hold.

    ``errored``: only jobs that have (True) or have not (False) a ``last_error``.
    """

    queue: str | None = None
    state: JobState | None = None
    task: str | None = None
    errored: bool | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """Return the WHERE conditions of this filter."""
        found: list[ColumnElement[bool]] = []
        if self.queue is not None:
            found.append(jobs.c.queue == self.queue)
        if self.state is not None:
            found.append(jobs.c.state == _state(self.state))
        if self.task is not None:
            found.append(jobs.c.task == self.task)
        if self.errored is not None:
            has_error = jobs.c.last_error.is_not(None)
            found.append(has_error if self.errored else ~has_error)
        return found


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
    jobs.c.finished_at,
    jobs.c.result,
)
"""Listing columns: no payload, metadata or traceback, which may be large."""


def job_list(
    where: JobFilter, *, limit: int, offset: int, recent: bool = False
) -> Select[Unpack[tuple[Any, ...]]]:
    """Job summaries matching ``where``, in claim order or most recently changed first.

    Claim order (priority, run_at, id) is the order in which workers take available
    jobs, so the first page of ``state=available`` is what runs next. ``recent``
    orders by ``updated_at`` (the last change of state) descending, then id.
    """
    order = (
        (jobs.c.updated_at.desc(), jobs.c.id.desc())
        if recent
        else (jobs.c.priority, jobs.c.run_at, jobs.c.id)
    )
    return (
        select(*_JOB_SUMMARY)
        .where(*where.conditions())
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    )


def queue_throughput(window: dt.timedelta) -> Select[str, int, int]:
    """Completed jobs per queue and minute over the last ``window`` (database clock).

    Rows ``(queue, minutes_ago, completed)``; minute 0 is the current one. Reads the
    retained ``completed`` rows that finished in the window (jobs kept for zero
    retention are deleted on completion and not counted).
    """
    ago = cast(func.floor(func.extract("epoch", _now - jobs.c.finished_at) / 60), Integer)
    return (
        select(jobs.c.queue, ago.label("minutes_ago"), func.count().label("completed"))
        .where(
            jobs.c.state == _state(JobState.COMPLETED),
            jobs.c.finished_at >= _now - window,
        )
        .group_by(jobs.c.queue, ago)
    )


def job_count(where: JobFilter) -> Select[int]:
    """The number of jobs matching ``where``."""
    return select(func.count()).select_from(jobs).where(*where.conditions())


def schema_has_tables(schema: str) -> Select[bool]:
    """One boolean: whether ``schema`` holds backfill_sa's jobs table."""
    name = f'"{schema}".{jobs_table.name}'
    return select(func.to_regclass(name).is_not(None))
