"""The worker's SQL on ``jobs``: claim, promote, finish, retry, dead-letter, rescue, prune.

Every statement is a single SQLAlchemy Core statement, built once at import and run
in autocommit mode (one round trip, atomic on its own). Outcome writes are fenced:
they match ``(id, lease)`` pairs and ``state = 'running'``, so a worker that lost its
claim (rescued, re-claimed by another worker) changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    Interval,
    Table,
    Text,
    all_,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.selectable import CTE, ScalarSelect, TableValuedAlias

from backfill_sa.tables import (
    JobState,
    dead_letter_table,
    jobs_table,
    queues_table,
    workers_table,
)

__all__ = [
    "CLAIM_COLUMNS",
    "job_cancel_many",
    "job_claim_batch",
    "job_complete_and_claim",
    "job_complete_many",
    "job_dead_letter_many",
    "job_find_cancel_requested",
    "job_find_stale",
    "job_promote_due",
    "job_prune_finished",
    "job_release_orphans",
    "job_retry_many",
]

jobs: Table = jobs_table
dlq: Table = dead_letter_table
queues: Table = queues_table
workers: Table = workers_table

_now = func.now()
# State literals are rendered inline, never bound: a generic prepared plan can use a
# partial index only when the predicate's constant is in the SQL text.
_RUNNING = literal_column(f"'{JobState.RUNNING.value}'", Text)
_AVAILABLE = literal_column(f"'{JobState.AVAILABLE.value}'", Text)
_SCHEDULED = literal_column(f"'{JobState.SCHEDULED.value}'", Text)
_COMPLETED = literal_column(f"'{JobState.COMPLETED.value}'", Text)
_CANCELLED = literal_column(f"'{JobState.CANCELLED.value}'", Text)
_MS = literal_column("interval '1 millisecond'", Interval())
_NOTIFY_IDS_MAX = 300
"""Most job ids named in one finish notification (a payload must stay under 8000 bytes);
a bigger batch sends an empty payload, which tells waiters to look their jobs up."""

CLAIM_COLUMNS = (
    jobs.c.id,
    jobs.c.task,
    jobs.c.queue,
    jobs.c.payload,
    jobs.c.priority,
    jobs.c.run_at,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.lease,
    jobs.c.retry_policy,
    # Most jobs carry no metadata: NULL instead of '{}' spares the worker a decode.
    func.nullif(jobs.c.metadata, literal_column("'{}'::jsonb"), type_=JSONB).label("metadata"),
    jobs.c.created_at,
    jobs.c.locked_at,
)


def _any_of(cte_column: ColumnElement[int]) -> ColumnElement[bool]:
    """``= ANY(ARRAY(SELECT column FROM cte))``: the join an UPDATE makes to its CTE.

    The worker's connections run generic plans (no planning per execution, about 40%
    of PostgreSQL's CPU per claim). A generic plan cannot know ``LIMIT $n``, guesses
    a tenth of the table and then joins the CTE to ``jobs`` with a hash over a
    sequential scan; an array of ids is fetched through the primary key whatever
    the guess. ``tests/worker/test_generic_plans.py`` checks every statement.
    """
    return any_(func.array(select(cte_column).scalar_subquery()))


def _build_claim() -> Executable:
    """Claim up to :limit available, due jobs of :queue for :worker_id."""
    paused = exists().where(queues.c.name == bindparam("claim_queue"), queues.c.paused)
    candidates = (
        select(jobs.c.id)
        .where(
            jobs.c.state == _AVAILABLE,
            jobs.c.queue == bindparam("claim_queue"),
            jobs.c.run_at <= _now,
            ~paused,
        )
        .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    return (
        update(jobs)
        .where(jobs.c.id == _any_of(candidates.c.id))
        .values(
            state=_RUNNING,
            locked_by=bindparam("worker_id"),
            locked_at=_now,
            attempts=jobs.c.attempts + 1,
            lease=jobs.c.lease + 1,
            updated_at=_now,
        )
        .returning(*CLAIM_COLUMNS)
    )


job_claim_batch = _build_claim()


"""Params: claim_queue, limit, worker_id. Returns CLAIM_COLUMNS of the claimed jobs."""


def _held(d: TableValuedAlias) -> tuple[ColumnElement[bool], ...]:
    """Rows of ``jobs`` still held under ``d``'s (id, lease) pairs, found by primary key.

    The state test is written ``IS NOT DISTINCT FROM`` (the same thing: ``state`` is
    never NULL) because PostgreSQL cannot match that form to the running index's
    predicate. With a plain ``state = 'running'`` the planner may read every entry
    of ``ix_jobs_running`` instead of fetching a handful of ids through the primary
    key, and that index holds an entry for every job run since the last VACUUM: with
    statistics taken when nothing was running, completing five jobs read 3,500
    buffers (9 ms) instead of 20 (0.05 ms), and a 200,000-job drain slowed tenfold.
    ``tests/worker/test_generic_plans.py`` holds this.
    """
    return (
        jobs.c.id == d.c.id,
        jobs.c.lease == d.c.lease,
        jobs.c.state.is_not_distinct_from(_RUNNING),
    )


def _finish_fence() -> TableValuedAlias:
    return (
        func.unnest(
            bindparam("ids", type_=ARRAY(BigInteger)),
            bindparam("leases", type_=ARRAY(Integer)),
            bindparam("keeps_ms", type_=ARRAY(BigInteger)),
            bindparam("results", type_=ARRAY(Text)),
            bindparam("errors", type_=ARRAY(Text)),
        )
        .table_valued(
            column("id", BigInteger),
            column("lease", Integer),
            column("keep_ms", BigInteger),
            column("result", Text),
            column("error", Text),
        )
        .render_derived(name="d")
    )


def _finished_ctes(state: ColumnElement[str], prefix: str) -> tuple[CTE, ScalarSelect[int]]:
    """Finish the fenced jobs: keep them as ``state`` until ``now() + keep``, or delete
    those whose keep is 0; notify once for those someone waits for (``notify_finished``).

    Returns the CTE of finished ids and a scalar that must be read for the
    notification to be sent."""
    d = _finish_fence()
    kept = (
        update(jobs)
        .where(*_held(d), d.c.keep_ms > 0)
        .values(
            state=state,
            finished_at=_now,
            prune_at=_now + d.c.keep_ms * _MS,
            result=cast(d.c.result, JSONB),
            last_error=func.coalesce(cast(d.c.error, JSONB), jobs.c.last_error),
            updated_at=_now,
        )
        .returning(jobs.c.id, jobs.c.notify_finished)
        .cte(f"{prefix}kept")
    )
    d0 = _finish_fence()
    dropped = (
        delete(jobs)
        .where(*_held(d0), d0.c.keep_ms <= 0)
        .returning(jobs.c.id, jobs.c.notify_finished)
        .cte(f"{prefix}dropped")
    )
    finished = union_all(
        select(kept.c.id, kept.c.notify_finished),
        select(dropped.c.id, dropped.c.notify_finished),
    ).cte(f"{prefix}finished")
    # Only jobs someone waits for are announced: a NOTIFY makes every listening
    # backend of the database (the workers' LISTEN connections too) run a
    # transaction to read the queue, which a drain should not pay per batch.
    watched = select(finished.c.id).where(finished.c.notify_finished).subquery(f"{prefix}watched")
    ids = func.string_agg(cast(watched.c.id, Text), literal_column("','"))
    payload = case((func.count() <= _NOTIFY_IDS_MAX, ids), else_=literal_column("''"))
    notified = (
        select(func.pg_notify(bindparam("done_channel"), payload).label("sent"))
        .select_from(watched)
        .having(func.count() > 0)
        .cte(f"{prefix}notified")
    )
    return finished, select(func.count()).select_from(notified).scalar_subquery()


def _build_finish(state: ColumnElement[str]) -> Executable:
    finished, notified = _finished_ctes(state, "")
    return select(finished.c.id, notified.label("notified"))


job_complete_many = _build_finish(_COMPLETED)
"""Params: ids, leases, keeps_ms, results (JSON text or None), errors (JSON text or
None), done_channel. Marks the succeeded jobs still held under those leases
``completed`` (kept ``keep_ms``, then pruned) or deletes those whose keep is 0, and
sends one notification on ``done_channel`` naming those a waiter asked about
(``notify_finished``); none when nobody waits. Returns (id, notified) per
finished job."""

job_cancel_many = _build_finish(_CANCELLED)
"""As :data:`job_complete_many`, for attempts that ended because cancellation was
asked for: the jobs become ``cancelled`` (never retried)."""


def _build_retry() -> Executable:
    d = (
        func.unnest(
            bindparam("ids", type_=ARRAY(BigInteger)),
            bindparam("leases", type_=ARRAY(Integer)),
            bindparam("delays_ms", type_=ARRAY(BigInteger)),
            bindparam("errors", type_=ARRAY(Text)),
            bindparam("refunds", type_=ARRAY(Integer)),
            bindparam("keeps_ms", type_=ARRAY(BigInteger)),
        )
        .table_valued(
            column("id", BigInteger),
            column("lease", Integer),
            column("delay_ms", BigInteger),
            column("error", Text),
            column("refund", Integer),
            column("keep_ms", BigInteger),
        )
        .render_derived(name="d")
    )
    new_run_at = _now + d.c.delay_ms * _MS
    # A job whose cancellation was asked for is never retried: it ends cancelled.
    cancel = jobs.c.cancel_requested_at.is_not(None)
    return (
        update(jobs)
        .where(*_held(d))
        .values(
            state=case((cancel, _CANCELLED), (d.c.delay_ms > 0, _SCHEDULED), else_=_AVAILABLE),
            finished_at=case((cancel, _now), else_=null()),
            prune_at=case((cancel, _now + d.c.keep_ms * _MS), else_=null()),
            run_at=new_run_at,
            attempts=func.greatest(jobs.c.attempts - d.c.refund, 0),
            last_error=func.coalesce(cast(d.c.error, JSONB), jobs.c.last_error),
            locked_by=None,
            locked_at=None,
            updated_at=_now,
        )
        .returning(jobs.c.id, jobs.c.queue, jobs.c.run_at, jobs.c.state)
    )


job_retry_many = _build_retry()
"""Params: ids, leases, delays_ms, errors (JSON text or None), refunds (1 = snooze),
keeps_ms.

Puts the jobs back: ``available`` now if the delay is 0, else ``scheduled`` at
``now() + delay``. A refund gives the attempt back (snooze, shutdown). A job whose
cancellation was asked for becomes ``cancelled`` instead (kept ``keep_ms``).
"""


def _metadata_item(moved: Any, path: str) -> ColumnElement[Any]:
    """The first item at jsonpath ``path`` of ``moved.metadata``, or NULL; never an error."""
    return func.jsonb_path_query_first(
        moved.c.metadata,
        literal_column(f"'{path}'", JSONPATH),
        literal_column("'{}'", JSONB),
        literal_column("true"),
        type_=JSONB,
    )


def _build_dead_letter() -> Executable:
    d = (
        func.unnest(
            bindparam("ids", type_=ARRAY(BigInteger)),
            bindparam("leases", type_=ARRAY(Integer)),
            bindparam("reasons", type_=ARRAY(Text)),
            bindparam("errors", type_=ARRAY(Text)),
        )
        .table_valued(
            column("id", BigInteger),
            column("lease", Integer),
            column("reason", Text),
            column("error", Text),
        )
        .render_derived(name="d")
    )
    moved = (
        delete(jobs)
        .where(*_held(d))
        .returning(
            *(c for c in jobs.c),
            d.c.reason.label("reason"),
            d.c.error.label("error"),
        )
        .cte("moved")
    )
    # The DLQ history comes from metadata that dlq.requeue writes; a row written by
    # other means may hold anything there, and a failed cast would fail the whole
    # batch's move again and again. jsonb_path_query_first(..., silent => true)
    # yields NULL instead of an error for a wrong type, a bad date or a big number.
    requeued = func.coalesce(
        cast(
            _metadata_item(
                moved,
                '$.backfill.requeued_count ? (@.type() == "number" && @ >= 0 && @ <= 2147483647)',
            ),
            Integer,
        ),
        0,
    )
    requeued_at = cast(
        _metadata_item(moved, "$.backfill.last_requeued_at.datetime()").op("#>>")(
            literal_column("'{}'")
        ),
        DateTime(timezone=True),
    )
    return (
        insert(dlq)
        .from_select(
            [
                dlq.c.original_job_id,
                dlq.c.task,
                dlq.c.queue,
                dlq.c.payload,
                dlq.c.priority,
                dlq.c.job_key,
                dlq.c.max_attempts,
                dlq.c.failure_reason,
                dlq.c.failure_count,
                dlq.c.last_error,
                dlq.c.retry_policy,
                dlq.c.metadata,
                dlq.c.original_created_at,
                dlq.c.original_run_at,
                dlq.c.requeued_count,
                dlq.c.last_requeued_at,
                dlq.c.notes,
            ],
            select(
                moved.c.id,
                moved.c.task,
                moved.c.queue,
                moved.c.payload,
                moved.c.priority,
                moved.c.job_key,
                moved.c.max_attempts,
                moved.c.reason,
                moved.c.attempts,
                func.coalesce(cast(moved.c.error, JSONB), moved.c.last_error),
                moved.c.retry_policy,
                moved.c.metadata,
                moved.c.created_at,
                moved.c.run_at,
                requeued,
                requeued_at,
                moved.c.metadata["backfill"]["dead_letter_notes"].astext,
            ),
        )
        .returning(dlq.c.original_job_id, dlq.c.id)
    )


job_dead_letter_many = _build_dead_letter()
"""Params: ids, leases, reasons, errors. Moves the jobs to dead_letter_jobs, in one
statement, so the move is atomic. Returns (original_job_id, id) per moved job."""


def _build_promote() -> Executable:
    due = (
        select(jobs.c.id)
        .where(jobs.c.state == _SCHEDULED, jobs.c.run_at <= _now)
        .order_by(jobs.c.run_at)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    promoted = (
        update(jobs)
        .where(jobs.c.id == _any_of(due.c.id))
        .values(state=_AVAILABLE, updated_at=_now)
        .returning(jobs.c.queue)
        .cte("promoted")
    )
    per_queue = select(promoted.c.queue).distinct().subquery("q")
    return select(
        per_queue.c.queue,
        func.pg_notify(bindparam("channel"), per_queue.c.queue),
    )


job_promote_due = _build_promote()
"""Params: limit, channel. Makes due scheduled jobs available, notifies each queue
once, and returns the queues that got work."""


def _build_find_stale() -> Executable:
    worker_alive = exists().where(
        workers.c.id == jobs.c.locked_by,
        workers.c.last_heartbeat_at
        > _now
        - bindparam("heartbeat_expiry_ms", type_=BigInteger)
        * literal_column("interval '1 millisecond'"),
    )
    too_old = jobs.c.locked_at < _now - bindparam(
        "stale_job_lock_ms", type_=BigInteger
    ) * literal_column("interval '1 millisecond'")
    return (
        select(
            jobs.c.id,
            jobs.c.lease,
            jobs.c.attempts,
            jobs.c.max_attempts,
            jobs.c.locked_by,
            jobs.c.task,
            jobs.c.queue,
        )
        .where(jobs.c.state == _RUNNING, (~worker_alive) | too_old)
        .order_by(jobs.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )


job_find_stale = _build_find_stale()
"""Params: heartbeat_expiry_ms, stale_job_lock_ms, limit. Running jobs held by a dead
worker (no heartbeat within the expiry) or claimed longer ago than the stale-lock
timeout."""


def _build_release_orphans() -> Executable:
    return (
        update(jobs)
        .where(
            jobs.c.state == _RUNNING,
            jobs.c.locked_by == bindparam("worker_id"),
            jobs.c.queue == bindparam("claim_queue"),
            jobs.c.id != all_(bindparam("known_ids", type_=ARRAY(BigInteger))),
        )
        .values(
            state=_AVAILABLE,
            attempts=func.greatest(jobs.c.attempts - 1, 0),
            locked_by=None,
            locked_at=None,
            updated_at=_now,
        )
        .returning(jobs.c.id)
    )


job_release_orphans = _build_release_orphans()
"""Params: worker_id, claim_queue, known_ids. Gives back claims this worker took but never saw
(a claim whose reply was lost with the connection), refunding the attempt."""


def _build_complete_and_claim() -> Executable:
    """Finish succeeded jobs (fenced) and claim the next batch, in one round trip."""
    finished, notified = _finished_ctes(_COMPLETED, "done_")
    claim = _build_claim()
    assert isinstance(claim, Update)
    claimed = claim.cte("claimed")
    claimed_rows = select(*claimed.c, null().cast(BigInteger).label("done_id"))
    done_rows = select(
        *(null().cast(c.type).label(c.name) for c in CLAIM_COLUMNS),
        finished.c.id.label("done_id"),
    ).where(notified >= 0)  # reading it sends the notification
    return union_all(claimed_rows, done_rows)


job_complete_and_claim = _build_complete_and_claim()
"""Params: ids, leases, keeps_ms, results, errors, done_channel (succeeded jobs to
finish, as :data:`job_complete_many`), claim_queue, limit, worker_id.

Returns the claimed jobs (``done_id`` null) followed by one row per finished job
(only ``done_id`` set). Halves the statements of a busy queue: each fetch also
completes what finished since the last one."""


def _build_prune() -> Executable:
    doomed = (
        select(jobs.c.id)
        .where(jobs.c.state.in_([_COMPLETED, _CANCELLED]), jobs.c.prune_at <= _now)
        .order_by(jobs.c.prune_at)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .with_for_update(skip_locked=True)
        .cte("doomed")
    )
    pruned = (
        delete(jobs).where(jobs.c.id == _any_of(doomed.c.id)).returning(jobs.c.id).cte("pruned")
    )
    return select(func.count().label("pruned")).select_from(pruned)


job_prune_finished = _build_prune()
"""Params: limit. Deletes up to ``limit`` finished jobs whose retention ended, oldest
first, through ``ix_jobs_prune`` (no scan, short row locks); returns how many."""


def _build_find_cancel_requested() -> Executable:
    return select(jobs.c.id).where(
        jobs.c.state == _RUNNING,
        jobs.c.locked_by == bindparam("worker_id"),
        jobs.c.cancel_requested_at.is_not(None),
    )


job_find_cancel_requested = _build_find_cancel_requested()
"""Params: worker_id. Ids of this worker's running jobs whose cancellation was asked
for (the fallback when the notification was missed)."""
