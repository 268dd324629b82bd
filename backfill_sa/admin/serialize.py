"""JSON shapes of the admin API for dead-letter entries and requeue results."""

from __future__ import annotations

from backfill_sa.dlq import RequeueResult
from backfill_sa.models import DeadLetterJob

__all__ = ["dead_letter", "requeue_result"]


def dead_letter(entry: DeadLetterJob, *, full: bool) -> dict[str, object]:
    """Return a dead-letter entry as a JSON-ready dict.

    Args:
        entry: the entry.
        full: include ``payload``, ``last_error`` (with its traceback),
            ``retry_policy`` and ``metadata``; listings leave them out, as they may
            be large.
    """
    error = entry.last_error if isinstance(entry.last_error, dict) else {}
    body: dict[str, object] = {
        "id": entry.id,
        "original_job_id": entry.original_job_id,
        "task": entry.task,
        "queue": entry.queue,
        "priority": entry.priority,
        "job_key": entry.job_key,
        "max_attempts": entry.max_attempts,
        "failure_reason": entry.failure_reason,
        "failure_count": entry.failure_count,
        "error_type": error.get("type"),
        "error_message": error.get("message"),
        "original_created_at": entry.original_created_at,
        "original_run_at": entry.original_run_at,
        "failed_at": entry.failed_at,
        "requeued_count": entry.requeued_count,
        "last_requeued_at": entry.last_requeued_at,
        "notes": entry.notes,
    }
    if full:
        body.update(
            payload=entry.payload,
            last_error=entry.last_error,
            retry_policy=entry.retry_policy,
            metadata=entry.meta,
        )
    return body


def requeue_result(result: RequeueResult) -> dict[str, object]:
    """Return what a requeue did: new job ids, requeued and skipped entry ids."""
    return {
        "job_ids": list(result.job_ids),
        "requeued_ids": list(result.requeued_ids),
        "skipped_ids": list(result.skipped_ids),
    }
