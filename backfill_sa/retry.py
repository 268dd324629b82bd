"""Retry policies: exponential backoff with jitter, as pure functions of the attempt.

A :class:`RetryPolicy` answers two questions for the worker: may attempt ``n`` be
followed by another, and how long to wait before it. The delay before retry ``n``
(``n`` = the number of attempts already made, starting at 1) is::

    base = min(max_delay, initial_delay * multiplier ** (n - 1))
    delay = base * uniform(1 - jitter, 1 + jitter), capped at max_delay

The worker writes exactly this delay into ``run_at``. Presets mirror backfill's:
``DEFAULT`` (8 attempts, 1 s to 300 s, x2.0, 10 %), ``FAST`` (3, 100 ms to 30 s,
x2.0, 10 %), ``AGGRESSIVE`` (12, 500 ms to 600 s, x1.5, 15 %), ``CONSERVATIVE``
(5, 5 s to 1800 s, x2.5, 20 %).

Transient database errors inside the worker are retried separately, with tenacity
(see :func:`db_retrying`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from backfill_sa.errors import JobValidationError

__all__ = [
    "AGGRESSIVE",
    "CONSERVATIVE",
    "DEFAULT",
    "FAST",
    "PRESETS",
    "RetryPolicy",
]

_MAX_ATTEMPTS_LIMIT = 32767  # smallint column


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a job gets and how long to wait between them.

    Args:
        max_attempts: attempts in all, first one included (1-32767).
        initial_delay: wait before the first retry (> 0).
        max_delay: ceiling for any wait (>= initial_delay).
        multiplier: growth factor per retry (>= 1.0).
        jitter: relative spread, 0.0-1.0 (0.1 means +/- 10 %).

    Raises:
        JobValidationError: a field breaks its rule (the message names it).
    """

    max_attempts: int = 8
    initial_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(seconds=300)
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise JobValidationError("retry.max_attempts", "must be an integer")
        if not 1 <= self.max_attempts <= _MAX_ATTEMPTS_LIMIT:
            raise JobValidationError("retry.max_attempts", "must be between 1 and 32767")
        if not isinstance(self.initial_delay, timedelta) or self.initial_delay <= timedelta(0):
            raise JobValidationError("retry.initial_delay", "must be a timedelta above zero")
        if not isinstance(self.max_delay, timedelta) or self.max_delay < self.initial_delay:
            raise JobValidationError(
                "retry.max_delay", "must be a timedelta no shorter than initial_delay"
            )
        if not self.multiplier >= 1.0 or self.multiplier == float("inf"):
            raise JobValidationError("retry.multiplier", "must be a finite number >= 1.0")
        if not 0.0 <= self.jitter <= 1.0:
            raise JobValidationError("retry.jitter", "must be between 0.0 and 1.0")

    def base_delay(self, attempt: int) -> timedelta:
        """Return the delay before the retry that follows ``attempt``, without jitter.

        Args:
            attempt: attempts made so far (1 after the first failure).

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ValueError("attempt: must be 1 or more")
        initial = self.initial_delay.total_seconds()
        cap = self.max_delay.total_seconds()
        exponent = attempt - 1
        # Avoid float overflow for large exponents: once past the cap, stay there.
        try:
            seconds = initial * self.multiplier**exponent
        except OverflowError:
            seconds = cap
        return timedelta(seconds=min(cap, seconds))

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """Return the jittered delay before the retry that follows ``attempt``.

        The result lies within ``base * (1 +/- jitter)`` and never exceeds
        ``max_delay``.

        Args:
            attempt: attempts made so far (1 after the first failure).
            rng: random source (tests pass a seeded one); default ``random``.

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        base = self.base_delay(attempt).total_seconds()
        factor = 1.0 + (rng or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=min(self.max_delay.total_seconds(), base * factor))

    def should_retry(self, attempt: int) -> bool:
        """Return whether another attempt may follow attempt number ``attempt``."""
        return attempt < self.max_attempts

    def to_json(self) -> dict[str, Any]:
        """Return the policy as the JSON object stored in ``jobs.retry_policy``."""
        return {
            "max_attempts": self.max_attempts,
            "initial_delay_ms": round(self.initial_delay.total_seconds() * 1000),
            "max_delay_ms": round(self.max_delay.total_seconds() * 1000),
            "multiplier": self.multiplier,
            "jitter": self.jitter,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        """Rebuild a policy stored by :meth:`to_json`.

        Raises:
            JobValidationError: a stored field is missing or invalid.
        """
        try:
            return cls(
                max_attempts=int(data["max_attempts"]),
                initial_delay=timedelta(milliseconds=float(data["initial_delay_ms"])),
                max_delay=timedelta(milliseconds=float(data["max_delay_ms"])),
                multiplier=float(data["multiplier"]),
                jitter=float(data["jitter"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, JobValidationError):
                raise
            raise JobValidationError("retry_policy", f"stored policy is malformed: {exc}") from exc


DEFAULT = RetryPolicy()
FAST = RetryPolicy(3, timedelta(milliseconds=100), timedelta(seconds=30), 2.0, 0.1)
AGGRESSIVE = RetryPolicy(12, timedelta(milliseconds=500), timedelta(seconds=600), 1.5, 0.15)
CONSERVATIVE = RetryPolicy(5, timedelta(seconds=5), timedelta(seconds=1800), 2.5, 0.2)

PRESETS: Mapping[str, RetryPolicy] = MappingProxyType(
    {
        "default": DEFAULT,
        "fast": FAST,
        "aggressive": AGGRESSIVE,
        "conservative": CONSERVATIVE,
    }
)
"""Named presets (read-only)."""
