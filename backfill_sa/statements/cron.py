"""The worker's SQL on ``cron_schedules``: read the schedules' state, enqueue their ticks.

Each tick becomes exactly one job across all workers: the enqueue statement advances
the schedule's ``last_tick_at`` by compare-and-set and inserts the ticks' jobs only
when it did, so of two workers that saw the same state one wins and the other
inserts nothing. The jobs also carry a key per schedule and tick
(``cron:<name>:<tick>``) and the insert does nothing on a conflict, so even a row
reset by hand cannot put a tick in the queue twice while its job waits.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    SmallInteger,
    Table,
    Text,
    bindparam,
    case,
    cast,
    column,
    exists,
    func,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.sql import Executable

from backfill_sa.tables import cron_schedules_table, jobs_table

__all__ = ["cron_enqueue_ticks", "cron_schedule_states", "cron_schedule_sync"]

schedules: Table = cron_schedules_table
jobs: Table = jobs_table
_TZ = DateTime(timezone=True)
_AVAILABLE = literal_column("'available'", Text)
_SCHEDULED = literal_column("'scheduled'", Text)


def _build_sync() -> Executable:
    """Register unknown schedules (last tick = now) and return every schedule's state."""
    given = (
        func.unnest(
            bindparam("names", type_=ARRAY(Text)),
            bindparam("expressions", type_=ARRAY(Text)),
            bindparam("timezones", type_=ARRAY(Text)),
        )
        .table_valued(column("name", Text), column("expression", Text), column("timezone", Text))
        .render_derived(name="g")
    )
    ins = (
        insert(schedules)
        .from_select(
            ["name", "expression", "timezone", "last_tick_at"],
            select(
                given.c.name,
                given.c.expression,
                given.c.timezone,
                bindparam("now", type_=_TZ),
            ),
        )
        .on_conflict_do_nothing(index_elements=[schedules.c.name])
        .returning(schedules.c.name, schedules.c.last_tick_at)
        .cte("registered")
    )
    known = select(schedules.c.name, schedules.c.last_tick_at).where(
        schedules.c.name == func.any(bindparam("names", type_=ARRAY(Text)))
    )
    return union_all(select(ins.c.name, ins.c.last_tick_at), known)


cron_schedule_sync = _build_sync()
"""Params: names, expressions, timezones, now. Returns (name, last_tick_at) per schedule
(a schedule another worker is registering at the same moment may be missing)."""


def _build_enqueue() -> Executable:
    advanced = (
        update(schedules)
        .where(
            schedules.c.name == bindparam("name"),
            schedules.c.last_tick_at == bindparam("expected", type_=_TZ),
        )
        .values(
            last_tick_at=bindparam("last_tick", type_=_TZ),
            expression=bindparam("expression"),
            timezone=bindparam("timezone"),
            updated_at=func.now(),
        )
        .returning(schedules.c.name)
        .cte("advanced")
    )
    ticks = (
        func.unnest(
            bindparam("run_ats", type_=ARRAY(_TZ)),
            bindparam("job_keys", type_=ARRAY(Text)),
        )
        .table_valued(column("run_at", _TZ), column("job_key", Text))
        .render_derived(name="t")
    )
    state = case((ticks.c.run_at > func.now(), _SCHEDULED), else_=_AVAILABLE)
    inserted = (
        insert(jobs)
        .from_select(
            [
                "task",
                "queue",
                "payload",
                "priority",
                "run_at",
                "state",
                "max_attempts",
                "job_key",
                "retry_policy",
                "metadata",
                "serial_key",
            ],
            select(
                bindparam("task", type_=Text),
                bindparam("queue", type_=Text),
                cast(bindparam("payload", type_=Text), JSONB),
                bindparam("priority", type_=SmallInteger),
                ticks.c.run_at,
                state,
                bindparam("max_attempts", type_=SmallInteger),
                ticks.c.job_key,
                cast(bindparam("retry_policy", type_=Text), JSONB),
                cast(bindparam("metadata", type_=Text), JSONB),
                bindparam("serial_key", type_=Text),
            ).where(exists(select(advanced.c.name))),
        )
        # No conflict target: whatever unique index guards job keys, a tick whose job
        # still waits is not inserted twice.
        .on_conflict_do_nothing()
        .returning(jobs.c.id, jobs.c.state)
        .cte("inserted")
    )
    notified = (
        select(func.pg_notify(bindparam("channel", type_=Text), bindparam("queue", type_=Text)))
        .where(exists(select(inserted.c.id).where(inserted.c.state == _AVAILABLE)))
        .cte("notified")
    )
    count_all = literal_column("count(*)", BigInteger)
    return select(
        select(count_all).select_from(advanced).scalar_subquery().label("advanced"),
        select(count_all).select_from(inserted).scalar_subquery().label("inserted"),
        select(count_all).select_from(notified).scalar_subquery().label("notified"),
    )


cron_enqueue_ticks = _build_enqueue()
"""Params: name, expected, last_tick, expression, timezone, run_ats, job_keys, task,
queue, payload, priority, max_attempts, retry_policy, metadata, serial_key, channel.

Moves the schedule's ``last_tick_at`` from ``expected`` to ``last_tick`` and, only if
that worked, inserts one job per tick (``run_ats`` with their ``job_keys``) and
notifies the queue. Returns one row: ``advanced`` (1 when this call won, 0 when
another worker had moved the schedule already), ``inserted`` and ``notified``."""

cron_schedule_states = select(
    schedules.c.name,
    schedules.c.expression,
    schedules.c.timezone,
    schedules.c.last_tick_at,
    schedules.c.updated_at,
).order_by(schedules.c.name)
"""Every schedule a worker has run, with its last tick (for ``cron list``)."""
