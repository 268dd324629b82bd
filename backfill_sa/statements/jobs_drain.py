"""The testing toolkit's SQL on ``jobs``: list waiting jobs, claim the next, make jobs due.

:mod:`backfill_sa.testing` runs these through the test's own session, inside its
transaction. The claim is the worker's (:func:`.jobs_runtime.job_claim_where`) with
other criteria; outcomes are written by the worker's own statements
(:mod:`.jobs_runtime`), so a drained job ends exactly as a worker would leave it.

Inside one transaction ``now()`` stands still, so a job rescheduled with a backoff
never becomes due on its own: :func:`job_make_due` moves it to now when a drain is
asked to run retries or scheduled jobs.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Select,
    Text,
    any_,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.sql.dml import Update

from backfill_sa.statements.jobs_runtime import job_claim_where
from backfill_sa.tables import JobState, jobs_table, queues_table

__all__ = ["WAITING_STATES", "job_claim_next", "job_list_waiting", "job_make_due"]

jobs = jobs_table
queues = queues_table

WAITING_STATES = (JobState.AVAILABLE.value, JobState.SCHEDULED.value)
"""States of a job that has yet to run (or to run again)."""

_SCHEDULED = literal_column(f"'{JobState.SCHEDULED.value}'", Text)
_AVAILABLE = literal_column(f"'{JobState.AVAILABLE.value}'", Text)


def _selection(*, queue: bool, ids: bool) -> list[ColumnElement[bool]]:
    criteria: list[ColumnElement[bool]] = []
    if queue:
        criteria.append(jobs.c.queue == bindparam("claim_queue"))
    if ids:
        criteria.append(jobs.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
    return criteria


def job_claim_next(*, queue: bool = False, ids: bool = False) -> Update:
    """Build the drain's claim: up to :limit due jobs of unpaused queues, best first.

    Args:
        queue: only jobs of the queue bound as ``claim_queue``.
        ids: only jobs whose id is in the array bound as ``ids``.

    Params: limit, worker_id, and claim_queue / ids as selected. Returns
    ``CLAIM_COLUMNS`` of the claimed jobs.
    """
    paused = exists().where(queues.c.name == jobs.c.queue, queues.c.paused)
    return job_claim_where(*_selection(queue=queue, ids=ids), jobs.c.run_at <= func.now(), ~paused)


def job_make_due(*, queue: bool = False, ids: bool = False) -> Update:
    """Build an update that makes scheduled jobs available now (a clock jump for one job).

    Args:
        queue: only jobs of the queue bound as ``claim_queue``.
        ids: only jobs whose id is in the array bound as ``ids``.

    Returns the ids of the jobs made due.
    """
    return (
        update(jobs)
        .where(jobs.c.state == _SCHEDULED, *_selection(queue=queue, ids=ids))
        .values(state=_AVAILABLE, run_at=func.now(), updated_at=func.now())
        .returning(jobs.c.id)
    )


job_list_waiting: Select[tuple[object, ...]] = (
    select(
        jobs.c.id,
        jobs.c.task,
        jobs.c.queue,
        jobs.c.payload,
        jobs.c.priority,
        jobs.c.run_at,
        jobs.c.state,
        jobs.c.attempts,
        jobs.c.max_attempts,
        jobs.c.job_key,
        jobs.c.metadata,
    )
    .where(jobs.c.state.in_(WAITING_STATES))
    .order_by(jobs.c.id)
)
"""Every job waiting to run (available or scheduled), oldest first. No params."""
