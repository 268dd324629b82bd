"""SQL for the dead-letter queue: list, count, get, requeue, delete, purge, annotate.

Every function here builds one statement from already validated arguments and runs
nothing; :mod:`backfill_sa.dlq` validates, executes (sync or async) and reads the
result. The statements use the ``backfill`` schema name, so a connection's
``schema_translate_map`` points them at a deployment's own schema.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    case,
    delete,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.sql.dml import ReturningDelete, ReturningUpdate

from backfill_sa.models import DeadLetterJob
from backfill_sa.tables import UNFINISHED_KEY_PREDICATE, dead_letter_table, jobs_table

__all__ = [
    "DeadLetterFilter",
    "RequeueOptions",
    "annotate",
    "count",
    "delete_many",
    "get",
    "purge",
    "requeue",
    "select_many",
]

_dlq: Table = dead_letter_table
_jobs: Table = jobs_table

_ISO_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
"""to_char format of ``last_requeued_at``: fixed width, so Python 3.10 can parse it."""


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead-letter entries a statement applies to; ``None`` means no condition.

    All given conditions must hold (AND). ``ids`` restricts to those entry ids.
    """

    ids: tuple[int, ...] | None = None
    task: str | None = None
    queue: str | None = None
    failure_reason: str | None = None
    failed_after: dt.datetime | None = None
    failed_before: dt.datetime | None = None

    def is_unrestricted(self) -> bool:
        """Return True when no condition is set, i.e. the filter matches every entry."""
        return self == DeadLetterFilter()


@dataclass(frozen=True)
class RequeueOptions:
    """How requeued entries become jobs; ``None`` keeps what the entry had."""

    run_at: dt.datetime | None = None
    queue_override: str | None = None
    max_attempts: int | None = None


def _conditions(where: DeadLetterFilter) -> list[ColumnElement[bool]]:
    c = _dlq.c
    conditions: list[ColumnElement[bool]] = []
    if where.ids is not None:
        conditions.append(c.id.in_(where.ids))
    if where.task is not None:
        conditions.append(c.task == where.task)
    if where.queue is not None:
        conditions.append(c.queue == where.queue)
    if where.failure_reason is not None:
        conditions.append(c.failure_reason == where.failure_reason)
    if where.failed_after is not None:
        conditions.append(c.failed_at >= where.failed_after)
    if where.failed_before is not None:
        conditions.append(c.failed_at < where.failed_before)
    return conditions


def select_many(where: DeadLetterFilter, *, limit: int, offset: int) -> Select[DeadLetterJob]:
    """Entries matching ``where``, newest first (``failed_at`` then ``id`` descending)."""
    return (
        select(DeadLetterJob)
        .where(*_conditions(where))
        .order_by(_dlq.c.failed_at.desc(), _dlq.c.id.desc())
        .limit(limit)
        .offset(offset)
    )


def count(where: DeadLetterFilter) -> Select[int]:
    """The number of entries matching ``where``."""
    return select(func.count()).select_from(_dlq).where(*_conditions(where))


def get(entry_id: int) -> Select[DeadLetterJob]:
    """The entry with id ``entry_id`` (zero or one row)."""
    return select(DeadLetterJob).where(_dlq.c.id == entry_id)


def delete_many(where: DeadLetterFilter) -> ReturningDelete[int]:
    """Delete entries matching ``where``, returning their ids.

    ORM-enabled with ``synchronize_session="fetch"``, so deleted entries loaded in
    the session are marked deleted too.
    """
    return (
        delete(DeadLetterJob)
        .where(*_conditions(where))
        .returning(_dlq.c.id)
        .execution_options(synchronize_session="fetch")
    )


def purge(older_than: dt.timedelta) -> ReturningDelete[int]:
    """Delete entries that failed more than ``older_than`` ago (database clock)."""
    return (
        delete(DeadLetterJob)
        .where(_dlq.c.failed_at < func.now() - older_than)
        .returning(_dlq.c.id)
        .execution_options(synchronize_session="fetch")
    )


def annotate(entry_id: int, notes: str) -> ReturningUpdate[int]:
    """Set the operator notes of one entry, returning its id (no row: no such entry)."""
    return (
        update(DeadLetterJob)
        .where(_dlq.c.id == entry_id)
        .values(notes=notes)
        .returning(_dlq.c.id)
        .execution_options(synchronize_session="fetch")
    )


def _requeue_metadata(entry: Any) -> ColumnElement[Any]:
    """The job's metadata: the entry's, with ``backfill`` bookkeeping merged in."""
    own = entry.c.metadata["backfill"]
    previous = case(
        (func.jsonb_typeof(own) == "object", own),
        else_=text("'{}'::jsonb"),
    )
    bookkeeping = func.jsonb_build_object(
        "requeued_count",
        entry.c.requeued_count + 1,
        "last_requeued_at",
        func.to_char(func.timezone("UTC", func.now()), _ISO_UTC),
        "dead_letter_notes",
        entry.c.notes,
        "dead_letter_id",
        entry.c.id,
        "original_job_id",
        entry.c.original_job_id,
        type_=JSONB,
    )
    merged = previous.op("||")(bookkeeping)
    return func.coalesce(entry.c.metadata, text("'{}'::jsonb")).op("||")(
        func.jsonb_build_object("backfill", merged, type_=JSONB)
    )


_UNFINISHED_KEY = text(UNFINISHED_KEY_PREDICATE)


def requeue(
    where: DeadLetterFilter, options: RequeueOptions, *, channel: str
) -> Select[int, int | None, int]:
    """Move matching entries back into ``jobs`` and wake workers, in one statement.

    Shape (one round trip, one snapshot)::

        WITH candidates AS (SELECT ... FROM dead_letter_jobs WHERE ... ORDER BY id FOR UPDATE),
             inserted AS (INSERT INTO jobs SELECT ... FROM candidates
                          ON CONFLICT (job_key) WHERE <unfinished key> DO NOTHING
                          RETURNING id, queue, metadata->'backfill'->>'dead_letter_id'),
             deleted AS (DELETE FROM dead_letter_jobs WHERE id IN (SELECT ... FROM inserted)),
             notified AS (SELECT pg_notify(:channel, queue) FROM (SELECT DISTINCT queue ...))
        SELECT candidates.id, inserted.id, (SELECT count(*) FROM notified)
        FROM candidates LEFT JOIN inserted ...

    Only entries that became jobs are deleted, so an entry whose ``job_key`` is held
    by a live job (or by another entry requeued in the same call) stays in the
    dead-letter queue and comes back with a NULL job id. ``FOR UPDATE`` on the
    candidates makes two concurrent requeues of the same entry wait for each other
    instead of creating the job twice.

    Rows: ``(dead_letter_id, job_id or None, notified_queue_count)``, by entry id.
    """
    c = _dlq.c
    candidates = (
        select(_dlq).where(*_conditions(where)).order_by(c.id).with_for_update().cte("candidates")
    )
    entry = candidates
    if options.run_at is None:
        run_at: ColumnElement[Any] = func.now()
        state: ColumnElement[Any] = literal("available")
    else:
        run_at = literal(options.run_at)
        state = case((run_at > func.now(), "scheduled"), else_="available")
    queue = entry.c.queue if options.queue_override is None else literal(options.queue_override)
    max_attempts = (
        entry.c.max_attempts if options.max_attempts is None else literal(options.max_attempts)
    )
    columns = {
        "task": entry.c.task,
        "queue": queue,
        "payload": entry.c.payload,
        "priority": entry.c.priority,
        "run_at": run_at,
        "state": state,
        "attempts": literal(0),
        "max_attempts": max_attempts,
        "job_key": entry.c.job_key,
        "last_error": entry.c.last_error,
        "retry_policy": entry.c.retry_policy,
        "metadata": _requeue_metadata(entry),
        "created_at": entry.c.original_created_at,
        "updated_at": func.now(),
    }
    j = _jobs.c
    inserted = (
        insert(_jobs)
        .from_select(list(columns), select(*columns.values()).order_by(entry.c.id.desc()))
        .on_conflict_do_nothing(index_elements=[j.job_key], index_where=_UNFINISHED_KEY)
        .returning(
            j.id,
            j.queue,
            j["metadata"]["backfill"]["dead_letter_id"]
            .astext.cast(BigInteger)
            .label("dead_letter_id"),
        )
        .cte("inserted")
    )
    deleted = (
        delete(_dlq)
        .where(c.id.in_(select(inserted.c.dead_letter_id)))
        .returning(c.id)
        .cte("deleted")
    )
    queues = select(inserted.c.queue).distinct().subquery("queues")
    notified = select(func.pg_notify(channel, queues.c.queue).label("sent")).cte("notified")
    notified_count = select(func.count()).select_from(notified).scalar_subquery()
    return (
        select(
            candidates.c.id.label("dead_letter_id"),
            inserted.c.id.label("job_id"),
            notified_count.label("notified"),
        )
        .select_from(candidates.outerjoin(inserted, inserted.c.dead_letter_id == candidates.c.id))
        .add_cte(deleted)
        .order_by(candidates.c.id)
    )
