"""Write SQL of the admin app: pause and resume queues, cancel jobs, wake workers.

Each function builds one SQLAlchemy Core statement and runs nothing; the app runs
each mutating request in a transaction of its own. Dead-letter actions are not here:
they go through :mod:`backfill_sa.dlq`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert

from backfill_sa.admin.queries import jobs, queues

__all__ = ["job_delete", "job_lock", "queue_notify", "queue_set_paused"]


def queue_set_paused(
    name: str, paused: bool
) -> ReturningInsert[str, bool, int | None, dt.datetime, dt.datetime]:
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


def queue_notify(channel: str, queue: str) -> Select[str]:
    """``pg_notify(channel, queue)``: wakes the queue's workers when the transaction commits."""
    return select(func.pg_notify(channel, queue))


def job_lock(job_id: int) -> Select[str]:
    """The job's ``state``, locking its row until the transaction ends.

    The lock keeps a worker from claiming the job between this read and the delete
    (claims skip locked rows).
    """
    return select(jobs.c.state).where(jobs.c.id == job_id).with_for_update()


def job_delete(job_id: int) -> ReturningDelete[int, str, str, str]:
    """Delete the job with this id, returning its ``id``, ``task``, ``queue`` and ``state``."""
    return (
        jobs.delete()
        .where(jobs.c.id == job_id)
        .returning(jobs.c.id, jobs.c.task, jobs.c.queue, jobs.c.state)
    )
