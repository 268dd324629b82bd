"""backfill_sa: a PostgreSQL-backed priority job queue built as a SQLAlchemy 2.x extension."""

from __future__ import annotations

from backfill_sa.errors import (
    BackfillError,
    ConfigurationError,
    JobValidationError,
    PermanentError,
    RetryableError,
    Snooze,
)
from backfill_sa.priority import BULK, DEAD_LETTER, FAST, Priority
from backfill_sa.retry import RetryPolicy

__all__ = [
    "BULK",
    "DEAD_LETTER",
    "FAST",
    "BackfillError",
    "ConfigurationError",
    "JobValidationError",
    "PermanentError",
    "Priority",
    "RetryPolicy",
    "RetryableError",
    "Snooze",
]
