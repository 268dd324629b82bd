"""SQL of the job and queue control API (:mod:`backfill_sa.jobs`, :mod:`backfill_sa.queues`).

Each function builds one SQLAlchemy Core statement from validated arguments and runs
nothing. The statements name the ``backfill`` schema, so the connection's
``schema_translate_map`` points them at a deployment's own schema. State constants
are written into the SQL text so that the partial indexes can serve them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Double,
    Select,
    Table,
    Text,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    null,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from backfill_sa.states import FINISHED_STATES, UNFINISHED_STATES, JobState
from backfill_sa.tables import dead_letter_table, jobs_table, queues_table

__all__ = [
    "JOB_INFO_COLUMNS",
    "JobListFilter",
    "dead_letter_find_by_job",
    "job_cancel_running",
    "job_cancel_waiting",
    "job_get",
    "job_list",
    "job_lock_state",
    "job_notify",
    "job_retry_now",
    "job_watch",
    "queue_counts",
    "queue_finished_counts",
    "queue_finished_estimate",
    "queue_set_paused",
]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
queues: Table = queues_table

_now = func.now()


def _state(state: JobState) -> ColumnElement[str]:
    return literal_column(f"'{state.value}'", Text)


def _states(states: tuple[JobState, ...]) -> list[ColumnElement[str]]:
    return [_state(s) for s in states]


JOB_INFO_COLUMNS = (
    jobs.c.id,
    jobs.c.task,
    jobs.c.queue,
    jobs.c.state,
    jobs.c.priority,
    jobs.c.payload,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.job_key,
    jobs.c.result,
    jobs.c.last_error,
    jobs.c.metadata.label("metadata"),
    jobs.c.run_at,
    jobs.c.created_at,
    jobs.c.updated_at,
    jobs.c.locked_by,
    jobs.c.locked_at,
    jobs.c.finished_at,
    jobs.c.prune_at,
    jobs.c.cancel_requested_at,
)
"""What a :class:`~backfill_sa.jobs.JobInfo` is read from."""


def job_get(job_id: int) -> Select[Any]:
    """The job with this id (zero or one row), by primary key."""
    return select(*JOB_INFO_COLUMNS).where(jobs.c.id == job_id)


def dead_letter_find_by_job(job_id: int) -> Select[Any]:
    """The newest dead-letter entry of the job that had this id (zero or one row)."""
    return select(dlq).where(dlq.c.original_job_id == job_id).order_by(dlq.c.id.desc()).limit(1)


@dataclass(frozen=True)
class JobListFilter:
    """Which jobs :func:`job_list` returns; ``None`` means no condition."""

    state: JobState | None = None
    queue: str | None = None
    task: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """Return the WHERE conditions of this filter."""
        found: list[ColumnElement[bool]] = []
        if self.state is not None:
            found.append(jobs.c.state == _state(self.state))
        if self.queue is not None:
            found.append(jobs.c.queue == self.queue)
        if self.task is not None:
            found.append(jobs.c.task == self.task)
        return found


def job_list(where: JobListFilter, *, limit: int, after: int | None) -> Select[Any]:
    """Jobs matching ``where`` with ids above ``after``, by id (keyset pagination)."""
    stmt = select(*JOB_INFO_COLUMNS).where(*where.conditions())
    if after is not None:
        stmt = stmt.where(jobs.c.id > after)
    return stmt.order_by(jobs.c.id).limit(limit)


def job_lock_state(job_id: int) -> Select[Any]:
    """The job's ``id``, ``state``, ``queue`` and ``cancel_requested_at``, locking the row
    until the transaction ends (a worker's claim skips it meanwhile)."""
    return (
        select(jobs.c.id, jobs.c.state, jobs.c.queue, jobs.c.cancel_requested_at)
        .where(jobs.c.id == job_id)
        .with_for_update()
    )


def job_cancel_waiting(job_id: int, keep: dt.timedelta) -> ReturningUpdate[Any]:
    """Cancel the job if it is waiting (available or scheduled); kept for ``keep``."""
    return (
        update(jobs)
        .where(
            jobs.c.id == job_id, jobs.c.state.in_(_states((JobState.AVAILABLE, JobState.SCHEDULED)))
        )
        .values(
            state=_state(JobState.CANCELLED),
            finished_at=_now,
            prune_at=_now + bindparam("keep", keep),
            cancel_requested_at=_now,
            updated_at=_now,
        )
        .returning(jobs.c.id, jobs.c.state)
    )


def job_cancel_running(job_id: int) -> ReturningUpdate[Any]:
    """Ask for the running job to be stopped (its worker ends it ``cancelled``)."""
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == _state(JobState.RUNNING))
        .values(cancel_requested_at=func.coalesce(jobs.c.cancel_requested_at, _now))
        .returning(jobs.c.id, jobs.c.locked_by)
    )


def job_retry_now(job_id: int) -> ReturningUpdate[Any]:
    """Make the scheduled job available now; returns its ``id`` and ``queue``."""
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == _state(JobState.SCHEDULED))
        .values(state=_state(JobState.AVAILABLE), run_at=_now, updated_at=_now)
        .returning(jobs.c.id, jobs.c.queue)
    )


def job_watch(job_id: int) -> ReturningUpdate[Any]:
    """Ask the worker that finishes this unfinished job to announce it with a NOTIFY
    (``notify_finished``); returns its ``id`` (no row when it is already finished)."""
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.in_(_states(UNFINISHED_STATES)))
        .values(notify_finished=True)
        .returning(jobs.c.id)
    )


def job_notify(channel: str, payload: str) -> Select[Any]:
    """``pg_notify(channel, payload)``, delivered when the transaction commits."""
    return select(func.pg_notify(channel, payload))


def queue_set_paused(name: str, paused: bool) -> ReturningInsert[Any]:
    """Create the queue's settings row or update it, setting ``paused``.

    Returns the row's ``name``, ``paused``, ``concurrency``, ``created_at`` and
    ``updated_at``.
    """
    stmt = insert(queues).values(name=name, paused=paused)
    return stmt.on_conflict_do_update(
        index_elements=[queues.c.name],
        set_={"paused": stmt.excluded.paused, "updated_at": func.now()},
    ).returning(
        queues.c.name,
        queues.c.paused,
        queues.c.concurrency,
        queues.c.created_at,
        queues.c.updated_at,
    )


def queue_counts(queue: str | None) -> Select[Any]:
    """Exact counts of unfinished jobs by queue and state, and the age of the oldest
    available job, plus every queue with a settings row.

    Each state is counted through its own partial index, so retained finished rows
    are never read. Columns: ``name``, ``available``, ``scheduled``, ``running``,
    ``oldest_available_age_seconds`` (how long the longest-waiting due job has been
    due; null when none is), ``paused``, ``concurrency``.
    """
    parts = []
    for state in UNFINISHED_STATES:
        part = select(
            jobs.c.queue.label("name"),
            literal_column(f"'{state.value}'", Text).label("state"),
            func.count().label("n"),
            (
                func.min(jobs.c.run_at)
                if state is JobState.AVAILABLE
                else null().cast(jobs.c.run_at.type)
            ).label("oldest"),
        ).where(jobs.c.state == _state(state))
        if queue is not None:
            part = part.where(jobs.c.queue == queue)
        parts.append(part.group_by(jobs.c.queue))
    settings = select(
        queues.c.name,
        literal_column("'settings'", Text).label("state"),
        literal_column("0", BigInteger).label("n"),
        null().cast(jobs.c.run_at.type).label("oldest"),
    )
    if queue is not None:
        settings = settings.where(queues.c.name == queue)
    counts = union_all(*parts, settings).subquery("counts")

    def total(state: JobState) -> ColumnElement[int]:
        return func.coalesce(func.sum(counts.c.n).filter(counts.c.state == state.value), 0)

    oldest = func.min(counts.c.oldest)
    age = func.greatest(cast(func.extract("epoch", _now - oldest), Double), 0.0)
    return (
        select(
            counts.c.name,
            cast(total(JobState.AVAILABLE), BigInteger).label("available"),
            cast(total(JobState.SCHEDULED), BigInteger).label("scheduled"),
            cast(total(JobState.RUNNING), BigInteger).label("running"),
            case((oldest.is_(None), null()), else_=age).label("oldest_available_age_seconds"),
            func.coalesce(func.bool_or(queues.c.paused), False).label("paused"),
            func.max(queues.c.concurrency).label("concurrency"),
        )
        .select_from(counts.outerjoin(queues, queues.c.name == counts.c.name))
        .group_by(counts.c.name)
        .order_by(counts.c.name)
    )


def queue_finished_counts(queue: str | None) -> Select[Any]:
    """Exact counts of retained finished jobs by queue and state (reads every such row
    through ``ix_jobs_prune``). Columns: ``name``, ``state``, ``n``."""
    stmt = select(jobs.c.queue.label("name"), jobs.c.state, func.count().label("n")).where(
        jobs.c.state.in_(_states(FINISHED_STATES))
    )
    if queue is not None:
        stmt = stmt.where(jobs.c.queue == queue)
    return stmt.group_by(jobs.c.queue, jobs.c.state)


_pg_class = table("pg_class", column("oid"), column("reltuples"), schema="pg_catalog")


def queue_finished_estimate(schema: str) -> Select[Any]:
    """The planner's estimate of retained finished jobs in all queues (zero or one row):
    the entry count of ``ix_jobs_prune`` as of the last VACUUM or ANALYZE."""
    index = f'"{schema}".ix_jobs_prune'
    return select(
        func.greatest(cast(_pg_class.c.reltuples, BigInteger), 0).label("estimate")
    ).where(_pg_class.c.oid == func.to_regclass(index))
