"""SQL on ``workers``, ``leader`` and ``queues`` used by the worker runtime.

Heartbeats, leader election (a row lease renewed by its holder: no advisory locks,
so PgBouncer in transaction mode keeps working) and per-queue settings.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Interval,
    Table,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql import Executable

from backfill_sa.tables import (
    job_locks_table,
    jobs_table,
    leader_table,
    queues_table,
    workers_table,
)

__all__ = [
    "QUEUE_LIMIT_COLUMNS",
    "leader_elect",
    "leader_resign",
    "queue_flow_stats",
    "queue_set_limits",
    "queue_settings",
    "schema_probe",
    "worker_delete",
    "worker_delete_expired",
    "worker_heartbeat",
]

workers: Table = workers_table
leader: Table = leader_table
queues: Table = queues_table

_MS = literal_column("interval '1 millisecond'", Interval())


def _build_heartbeat() -> Executable:
    stmt = insert(workers).values(
        id=bindparam("worker_id"),
        hostname=bindparam("hostname"),
        pid=bindparam("pid"),
        queues=bindparam("queues"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[workers.c.id], set_={"last_heartbeat_at": func.now()}
    )


worker_heartbeat = _build_heartbeat()
"""Params: worker_id, hostname, pid, queues. Registers the worker or renews it."""

worker_delete = delete(workers).where(workers.c.id == bindparam("worker_id"))
"""Params: worker_id. Unregisters a worker at clean shutdown."""

worker_delete_expired = (
    delete(workers)
    .where(
        workers.c.last_heartbeat_at < func.now() - bindparam("expiry_ms", type_=BigInteger) * _MS,
    )
    .returning(workers.c.id)
)
"""Params: expiry_ms. Forgets workers silent for longer than the expiry."""


def _build_leader_elect() -> Executable:
    expires = func.now() + bindparam("ttl_ms", type_=BigInteger) * _MS
    stmt = insert(leader).values(
        name=bindparam("name"), worker_id=bindparam("worker_id"), expires_at=expires
    )
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[leader.c.name],
        set_={
            "worker_id": excluded.worker_id,
            "expires_at": excluded.expires_at,
            "elected_at": case(
                (leader.c.worker_id == excluded.worker_id, leader.c.elected_at),
                else_=func.now(),
            ),
        },
        where=(leader.c.worker_id == excluded.worker_id) | (leader.c.expires_at < func.now()),
    ).returning(leader.c.worker_id)


leader_elect = _build_leader_elect()
"""Params: name, worker_id, ttl_ms. Takes or renews the role; returns a row only when
this worker holds it afterwards."""

leader_resign = delete(leader).where(
    leader.c.name == bindparam("name"), leader.c.worker_id == bindparam("worker_id")
)
"""Params: name, worker_id. Gives the role up at shutdown so another worker takes it."""

schema_probe = select(cast(func.to_regclass(bindparam("qualified_name", type_=Text)), Text))
"""Params: qualified_name (``"schema".jobs``). Returns the table's name, or NULL when the
schema has not been migrated."""

queue_settings = select(
    queues.c.name,
    queues.c.paused,
    queues.c.concurrency,
    (
        queues.c.global_concurrency.is_not(None)
        | queues.c.partition_concurrency.is_not(None)
        | queues.c.rate_limit.is_not(None)
    ).label("limited"),
)
"""Per-queue rows (paused flag, concurrency override, whether flow limits apply)."""

QUEUE_LIMIT_COLUMNS = (
    "global_concurrency",
    "partition_by",
    "partition_concurrency",
    "rate_limit",
    "rate_period_ms",
    "rate_limit_per_partition",
)
"""The ``queues`` columns :data:`queue_set_limits` writes (all of them, each time)."""


def _build_set_limits() -> Executable:
    stmt = insert(queues).values(
        name=bindparam("queue_name"),
        **{name: bindparam(name, type_=queues.c[name].type) for name in QUEUE_LIMIT_COLUMNS},
    )
    return stmt.on_conflict_do_update(
        index_elements=[queues.c.name],
        set_={
            **{name: stmt.excluded[name] for name in QUEUE_LIMIT_COLUMNS},
            "updated_at": func.now(),
        },
    ).returning(queues.c.name)


queue_set_limits = _build_set_limits()
"""Params: queue_name and every QUEUE_LIMIT_COLUMNS value (None clears a limit).
Creates the queue's settings row or replaces its flow limits."""


def _build_flow_stats() -> Executable:
    locks = job_locks_table
    jobs = jobs_table
    held = (
        select(locks.c.queue.label("name"), func.count().label("limited_running"))
        .group_by(locks.c.queue)
        .cte("held")
    )
    waiting = (
        select(jobs.c.queue.label("name"), func.count().label("serial_waiting"))
        .where(jobs.c.state == literal_column("'available'"), jobs.c.serial_key.is_not(None))
        .group_by(jobs.c.queue)
        .cte("serial")
    )
    names = (
        select(queues.c.name).union(select(held.c.name), select(waiting.c.name)).subquery("names")
    )
    return (
        select(
            names.c.name,
            *(queues.c[name] for name in QUEUE_LIMIT_COLUMNS),
            func.coalesce(held.c.limited_running, 0).label("limited_running"),
            func.coalesce(waiting.c.serial_waiting, 0).label("serial_waiting"),
        )
        .select_from(
            names.outerjoin(queues, queues.c.name == names.c.name)
            .outerjoin(held, held.c.name == names.c.name)
            .outerjoin(waiting, waiting.c.name == names.c.name)
        )
        .order_by(names.c.name)
    )


queue_flow_stats = _build_flow_stats()
"""Per queue with settings, flow locks or serial-keyed jobs: its limits, the jobs
running under flow control (``limited_running``) and the available serial-keyed
jobs (``serial_waiting``)."""
