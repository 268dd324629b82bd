"""QueueStats: the maintenance service that takes the snapshot behind the queue gauges."""

from __future__ import annotations

from datetime import timedelta

from backfill_sa.statements.worker_sql import queue_stats_collect
from backfill_sa.telemetry import QueueSnapshot
from backfill_sa.worker.db import Database

__all__ = ["QueueStats"]


class QueueStats:
    """Counts jobs per queue and state, dead letters and live workers, in one statement.

    The runner calls :meth:`run_once` on the maintenance leader, on the heartbeat
    schedule, while metrics are collected; the gauges read :attr:`snapshot` from
    memory at collection time (see :meth:`backfill_sa.telemetry.Telemetry.watch_queues`).

    Args:
        db: the worker's database.
        heartbeat_expiry: a worker silent for longer is not counted as live.
    """

    def __init__(self, db: Database, *, heartbeat_expiry: timedelta) -> None:
        """Prepare the service; there is no snapshot until :meth:`run_once`."""
        self.db = db
        self._params = {"heartbeat_expiry_ms": round(heartbeat_expiry.total_seconds() * 1000)}
        self.snapshot: QueueSnapshot | None = None

    async def run_once(self) -> QueueSnapshot:
        """Take a snapshot now, keep it as :attr:`snapshot` and return it.

        Raises:
            asyncpg.PostgresError, OSError: the statement failed (the last snapshot stays).
        """
        rows = await self.db.execute(queue_stats_collect, self._params)
        self.snapshot = QueueSnapshot.from_rows(rows)
        return self.snapshot

    def clear(self) -> None:
        """Forget the snapshot (this worker is no longer the one reporting)."""
        self.snapshot = None

    def current(self) -> QueueSnapshot | None:
        """The last snapshot, or None: what the gauges' callbacks read."""
        return self.snapshot
