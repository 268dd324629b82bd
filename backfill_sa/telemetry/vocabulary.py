"""Names telemetry shares with its callers: the instrumentation scope, attempt outcomes."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple, Protocol

__all__ = ["INSTRUMENTATION_NAME", "MESSAGING_SYSTEM", "ClaimedJob", "Outcome", "OutcomeKey"]

INSTRUMENTATION_NAME = "backfill_sa"
"""Name of the meter and the tracer (the instrumentation scope)."""

MESSAGING_SYSTEM = "backfill_sa"


class Outcome(str, enum.Enum):
    """How one attempt of a job ended."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    SNOOZED = "snoozed"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


class OutcomeKey(NamedTuple):
    """Key of :meth:`Telemetry.record_outcomes` counts: one per attribute set.

    ``reason`` is the dead-letter :class:`~backfill_sa.models.FailureReason` value
    and only used with :attr:`Outcome.DEAD_LETTERED`.
    """

    outcome: Outcome
    task: str
    queue: str
    reason: str | None = None


class ClaimedJob(Protocol):
    """What :meth:`Telemetry.record_claimed` reads of a claimed job: a row indexed by
    column name (``task``, ``queue``, ``run_at``, ``created_at``)."""

    def __getitem__(self, key: str) -> Any: ...
