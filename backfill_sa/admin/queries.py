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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, Table, func, select

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
    "queue_stats",
    "schema_has_tables",
    "worker_list",
]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
queues: Table = queues_table
workers: Table = workers_table


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


def schema_has_tables(schema: str) -> Select[bool]:
    """One boolean: whether ``schema`` holds backfill_sa's jobs table."""
    name = f'"{schema}".{jobs_table.name}'
    return select(func.to_regclass(name).is_not(None))
