"""The flow-controlled claim: serial keys, global and per-partition concurrency, rate limits.

A fetcher runs :data:`job_claim_limited` instead of the plain claim only for a queue
that has limits (a ``queues`` row with ``global_concurrency``,
``partition_concurrency`` or ``rate_limit``) or serial-keyed jobs, so unlimited
queues keep the plain claim's cost. It is one statement, safe under any number of
concurrent workers without advisory locks (PgBouncer-safe):

1. ``candidates``: available, due jobs of the queue in claim order, skipping jobs
   whose serial key is held or that are not the first waiting job of their key,
   and jobs of a partition that is full; ``FOR UPDATE SKIP LOCKED``.
2. Concurrency slots believed free are numbered and handed out in claim order: the
   queue's slots ``1..global_concurrency``, each partition's
   ``1..partition_concurrency``.
3. Rate tokens: a limit of N per period is N rows per bucket (the queue, or the
   queue and a partition) in ``rate_tokens``, each usable once per period; the
   ``INSERT ... ON CONFLICT DO UPDATE ... WHERE free_at <= now()`` takes a
   token only if it is free in the latest committed state.
4. One ``job_locks`` row per job holding its slots and serial key, inserted with
   ``ON CONFLICT DO NOTHING``: unique indexes on (queue, slot), (queue, part,
   part_slot) and (serial_key) make a job get all its locks or none, whatever other
   workers committed meanwhile. Only jobs whose row went in are claimed.

The locks are released by a trigger on ``jobs`` when a job claimed this way
(``limited``) leaves ``running``, whichever statement moves it. A token taken for a
job that then lost its lock race is spent for one period: under contention the rate
can fall below the limit, never above it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Interval,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Executable

from backfill_sa.statements.jobs_runtime import CLAIM_COLUMNS, complete_and_claim
from backfill_sa.tables import (
    JobState,
    job_locks_table,
    jobs_table,
    queues_table,
    rate_tokens_table,
)

__all__ = ["job_claim_limited", "job_complete_and_claim_limited"]

jobs: Table = jobs_table
locks: Table = job_locks_table
queues: Table = queues_table
tokens: Table = rate_tokens_table

_now = func.now()
_RUNNING = literal_column(f"'{JobState.RUNNING.value}'", Text)
_AVAILABLE = literal_column(f"'{JobState.AVAILABLE.value}'", Text)
_MS = literal_column("interval '1 millisecond'", Interval())


def _setting(column: Any) -> ColumnElement[Any]:
    """One of the queue's settings (NULL when the queue has no row)."""
    return select(column).where(queues.c.name == bindparam("claim_queue")).scalar_subquery()


def _count_locks(*where: ColumnElement[bool]) -> ColumnElement[int]:
    return (
        select(func.count())
        .select_from(locks)
        .where(locks.c.queue == bindparam("claim_queue"), *where)
        .scalar_subquery()
    )


def _build_claim_limited() -> Executable:
    """Claim up to :limit jobs of :claim_queue for :worker_id within the queue's limits."""
    queue = bindparam("claim_queue", type_=Text)
    global_limit = _setting(queues.c.global_concurrency)
    partition_by = _setting(queues.c.partition_by)
    part_limit = _setting(queues.c.partition_concurrency)
    rate_limit = _setting(queues.c.rate_limit)
    rate_period_ms = _setting(queues.c.rate_period_ms)
    rate_per_part = _setting(queues.c.rate_limit_per_partition)
    paused = exists().where(queues.c.name == queue, queues.c.paused)

    earlier = aliased(jobs, name="earlier")
    part = jobs.c.payload.op("->>")(partition_by)
    first_of_key = ~exists().where(
        earlier.c.serial_key == jobs.c.serial_key,
        earlier.c.state == _AVAILABLE,
        earlier.c.run_at <= _now,
        tuple_(earlier.c.priority, earlier.c.run_at, earlier.c.id)
        < tuple_(jobs.c.priority, jobs.c.run_at, jobs.c.id),
    )
    key_free = ~exists().where(locks.c.serial_key == jobs.c.serial_key)
    candidates = (
        select(
            jobs.c.id,
            jobs.c.serial_key,
            jobs.c.priority,
            jobs.c.run_at,
            part.label("part"),
        )
        .where(
            jobs.c.state == _AVAILABLE,
            jobs.c.queue == queue,
            jobs.c.run_at <= _now,
            ~paused,
            or_(jobs.c.serial_key.is_(None), and_(key_free, first_of_key)),
            or_(global_limit.is_(None), _count_locks(locks.c.slot.is_not(None)) < global_limit),
            or_(
                part_limit.is_(None),
                part.is_(None),
                _count_locks(locks.c.part == part, locks.c.part_slot.is_not(None)) < part_limit,
            ),
        )
        .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .with_for_update(skip_locked=True, of=jobs)
        .cte("candidates")
    )
    order = (candidates.c.priority, candidates.c.run_at, candidates.c.id)
    ranked = select(
        *candidates.c,
        func.row_number().over(order_by=order).label("qrank"),
        func.row_number().over(partition_by=candidates.c.part, order_by=order).label("prank"),
    ).cte("ranked")

    # Only as many free slots as a batch can use are looked for: LIMIT stops the
    # series early (no ORDER BY: generate_series yields in order, and any free
    # slots will do), so a large limit that does not bind costs nothing.
    batch = bindparam("limit", type_=Integer, literal_execute=True)
    slots = (
        func.generate_series(1, func.coalesce(global_limit, 0))
        .table_valued(column("slot", Integer))
        .render_derived(name="gs")
    )
    first_free = (
        select(slots.c.slot)
        .where(~exists().where(locks.c.queue == queue, locks.c.slot == slots.c.slot))
        .limit(batch)
        .subquery("first_free")
    )
    free_slots = select(
        first_free.c.slot,
        func.row_number().over(order_by=first_free.c.slot).label("n"),
    ).cte("free_slots")
    parts = select(ranked.c.part).where(ranked.c.part.is_not(None)).distinct().subquery("parts")
    part_slots = (
        func.generate_series(1, func.coalesce(part_limit, 0))
        .table_valued(column("part_slot", Integer))
        .render_derived(name="ps")
    )
    part_free = (
        select(part_slots.c.part_slot)
        .where(
            ~exists().where(
                locks.c.queue == queue,
                locks.c.part == parts.c.part,
                locks.c.part_slot == part_slots.c.part_slot,
            )
        )
        .limit(batch)
        .lateral("part_free")
    )
    free_part_slots = (
        select(
            parts.c.part,
            part_free.c.part_slot,
            func.row_number()
            .over(partition_by=parts.c.part, order_by=part_free.c.part_slot)
            .label("n"),
        )
        .select_from(parts.join(part_free, true()))
        .cte("free_part_slots")
    )
    bucket = case(
        (
            rate_per_part.is_(True),
            func.concat(queue, literal_column("'|'"), func.coalesce(ranked.c.part, "")),
        ),
        else_=queue,
    )
    assigned = (
        select(
            ranked.c.id,
            ranked.c.serial_key,
            ranked.c.part,
            ranked.c.qrank,
            free_slots.c.slot,
            free_part_slots.c.part_slot,
            bucket.label("bucket"),
        )
        .select_from(
            ranked.outerjoin(free_slots, free_slots.c.n == ranked.c.qrank).outerjoin(
                free_part_slots,
                and_(
                    free_part_slots.c.part == ranked.c.part,
                    free_part_slots.c.n == ranked.c.prank,
                ),
            )
        )
        .where(
            or_(global_limit.is_(None), free_slots.c.slot.is_not(None)),
            or_(
                part_limit.is_(None),
                ranked.c.part.is_(None),
                free_part_slots.c.part_slot.is_not(None),
            ),
        )
        .cte("assigned")
    )

    fresh = tokens.c.free_at > _now
    buckets = select(assigned.c.bucket).distinct().subquery("buckets")
    token_numbers = (
        func.generate_series(1, func.coalesce(rate_limit, 0))
        .table_valued(column("token", Integer))
        .render_derived(name="tn")
    )
    token_free = (
        select(token_numbers.c.token)
        .where(
            ~exists().where(
                tokens.c.bucket == buckets.c.bucket,
                tokens.c.slot == token_numbers.c.token,
                fresh,
            )
        )
        .limit(batch)
        .lateral("token_free")
    )
    free_tokens = (
        select(
            buckets.c.bucket,
            token_free.c.token,
            func.row_number()
            .over(partition_by=buckets.c.bucket, order_by=token_free.c.token)
            .label("n"),
        )
        .select_from(buckets.join(token_free, true()))
        .subquery("free_tokens")
    )
    in_bucket = select(
        assigned.c.id,
        assigned.c.bucket,
        func.row_number()
        .over(partition_by=assigned.c.bucket, order_by=assigned.c.qrank)
        .label("n"),
    ).cte("in_bucket")
    wanted = (
        select(in_bucket.c.id, free_tokens.c.bucket, free_tokens.c.token)
        .select_from(
            in_bucket.join(
                free_tokens,
                and_(
                    free_tokens.c.bucket == in_bucket.c.bucket,
                    free_tokens.c.n == in_bucket.c.n,
                ),
            )
        )
        .cte("wanted")
    )

    take = insert(tokens).from_select(
        ["bucket", "slot", "used_at", "free_at"],
        select(wanted.c.bucket, wanted.c.token, _now, _now + rate_period_ms * _MS),
    )
    taken = (
        take.on_conflict_do_update(
            index_elements=[tokens.c.bucket, tokens.c.slot],
            set_={"used_at": take.excluded.used_at, "free_at": take.excluded.free_at},
            where=~fresh,
        )
        .returning(tokens.c.bucket, tokens.c.slot)
        .cte("taken")
    )
    has_token = exists().where(
        wanted.c.id == assigned.c.id,
        taken.c.bucket == wanted.c.bucket,
        taken.c.slot == wanted.c.token,
    )
    locked = (
        insert(locks)
        .from_select(
            ["job_id", "queue", "slot", "part", "part_slot", "serial_key"],
            select(
                assigned.c.id,
                queue,
                assigned.c.slot,
                assigned.c.part,
                assigned.c.part_slot,
                assigned.c.serial_key,
            ).where(or_(rate_limit.is_(None), has_token)),
        )
        # No target: a conflict on any of the unique indexes skips the job.
        .on_conflict_do_nothing()
        .returning(locks.c.job_id)
        .cte("locked")
    )
    return (
        update(jobs)
        .where(jobs.c.id == any_(func.array(select(locked.c.job_id).scalar_subquery())))
        .values(
            state=_RUNNING,
            locked_by=bindparam("worker_id"),
            locked_at=_now,
            attempts=jobs.c.attempts + 1,
            lease=jobs.c.lease + 1,
            updated_at=_now,
            limited=true(),
        )
        .returning(*CLAIM_COLUMNS)
    )


job_claim_limited = _build_claim_limited()
"""Params: claim_queue, limit, worker_id. Returns CLAIM_COLUMNS of the claimed jobs."""

job_complete_and_claim_limited = complete_and_claim(_build_claim_limited())
"""Params: ids, leases (succeeded jobs to delete), claim_queue, limit, worker_id.

:data:`job_claim_limited` with the previous batch's successes written in the same
statement (rows as ``job_complete_and_claim``'s). The claim does not see the locks
those successes free (one snapshot): a fetcher that gets fewer jobs than it asked
for claims again at once."""
