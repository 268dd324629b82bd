"""SQL the worker's telemetry snapshot runs: queue depths, oldest job, DLQ size, live workers.

One statement, run by the maintenance leader on its heartbeat schedule while metrics
are collected; the gauges read its result from memory (see
:mod:`backfill_sa.telemetry.gauges`). Each part filters on a partial index's
predicate (``state = '...'`` written into the text) so that it reads only the rows of
that state; the counts are exact at the time of the statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Interval,
    Table,
    Text,
    bindparam,
    cast,
    extract,
    func,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.sql import Executable
from sqlalchemy.sql.selectable import Select

from backfill_sa.tables import JobState, dead_letter_table, jobs_table, workers_table

__all__ = ["queue_stats_collect"]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
workers: Table = workers_table

_MS = literal_column("interval '1 millisecond'", Interval())


def _kind(name: str) -> ColumnElement[str]:
    return literal_column(f"'{name}'", Text)


def _build_collect() -> Executable:
    def per_state(state: JobState, oldest: bool) -> Select[Any]:
        literal = literal_column(f"'{state.value}'", Text)
        age = (
            cast(extract("epoch", func.now() - func.min(jobs.c.run_at)), Float)
            if oldest
            else cast(null(), Float)
        )
        return (
            select(
                _kind("jobs").label("kind"),
                jobs.c.queue.label("queue"),
                literal.label("state"),
                func.count().label("n"),
                age.label("oldest_s"),
            )
            .where(jobs.c.state == literal)
            .group_by(jobs.c.queue)
        )

    dead = select(
        _kind("dlq"),
        dlq.c.queue,
        cast(null(), Text),
        func.count(),
        cast(null(), Float),
    ).group_by(dlq.c.queue)
    live = select(
        _kind("workers"),
        cast(null(), Text),
        cast(null(), Text),
        func.count(),
        cast(null(), Float),
    ).where(
        workers.c.last_heartbeat_at
        > func.now() - bindparam("heartbeat_expiry_ms", type_=BigInteger) * _MS
    )
    return union_all(
        per_state(JobState.AVAILABLE, True),
        per_state(JobState.SCHEDULED, False),
        per_state(JobState.RUNNING, False),
        dead,
        live,
    )


queue_stats_collect = _build_collect()
"""Params: heartbeat_expiry_ms. Rows of (kind, queue, state, n, oldest_s): ``jobs``
rows per queue and state (``oldest_s``: seconds since the oldest available job's
``run_at``), ``dlq`` rows per queue, and one ``workers`` row counting live workers."""
