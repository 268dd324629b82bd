"""RetryPolicy: the presets' exact numbers, the backoff curve, jitter bounds, JSON, rules."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill_sa.errors import JobValidationError
from backfill_sa.retry import AGGRESSIVE, CONSERVATIVE, DEFAULT, FAST, PRESETS, RetryPolicy

ms = timedelta(milliseconds=1)
s = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("policy", "numbers"),
    [
        (DEFAULT, (8, 1 * s, 300 * s, 2.0, 0.10)),
        (FAST, (3, 100 * ms, 30 * s, 2.0, 0.10)),
        (AGGRESSIVE, (12, 500 * ms, 600 * s, 1.5, 0.15)),
        (CONSERVATIVE, (5, 5 * s, 1800 * s, 2.5, 0.20)),
    ],
    ids=["default", "fast", "aggressive", "conservative"],
)
def test_presets_have_backfills_numbers(
    policy: RetryPolicy, numbers: tuple[int, timedelta, timedelta, float, float]
) -> None:
    attempts, initial, maximum, multiplier, jitter = numbers

    assert policy.max_attempts == attempts
    assert policy.initial_delay == initial
    assert policy.max_delay == maximum
    assert policy.multiplier == multiplier
    assert policy.jitter == jitter


def test_presets_by_name() -> None:
    assert dict(PRESETS) == {
        "default": DEFAULT,
        "fast": FAST,
        "aggressive": AGGRESSIVE,
        "conservative": CONSERVATIVE,
    }
    assert RetryPolicy() == DEFAULT
    with pytest.raises(TypeError):
        PRESETS["mine"] = DEFAULT  # type: ignore[index]


@pytest.mark.parametrize(
    ("policy", "seconds"),
    [
        (DEFAULT, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]),
        (FAST, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]),
        (AGGRESSIVE, [0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875]),
        (CONSERVATIVE, [5, 12.5, 31.25, 78.125, 195.3125, 488.28125, 1220.703125, 1800]),
    ],
    ids=["default", "fast", "aggressive", "conservative"],
)
def test_base_delays_grow_by_the_multiplier_up_to_the_cap(
    policy: RetryPolicy, seconds: list[float]
) -> None:
    got = [policy.base_delay(n).total_seconds() for n in range(1, len(seconds) + 1)]

    assert got == pytest.approx(seconds, abs=1e-6)


def test_base_delay_of_a_huge_attempt_stays_at_the_cap() -> None:
    assert AGGRESSIVE.base_delay(100_000) == AGGRESSIVE.max_delay
    assert DEFAULT.base_delay(32767) == timedelta(seconds=300)


def test_attempt_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        DEFAULT.base_delay(0)
    with pytest.raises(ValueError, match="attempt"):
        DEFAULT.delay(-1)


@given(
    preset=st.sampled_from(list(PRESETS.values())),
    attempt=st.integers(1, 40),
    seed=st.integers(0, 2**32),
)
def test_jittered_delay_stays_within_the_bounds(
    preset: RetryPolicy, attempt: int, seed: int
) -> None:
    base = preset.base_delay(attempt).total_seconds()
    cap = preset.max_delay.total_seconds()

    got = preset.delay(attempt, random.Random(seed)).total_seconds()

    assert base * (1 - preset.jitter) - 1e-6 <= got <= min(cap, base * (1 + preset.jitter)) + 1e-6


def test_jitter_spreads_over_the_whole_band() -> None:
    rng = random.Random(3)
    got = [DEFAULT.delay(3, rng).total_seconds() for _ in range(2000)]

    assert min(got) < 3.65
    assert max(got) > 4.35
    assert sum(got) / len(got) == pytest.approx(4.0, abs=0.05)


def test_same_seed_same_delays_and_no_jitter_is_exact() -> None:
    first = [FAST.delay(n, random.Random(11)) for n in (1, 2, 3)]
    second = [FAST.delay(n, random.Random(11)) for n in (1, 2, 3)]
    steady = RetryPolicy(jitter=0.0)

    assert first == second
    assert [steady.delay(n) for n in (1, 2, 3)] == [1 * s, 2 * s, 4 * s]


def test_should_retry_until_max_attempts() -> None:
    assert [FAST.should_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert RetryPolicy(max_attempts=1).should_retry(1) is False


@pytest.mark.parametrize("policy", list(PRESETS.values()), ids=list(PRESETS))
def test_json_round_trip(policy: RetryPolicy) -> None:
    stored = policy.to_json()

    assert set(stored) == {
        "max_attempts",
        "initial_delay_ms",
        "max_delay_ms",
        "multiplier",
        "jitter",
    }
    assert RetryPolicy.from_json(stored) == policy


def test_json_form_is_in_milliseconds() -> None:
    assert FAST.to_json() == {
        "max_attempts": 3,
        "initial_delay_ms": 100,
        "max_delay_ms": 30000,
        "multiplier": 2.0,
        "jitter": 0.1,
    }


@pytest.mark.parametrize(
    "stored",
    [
        {},
        {"max_attempts": 3},
        {**FAST.to_json(), "multiplier": "fast"},
        {**FAST.to_json(), "initial_delay_ms": None},
    ],
)
def test_malformed_stored_policy_names_retry_policy(stored: dict[str, object]) -> None:
    with pytest.raises(JobValidationError) as info:
        RetryPolicy.from_json(stored)

    assert info.value.field == "retry_policy"


def test_stored_policy_breaking_a_rule_names_the_rule() -> None:
    with pytest.raises(JobValidationError) as info:
        RetryPolicy.from_json({**FAST.to_json(), "jitter": 2.0})

    assert info.value.field == "retry.jitter"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": 32768}, "retry.max_attempts"),
        ({"max_attempts": True}, "retry.max_attempts"),
        ({"max_attempts": 2.0}, "retry.max_attempts"),
        ({"initial_delay": timedelta(0)}, "retry.initial_delay"),
        ({"initial_delay": 1.0}, "retry.initial_delay"),
        ({"max_delay": timedelta(milliseconds=500)}, "retry.max_delay"),
        ({"multiplier": 0.5}, "retry.multiplier"),
        ({"multiplier": float("nan")}, "retry.multiplier"),
        ({"multiplier": float("inf")}, "retry.multiplier"),
        ({"jitter": -0.1}, "retry.jitter"),
        ({"jitter": 1.5}, "retry.jitter"),
    ],
)
def test_each_rule_names_its_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(JobValidationError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_edges_are_allowed() -> None:
    policy = RetryPolicy(
        max_attempts=32767,
        initial_delay=timedelta(seconds=5),
        max_delay=timedelta(seconds=5),
        multiplier=1.0,
        jitter=1.0,
    )

    assert policy.base_delay(50) == timedelta(seconds=5)
    assert timedelta(0) <= policy.delay(50, random.Random(1)) <= timedelta(seconds=5)
