"""Job priorities and the predefined queue names (lower priority numbers run first)."""

from __future__ import annotations

import enum

__all__ = ["BULK", "DEAD_LETTER", "FAST", "Priority"]

FAST = "fast"
"""Queue for latency-sensitive work (default concurrency 10)."""
BULK = "bulk"
"""Queue for throughput work; the default queue (default concurrency 5)."""
DEAD_LETTER = "dead_letter"
"""Queue name recorded for jobs requeued out of the dead-letter table by default."""


class Priority(enum.IntEnum):
    """The six named priorities; any integer in the smallint range is accepted too.

    Lower numbers run first: ``EMERGENCY`` (-20) before ``BULK_LOWEST`` (10).
    """

    EMERGENCY = -20
    FAST_HIGH = -10
    FAST_DEFAULT = -5
    BULK_DEFAULT = 0
    BULK_LOW = 5
    BULK_LOWEST = 10
