"""Jobs added ORM-style (``session.add(Job(...))``): validated and announced like enqueue().

Two mapper listeners on :class:`~backfill_sa.models.Job`, registered when this module
is imported (``backfill_sa.enqueue`` imports it):

* ``before_insert`` checks the object with :class:`~backfill_sa.validation.JobSpec`'s
  rules (raising :class:`~backfill_sa.errors.JobValidationError` from the flush,
  before the row's INSERT), fills in the defaults and decides the state from
  ``run_at`` by the database clock;
* ``after_insert`` issues the NOTIFY on the flush connection when the job is
  runnable now; PostgreSQL delivers it on commit.
"""

from __future__ import annotations

from typing import Any
from typing import cast as type_cast

from sqlalchemy import Connection, DateTime, case, event, func, literal
from sqlalchemy.orm import Mapper

from backfill_sa.errors import JobValidationError
from backfill_sa.models import Job, JobState
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.priority import BULK, Priority
from backfill_sa.retry import RetryPolicy
from backfill_sa.statements.jobs_insert import JOBS_NOTIFY_IF_AVAILABLE
from backfill_sa.validation import JobSpec

__all__: list[str] = []

_STATES = frozenset(state.value for state in JobState)


def _retry_of(value: object) -> RetryPolicy | None:
    if value is None or isinstance(value, RetryPolicy):
        return value
    if isinstance(value, dict):
        return RetryPolicy.from_json(value)
    raise JobValidationError(
        "retry_policy", "must be a RetryPolicy, a dict from RetryPolicy.to_json(), or None"
    )


def _validate_added_job(_mapper: Mapper[Job], _conn: Connection, target: Job) -> None:
    """Validate a Job added ORM-style and fill in its defaults, before its INSERT."""
    retry = _retry_of(target.retry_policy)
    spec = JobSpec(
        target.task,
        target.payload,
        BULK if target.queue is None else target.queue,
        Priority.BULK_DEFAULT if target.priority is None else target.priority,
        target.run_at,
        target.max_attempts,
        retry,
        target.job_key,
        metadata=target.meta,
        serial_key=target.serial_key,
    )
    row = spec.row
    target.task, target.queue, target.priority = row.task, row.queue, row.priority
    target.max_attempts, target.job_key = row.max_attempts, row.job_key
    target.retry_policy = None if retry is None else retry.to_json()
    if target.payload is None:
        target.payload = {}
    if target.meta is None:
        target.meta = {}
    if target.state is not None:
        if target.state not in _STATES:
            raise JobValidationError("state", "must be 'available', 'scheduled' or 'running'")
        return
    if row.run_at is None:
        target.state = JobState.AVAILABLE.value
    else:
        target.run_at = row.run_at
        # Decided by the database clock, as on the enqueue() path.
        type_cast(Any, target).state = case(
            (literal(row.run_at, DateTime(timezone=True)) > func.now(), "scheduled"),
            else_="available",
        )


def _notify_added_job(_mapper: Mapper[Job], conn: Connection, target: Job) -> None:
    """Wake workers on commit when the Job just inserted is runnable now."""
    conn.execute(
        JOBS_NOTIFY_IF_AVAILABLE, {"id": target.id, "channel": channel_for(schema_of(conn))}
    )


event.listen(Job, "before_insert", _validate_added_job)
event.listen(Job, "after_insert", _notify_added_job)
