"""outcomes.classify: what an attempt's exception makes of the job (pure, no database)."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest

from backfill_sa.errors import (
    InvalidPayloadError,
    PermanentError,
    RetryableError,
    Snooze,
    UnknownTaskError,
)
from backfill_sa.retry import CONSERVATIVE, DEFAULT, FAST, RetryPolicy
from backfill_sa.tasks import JobContext, Task, TaskOptions
from backfill_sa.worker.outcomes import (
    MAX_ERROR_CHARS,
    Outcome,
    OutcomeKind,
    classify,
    error_json,
    resolve_policy,
)

STEADY = RetryPolicy(
    max_attempts=5,
    initial_delay=timedelta(seconds=2),
    max_delay=timedelta(seconds=60),
    multiplier=3.0,
    jitter=0.0,
)


async def _handler(payload: Any, ctx: JobContext) -> None:
    return None


def _task(**options: Any) -> Task:
    return Task("t", _handler, TaskOptions(**options), is_async=True)


def _classify(
    exc: BaseException | None,
    *,
    attempt: int = 1,
    max_attempts: int = 5,
    task: Task | None = None,
    policy: RetryPolicy = STEADY,
    unknown_task: bool = False,
    rng: random.Random | None = None,
) -> Outcome:
    return classify(
        exc,
        job_id=42,
        lease=7,
        task_name="t",
        queue="bulk",
        attempt=attempt,
        max_attempts=max_attempts,
        task=task if task is not None or unknown_task else _task(),
        policy=policy,
        rng=rng,
        unknown_task=unknown_task,
    )


def _raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as the worker sees it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_success() -> None:
    outcome = _classify(None)

    assert outcome == Outcome(OutcomeKind.SUCCEEDED, 42, 7, "t", "bulk", attempt=1)


@pytest.mark.parametrize(
    "exc", [ValueError("boom"), RetryableError("busy"), TimeoutError(), OSError("net")]
)
def test_retryable_and_unclassified_errors_retry_after_the_policy_delay(
    exc: BaseException,
) -> None:
    outcome = _classify(_raised(exc), attempt=2)

    assert outcome.kind is OutcomeKind.RETRIED
    assert outcome.delay_ms == 6000  # 2 s * 3 ** (2 - 1), no jitter
    assert outcome.refund == 0
    assert outcome.reason is None
    assert (outcome.job_id, outcome.lease, outcome.task, outcome.queue) == (42, 7, "t", "bulk")
    assert outcome.error is not None
    error = json.loads(outcome.error)
    assert error["type"] == f"{type(exc).__module__}.{type(exc).__qualname__}"
    assert error["message"] == str(exc)
    assert error["attempt"] == 2
    assert "Traceback" in error["traceback"]


def test_retry_delay_is_the_policys_jittered_delay() -> None:
    outcome = _classify(_raised(ValueError()), attempt=3, policy=DEFAULT, rng=random.Random(5))

    expected = DEFAULT.delay(3, random.Random(5))
    assert outcome.delay_ms == round(expected.total_seconds() * 1000)
    assert 3600 <= outcome.delay_ms <= 4400


def test_retry_delay_is_at_least_one_millisecond() -> None:
    tiny = RetryPolicy(initial_delay=timedelta(microseconds=10), jitter=0.0)

    assert _classify(_raised(ValueError()), policy=tiny).delay_ms == 1


def test_last_attempt_dead_letters_with_max_attempts_exceeded() -> None:
    outcome = _classify(_raised(ValueError("last")), attempt=5, max_attempts=5)

    assert outcome.kind is OutcomeKind.DEAD
    assert outcome.reason == "max_attempts_exceeded"
    assert outcome.error is not None
    assert json.loads(outcome.error)["message"] == "last"
    # The job's max_attempts decides, not the policy's.
    assert _classify(_raised(ValueError()), attempt=5, max_attempts=6).kind is OutcomeKind.RETRIED


def test_permanent_error_dead_letters_on_any_attempt() -> None:
    outcome = _classify(_raised(PermanentError("gone")), attempt=1)

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "permanent_error")
    assert outcome.error is not None
    assert json.loads(outcome.error)["type"] == "backfill_sa.errors.PermanentError"


def test_invalid_payload_dead_letters_as_such() -> None:
    outcome = _classify(_raised(InvalidPayloadError("bad shape")), attempt=1, max_attempts=1)

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "invalid_payload")


def test_snooze_gives_the_attempt_back() -> None:
    outcome = _classify(Snooze(timedelta(minutes=2)), attempt=5, max_attempts=5)

    assert outcome.kind is OutcomeKind.SNOOZED
    assert outcome.delay_ms == 120_000
    assert outcome.refund == 1
    assert outcome.error is None
    assert outcome.reason is None
    assert _classify(Snooze(0.25)).delay_ms == 250


def test_snooze_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        Snooze(-1)


def test_unknown_task_retries_then_dead_letters_as_unknown_task() -> None:
    exc = _raised(UnknownTaskError("ghost"))

    first = _classify(exc, attempt=1, unknown_task=True)
    last = _classify(exc, attempt=5, unknown_task=True)

    assert (first.kind, first.delay_ms) == (OutcomeKind.RETRIED, 2000)
    assert (last.kind, last.reason) == (OutcomeKind.DEAD, "unknown_task")


class Flaky(ConnectionError):
    """A give_up_on type's subclass that the task also lists in retry_on."""


@pytest.mark.parametrize(
    ("options", "exc", "kind"),
    [
        ({"give_up_on": (KeyError,)}, KeyError("k"), OutcomeKind.DEAD),
        ({"give_up_on": (LookupError,)}, IndexError("i"), OutcomeKind.DEAD),
        ({"give_up_on": (LookupError,), "retry_on": (KeyError,)}, KeyError(), OutcomeKind.RETRIED),
        ({"give_up_on": (OSError,), "retry_on": (Flaky,)}, Flaky(), OutcomeKind.RETRIED),
        ({"give_up_on": (OSError,), "retry_on": (Flaky,)}, ConnectionError(), OutcomeKind.DEAD),
        ({"retry_on": (KeyError,)}, ValueError(), OutcomeKind.RETRIED),
        # retry_on does not outlive max_attempts, nor overrule PermanentError.
        ({"retry_on": (PermanentError,)}, PermanentError(), OutcomeKind.DEAD),
    ],
)
def test_give_up_on_and_retry_on(
    options: dict[str, Any], exc: Exception, kind: OutcomeKind
) -> None:
    outcome = _classify(_raised(exc), task=_task(**options))

    assert outcome.kind is kind
    if kind is OutcomeKind.DEAD:
        assert outcome.reason == "permanent_error"


def test_retry_on_still_ends_at_max_attempts() -> None:
    outcome = _classify(
        _raised(KeyError()), attempt=5, max_attempts=5, task=_task(retry_on=(KeyError,))
    )

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "max_attempts_exceeded")


def test_error_json_bounds_message_and_traceback() -> None:
    huge = "x" * (MAX_ERROR_CHARS * 3)

    def deep(n: int) -> None:
        if n == 0:
            raise ValueError(huge)
        deep(n - 1)

    try:
        deep(300)
    except ValueError as exc:
        stored = json.loads(error_json(exc, 4))

    assert len(stored["message"]) <= MAX_ERROR_CHARS + 100
    assert stored["message"].startswith("x" * 100)
    assert "characters cut" in stored["message"]
    assert len(stored["traceback"]) <= MAX_ERROR_CHARS + 100
    assert stored["traceback"].startswith("Traceback")
    assert stored["traceback"].rstrip().endswith("x")  # the end (the error line) is kept
    assert stored["attempt"] == 4


def test_error_json_without_an_exception() -> None:
    stored = json.loads(error_json(None, 2, message="worker w1 lost its claim"))

    assert stored == {
        "type": "Error",
        "message": "worker w1 lost its claim",
        "traceback": None,
        "attempt": 2,
    }


def test_policy_comes_from_the_job_then_the_task_then_the_default() -> None:
    task = _task(retry=FAST)

    assert resolve_policy(CONSERVATIVE.to_json(), task) == CONSERVATIVE
    assert resolve_policy(None, task) == FAST
    assert resolve_policy({}, task) == FAST
    assert resolve_policy(None, _task()) == DEFAULT
    assert resolve_policy(None, None) == DEFAULT
