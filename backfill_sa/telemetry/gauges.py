"""Gauges read at collection time: the queue snapshot a worker keeps, and the callbacks.

The SDK's metric reader calls observable instruments' callbacks at each collection,
possibly from its own thread. A callback here never touches the database: it reads
the last :class:`QueueSnapshot` a worker took on its maintenance schedule (one
statement) and running counts the worker keeps in memory, so a collection never
blocks the event loop or waits for a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics

__all__ = ["QueueSnapshot", "QueueGauges"]


@dataclass(frozen=True)
class QueueSnapshot:
    """Queue depths as one statement saw them (all exact at ``taken_at``).

    Attributes:
        jobs: jobs per ``(queue, state)`` (``available``, ``scheduled``, ``running``).
        oldest_available_s: per queue, seconds since the oldest available job became
            due (``now() - min(run_at)``); 0 for a queue with no available job.
        dead_letters: dead-letter rows per queue.
        live_workers: workers whose heartbeat is younger than the heartbeat expiry.
    """

    jobs: Mapping[tuple[str, str], int] = field(default_factory=dict)
    oldest_available_s: Mapping[str, float] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)
    live_workers: int = 0

    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> QueueSnapshot:
        """Build a snapshot from the rows of ``queue_stats_collect``.

        Each row has ``kind`` (``jobs``, ``dlq``, ``workers``), ``queue``, ``state``,
        ``n`` and ``oldest_s``.
        """
        jobs: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        dead: dict[str, int] = {}
        live = 0
        for row in rows:
            kind, queue, n = row["kind"], row["queue"], int(row["n"])
            if kind == "jobs":
                jobs[(queue, row["state"])] = n
                oldest.setdefault(queue, 0.0)
                if row["oldest_s"] is not None:
                    oldest[queue] = max(float(row["oldest_s"]), 0.0)
            elif kind == "dlq":
                dead[queue] = n
            else:
                live = n
        return cls(jobs, oldest, dead, live)


SnapshotSource = Callable[[], "QueueSnapshot | None"]


class QueueGauges:
    """The observable gauges fed by :class:`QueueSnapshot` sources.

    Several sources (several workers in one process) may be watched; the first one
    holding a snapshot is reported (only the maintenance leader takes snapshots, and
    two snapshots of one database would be the same numbers).
    """

    def __init__(self, meter: metrics.Meter) -> None:
        """Create the gauges on ``meter``."""
        self.sources: list[SnapshotSource] = []
        meter.create_observable_gauge(
            "backfill.queue.jobs",
            callbacks=[self._jobs],
            unit="{job}",
            description="Jobs per queue and state, as of the leader's last snapshot.",
        )
        meter.create_observable_gauge(
            "backfill.queue.oldest_available_age",
            callbacks=[self._oldest],
            unit="s",
            description="Age of the oldest available job per queue (since it became due).",
        )
        meter.create_observable_gauge(
            "backfill.dlq.jobs",
            callbacks=[self._dead],
            unit="{job}",
            description="Dead-letter rows per queue, as of the leader's last snapshot.",
        )
        meter.create_observable_gauge(
            "backfill.workers.live",
            callbacks=[self._live],
            unit="{worker}",
            description="Workers whose heartbeat has not expired.",
        )

    def _snapshot(self) -> QueueSnapshot | None:
        for source in list(self.sources):
            snapshot = source()
            if snapshot is not None:
                return snapshot
        return None

    def _jobs(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        return [
            metrics.Observation(n, {"queue": queue, "state": state})
            for (queue, state), n in snapshot.jobs.items()
        ]

    def _oldest(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        return [
            metrics.Observation(age, {"queue": queue})
            for queue, age in snapshot.oldest_available_s.items()
        ]

    def _dead(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        return [metrics.Observation(n, {"queue": q}) for q, n in snapshot.dead_letters.items()]

    def _live(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        return [metrics.Observation(snapshot.live_workers)]
