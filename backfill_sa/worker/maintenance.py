"""Maintenance services: heartbeat, leader election, promotion, stale-claim rescue,
pruning of finished jobs, and noticing cancellations asked for.

Each service is a small class whose ``run_once()`` does one round and returns what
it did; the runner only schedules them, and tests call ``run_once()`` directly.
Rescue and pruning run on the elected leader only (a row lease in ``backfill.leader``: no
session advisory locks, so PgBouncer in transaction mode keeps working).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from backfill_sa.notify import channel_for
from backfill_sa.statements.worker_sql import (
    job_dead_letter_many,
    job_find_cancel_requested,
    job_find_stale,
    job_promote_due,
    job_prune_finished,
    job_retry_many,
    leader_elect,
    leader_resign,
    worker_delete,
    worker_delete_expired,
    worker_heartbeat,
)
from backfill_sa.states import FailureReason
from backfill_sa.worker.db import Database
from backfill_sa.worker.outcomes import error_json

__all__ = [
    "CancelWatch",
    "Heartbeat",
    "LeaderElection",
    "Promoter",
    "PruneResult",
    "Pruner",
    "RescueResult",
    "Rescuer",
]

logger = logging.getLogger(__name__)

MAINTENANCE_ROLE = "maintenance"


def _ms(value: timedelta) -> int:
    return round(value.total_seconds() * 1000)


class Heartbeat:
    """Registers this worker and renews its heartbeat.

    Args:
        db: the worker's database.
        worker_id: this worker's id.
        queues: queue -> concurrency, recorded for operators.
    """

    def __init__(self, db: Database, worker_id: str, queues: Mapping[str, int]) -> None:
        """Prepare the heartbeat (nothing is written yet)."""
        self.db = db
        self.worker_id = worker_id
        self._params = {
            "worker_id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": dict(queues),
        }

    async def run_once(self) -> None:
        """Write the heartbeat (registers the worker on the first call)."""
        await self.db.execute(worker_heartbeat, self._params)

    async def unregister(self) -> None:
        """Remove this worker's row (clean shutdown)."""
        await self.db.execute(worker_delete, {"worker_id": self.worker_id})


class LeaderElection:
    """Takes or renews the maintenance role; at most one live holder at a time.

    Args:
        db: the worker's database.
        worker_id: this worker's id.
        ttl: how long the role stays taken without renewal.
    """

    def __init__(self, db: Database, worker_id: str, ttl: timedelta) -> None:
        """Prepare the election (nothing is written yet)."""
        self.db = db
        self.worker_id = worker_id
        self.ttl = ttl
        self.is_leader = False

    async def run_once(self) -> bool:
        """Try to take or keep the role; return whether this worker holds it."""
        rows = await self.db.execute(
            leader_elect,
            {"name": MAINTENANCE_ROLE, "worker_id": self.worker_id, "ttl_ms": _ms(self.ttl)},
        )
        was_leader, self.is_leader = self.is_leader, bool(rows)
        if self.is_leader and not was_leader:
            logger.info("worker %s is now the maintenance leader", self.worker_id)
        return self.is_leader

    async def resign(self) -> None:
        """Give the role up so that another worker takes it at once."""
        if self.is_leader:
            await self.db.execute(
                leader_resign, {"name": MAINTENANCE_ROLE, "worker_id": self.worker_id}
            )
            self.is_leader = False


class Promoter:
    """Makes due ``scheduled`` jobs ``available`` and notifies their queues.

    Every worker runs it (it is cheap and uses SKIP LOCKED), so scheduled jobs and
    retries are picked up within one poll interval of their ``run_at``.

    Args:
        db: the worker's database.
        batch: most jobs promoted per round.
    """

    def __init__(self, db: Database, batch: int = 1000) -> None:
        """Prepare the promoter."""
        self.db = db
        self.batch = batch
        self._channel = channel_for(db.schema)

    async def run_once(self) -> set[str]:
        """Promote what is due; return the queues that received jobs."""
        rows = await self.db.execute(
            job_promote_due, {"limit": self.batch, "channel": self._channel}
        )
        return {row[0] for row in rows}


@dataclass
class RescueResult:
    """What one rescue round did."""

    rescued: int = 0
    dead_lettered: int = 0
    workers_forgotten: int = 0
    by_task_queue: dict[tuple[str, str], int] = field(default_factory=dict)


class Rescuer:
    """Returns claims of dead or stale workers to the queue (leader only).

    A claim is stale when its worker's heartbeat is older than ``heartbeat_expiry``
    or when it is older than ``stale_job_lock_timeout`` whatever the heartbeat says.
    The attempt it used stays counted: the job becomes available at once, or goes to
    the dead-letter queue when its attempts are used up. The writes are fenced by the
    lease, so a worker that finishes meanwhile wins and nothing runs twice.

    Args:
        db: the worker's database.
        heartbeat_expiry: silence after which a worker counts as dead.
        stale_job_lock_timeout: age after which any claim is rescued.
        batch: most jobs handled per round.
        keep_ms: ``(task, queue) -> ms`` a job is kept if it ends cancelled (a rescued
            job whose cancellation was asked for is not retried); default: 24 h.
    """

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_expiry: timedelta,
        stale_job_lock_timeout: timedelta,
        batch: int = 1000,
        keep_ms: Callable[[str, str], int] | None = None,
    ) -> None:
        """Prepare the rescuer."""
        self.db = db
        self.keep_ms = keep_ms or (lambda _task, _queue: 86_400_000)
        self.heartbeat_expiry = heartbeat_expiry
        self.stale_job_lock_timeout = stale_job_lock_timeout
        self.batch = batch

    async def run_once(self) -> RescueResult:
        """Rescue one batch of stale claims and forget long-dead workers."""
        result = RescueResult()
        rows = await self.db.execute(
            job_find_stale,
            {
                "heartbeat_expiry_ms": _ms(self.heartbeat_expiry),
                "stale_job_lock_ms": _ms(self.stale_job_lock_timeout),
                "limit": self.batch,
            },
        )
        retry = [r for r in rows if r["attempts"] < r["max_attempts"]]
        dead = [r for r in rows if r["attempts"] >= r["max_attempts"]]
        if retry:
            errors = [
                error_json(None, r["attempts"], message=f"worker {r['locked_by']} lost its claim")
                for r in retry
            ]
            done = await self.db.execute(
                job_retry_many,
                {
                    "ids": [r["id"] for r in retry],
                    "leases": [r["lease"] for r in retry],
                    "delays_ms": [0] * len(retry),
                    "errors": errors,
                    "refunds": [0] * len(retry),
                    "keeps_ms": [self.keep_ms(r["task"], r["queue"]) for r in retry],
                },
            )
            result.rescued = len(done)
            rescued_ids = {row["id"] for row in done}
            for r in retry:
                if r["id"] in rescued_ids:
                    key = (r["task"], r["queue"])
                    result.by_task_queue[key] = result.by_task_queue.get(key, 0) + 1
        if dead:
            done = await self.db.execute(
                job_dead_letter_many,
                {
                    "ids": [r["id"] for r in dead],
                    "leases": [r["lease"] for r in dead],
                    "reasons": [FailureReason.MAX_ATTEMPTS_EXCEEDED.value] * len(dead),
                    "errors": [
                        error_json(
                            None, r["attempts"], message=f"worker {r['locked_by']} lost its claim"
                        )
                        for r in dead
                    ],
                },
            )
            result.dead_lettered = len(done)
        forgotten = await self.db.execute(
            worker_delete_expired, {"expiry_ms": _ms(self.heartbeat_expiry) * 10}
        )
        result.workers_forgotten = len(forgotten)
        if result.rescued or result.dead_lettered:
            logger.warning(
                "rescued %d stale job claims (%d dead-lettered)",
                result.rescued,
                result.dead_lettered,
                extra={"rescued": result.rescued, "dead_lettered": result.dead_lettered},
            )
        return result


@dataclass
class PruneResult:
    """What one pruning round did."""

    pruned: int = 0
    statements: int = 0


class Pruner:
    """Deletes finished jobs whose retention ended (leader only), in bounded batches.

    Each statement deletes at most ``batch`` rows found through ``ix_jobs_prune``
    (oldest ``prune_at`` first, ``SKIP LOCKED``), in its own short transaction; one
    round runs at most ``max_statements`` of them, so no lock is held long and the
    round ends even while jobs finish faster than they are pruned.

    Args:
        db: the worker's database.
        batch: most rows deleted per statement.
        max_statements: most statements per round.
    """

    def __init__(self, db: Database, *, batch: int = 1000, max_statements: int = 10) -> None:
        """Prepare the pruner."""
        self.db = db
        self.batch = batch
        self.max_statements = max_statements

    async def run_once(self) -> PruneResult:
        """Prune until nothing is due or ``max_statements`` ran; return the counts."""
        result = PruneResult()
        while result.statements < self.max_statements:
            rows = await self.db.execute(job_prune_finished, {"limit": self.batch})
            result.statements += 1
            pruned = int(rows[0][0])
            result.pruned += pruned
            if pruned < self.batch:
                break
        return result


class CancelWatch:
    """Finds this worker's running jobs whose cancellation was asked for.

    The cancel notification normally arrives first; this is the fallback for one
    missed while the LISTEN connection was down (run with the heartbeat).

    Args:
        db: the worker's database.
        worker_id: this worker's id.
    """

    def __init__(self, db: Database, worker_id: str) -> None:
        """Prepare the watch."""
        self.db = db
        self.worker_id = worker_id

    async def run_once(self) -> list[int]:
        """Return the ids of this worker's running jobs asked to stop."""
        rows = await self.db.execute(job_find_cancel_requested, {"worker_id": self.worker_id})
        return [int(row[0]) for row in rows]
