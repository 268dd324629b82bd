"""What became of one attempt, decided from the handler's result or exception (pure).

Classification is by exception type, never by message text:

* no exception: ``SUCCEEDED`` (the row becomes ``completed``, or is deleted when the
  retention is zero), carrying the handler's return value as JSON;
* cancellation asked for (``cancel_job``) before the attempt ended: ``CANCELLED``,
  whatever the handler did (decided by the executor, not here);
* :class:`~backfill_sa.errors.Snooze`: ``SNOOZED`` (rescheduled, attempt given back);
* :class:`~backfill_sa.errors.InvalidPayloadError`: ``DEAD`` with ``invalid_payload``;
* :class:`~backfill_sa.errors.PermanentError` or a type in the task's ``give_up_on``
  (unless it is also in ``retry_on``, which wins): ``DEAD`` with ``permanent_error``;
* anything else (``RetryableError``, ``retry_on`` types, unclassified, timeouts,
  unknown task): ``RETRIED`` after the policy's backoff, or ``DEAD`` with
  ``max_attempts_exceeded`` (``unknown_task`` for an unknown task) once the attempts
  are used up.
"""

from __future__ import annotations

import enum
import json
import random
import traceback
from dataclasses import dataclass
from typing import Any

from backfill_sa.errors import InvalidPayloadError, PermanentError, Snooze
from backfill_sa.retry import DEFAULT, RetryPolicy
from backfill_sa.states import FailureReason
from backfill_sa.tasks import Task

__all__ = [
    "MAX_ERROR_CHARS",
    "Outcome",
    "OutcomeKind",
    "classify",
    "encode_result",
    "error_json",
]

MAX_ERROR_CHARS = 8_000
"""Bound on the stored message and on the stored traceback (each)."""


class OutcomeKind(enum.Enum):
    """The five ways an attempt can end."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    SNOOZED = "snoozed"
    DEAD = "dead_lettered"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Outcome:
    """One attempt's result, ready for the completer's batched write.

    ``committed`` is None for an outcome the completer writes; a transactional
    task's success was written in the handler's own transaction: True when that
    commit was accepted, False when the claim's fence refused it (rolled back).
    """

    kind: OutcomeKind
    job_id: int
    lease: int
    task: str
    queue: str
    delay_ms: int = 0
    error: str | None = None
    reason: str | None = None
    refund: int = 0
    duration: float = 0.0
    result: str | None = None
    keep_ms: int = 0
    attempt: int = 0
    """The attempt's number (for log records)."""
    shutdown: bool = False
    """A ``RETRIED`` outcome that is the worker's shutdown giving the job back."""
    committed: bool | None = None


def _bounded(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    half = MAX_ERROR_CHARS // 2
    return f"{text[:half]}\n... [{len(text) - MAX_ERROR_CHARS} characters cut] ...\n{text[-half:]}"


def error_json(exc: BaseException | None, attempt: int, *, message: str | None = None) -> str:
    """Return the JSON stored as ``last_error``: type, message, traceback, attempt.

    Message and traceback are each bounded to :data:`MAX_ERROR_CHARS` characters.
    """
    if exc is None:
        body: dict[str, Any] = {"type": "Error", "message": message or "", "traceback": None}
    else:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        body = {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": _bounded(message or str(exc)),
            "traceback": _bounded(tb),
        }
    body["attempt"] = attempt
    return json.dumps(body, default=str)


def encode_result(value: object, max_bytes: int, attempt: int) -> tuple[str | None, str | None]:
    """Encode a handler's return value for the ``result`` column.

    Returns ``(result_json, error_json)``: the JSON text and no error; or no result
    and an error (type ``backfill_sa.ResultNotStored``) when the value is not JSON
    serialisable or its UTF-8 JSON is longer than ``max_bytes``. ``None`` is
    stored as no result.
    """
    if value is None:
        return None, None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"result not stored: not JSON-serialisable: {type(exc).__name__}: {exc}"
        return None, _result_error(message, attempt)
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        message = f"result not stored: {size} bytes of JSON is over max_result_bytes ({max_bytes})"
        return None, _result_error(message, attempt)
    return text, None


def _result_error(message: str, attempt: int) -> str:
    body = {
        "type": "backfill_sa.ResultNotStored",
        "message": _bounded(message),
        "traceback": None,
        "attempt": attempt,
    }
    return json.dumps(body)


def resolve_policy(stored: Any, task: Task | None) -> RetryPolicy:
    """Return the job's own policy, else its task's, else the default."""
    if isinstance(stored, dict) and stored:
        return RetryPolicy.from_json(stored)
    if task is not None and task.options.retry is not None:
        return task.options.retry
    return DEFAULT


def classify(
    exc: BaseException | None,
    *,
    job_id: int,
    lease: int,
    task_name: str,
    queue: str,
    attempt: int,
    max_attempts: int,
    task: Task | None,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    unknown_task: bool = False,
) -> Outcome:
    """Decide the outcome of attempt ``attempt`` that ended with ``exc`` (None: success).

    Args:
        exc: what the handler raised, or None.
        job_id: the job's id.
        lease: the claim's lease (the fence for the write).
        task_name: the job's task.
        queue: the job's queue.
        attempt: this attempt's number (1-based).
        max_attempts: attempts allowed in all.
        task: the registered task, None when unknown.
        policy: the retry policy that sets the delay.
        rng: random source for jitter.
        unknown_task: the worker has no handler for ``task_name``.
    """
    if exc is None:
        return Outcome(OutcomeKind.SUCCEEDED, job_id, lease, task_name, queue, attempt=attempt)
    if isinstance(exc, Snooze):
        delay_ms = round(exc.delay.total_seconds() * 1000)
        return Outcome(
            OutcomeKind.SNOOZED,
            job_id,
            lease,
            task_name,
            queue,
            delay_ms=delay_ms,
            refund=1,
            attempt=attempt,
        )
    error = error_json(exc, attempt)
    if isinstance(exc, InvalidPayloadError):
        reason: str | None = FailureReason.INVALID_PAYLOAD.value
    elif isinstance(exc, PermanentError) or (
        task is not None
        and task.options.give_up_on
        and isinstance(exc, task.options.give_up_on)
        and not (task.options.retry_on and isinstance(exc, task.options.retry_on))
    ):
        reason = FailureReason.PERMANENT_ERROR.value
    elif attempt >= max_attempts:
        reason = (
            FailureReason.UNKNOWN_TASK.value
            if unknown_task
            else FailureReason.MAX_ATTEMPTS_EXCEEDED.value
        )
    else:
        reason = None
    if reason is not None:
        return Outcome(
            OutcomeKind.DEAD,
            job_id,
            lease,
            task_name,
            queue,
            error=error,
            reason=reason,
            attempt=attempt,
        )
    delay = policy.delay(attempt, rng)
    return Outcome(
        OutcomeKind.RETRIED,
        job_id,
        lease,
        task_name,
        queue,
        delay_ms=max(1, round(delay.total_seconds() * 1000)),
        error=error,
        attempt=attempt,
    )
