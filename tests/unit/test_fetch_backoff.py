"""The fetcher's pause between failed rounds: doubling from the poll interval, capped, jittered."""

from __future__ import annotations

import random

from backfill_sa.worker.fetcher import MAX_BACKOFF, backoff


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


def test_pause_doubles_from_the_poll_interval_up_to_the_cap() -> None:
    middle = _Fixed(0.5)  # jitter factor 1.0
    assert [backoff(0.05, n, middle) for n in (1, 2, 3, 4)] == [0.05, 0.1, 0.2, 0.4]
    assert backoff(0.05, 10, middle) == MAX_BACKOFF
    assert backoff(0.05, 10_000, middle) == MAX_BACKOFF


def test_a_poll_interval_above_the_cap_is_never_shortened() -> None:
    assert backoff(30.0, 1, _Fixed(0.5)) == 30.0
    assert backoff(30.0, 8, _Fixed(0.5)) == 30.0


def test_jitter_spreads_the_pause_between_half_and_one_and_a_half() -> None:
    assert backoff(1.0, 1, _Fixed(0.0)) == 0.5
    assert backoff(1.0, 1, _Fixed(1.0)) == 1.5
