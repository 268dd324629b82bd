"""Job states and dead-letter reasons: the words the tables, the worker and the API share.

Standard library only, so that the worker can use them without loading SQLAlchemy.
The state machine is drawn in ``docs/state_machine.md``.
"""

from __future__ import annotations

import enum

__all__ = ["FINISHED_STATES", "UNFINISHED_STATES", "FailureReason", "JobState"]


class JobState(str, enum.Enum):
    """States a row in ``backfill.jobs`` can be in."""

    AVAILABLE = "available"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


UNFINISHED_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RUNNING)
"""States of a job that may still run."""

FINISHED_STATES = (JobState.COMPLETED, JobState.CANCELLED)
"""States of a finished job kept for its retention period (then pruned)."""


class FailureReason(str, enum.Enum):
    """Why a job ended in the dead-letter queue."""

    MAX_ATTEMPTS_EXCEEDED = "max_attempts_exceeded"
    PERMANENT_ERROR = "permanent_error"
    UNKNOWN_TASK = "unknown_task"
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_JOB = "invalid_job"
    """The row itself is malformed (``retry_policy`` or ``metadata`` not of the shape
    backfill_sa writes): written by something other than backfill_sa's enqueue."""
