"""The catalogue of the admin API: every route's method, path, inputs and answers.

:data:`ENDPOINTS` is the single definition the app is built from: the Starlette routes,
the checking of parameters and bodies (through :mod:`backfill_sa.admin.fields`) and
the OpenAPI document (:mod:`backfill_sa.admin.openapi`) all read it, so the document
cannot drift from what the server does. Each endpoint's ``name`` is the name of its
handler method and its OpenAPI ``operationId``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from backfill_sa.admin.fields import (
    BIGINT_MAX,
    SMALLINT_MAX,
    Schema,
    array_of,
    boolean,
    date_time,
    enum_of,
    integer,
    nullable,
    obj,
    string,
)
from backfill_sa.states import FailureReason, JobState

__all__ = ["ENDPOINTS", "SCHEMAS", "Endpoint", "Param"]

QUEUE_MAX = 100
"""The longest queue name (characters), as the jobs table allows."""
PAGE_MAX = 1000
IDS_MAX = 10_000


@dataclass(frozen=True)
class Param:
    """A path or query parameter: its name, where it goes, and its JSON Schema."""

    name: str
    location: Literal["path", "query"]
    schema: Schema
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API.

    Attributes:
        method: the HTTP method.
        path: the path under the app's root, with ``{name}`` placeholders.
        name: the handler method's name and the OpenAPI ``operationId``.
        summary: one line for people.
        response: the name of the 200 answer's schema in :data:`SCHEMAS`.
        params: the path and query parameters (no others are accepted).
        body: the JSON body's schema, if the endpoint takes one.
        body_required: whether the body may be left out.
        mutates: changes something: refused for read-only callers and cross-site requests.
        conflict: may answer 409.
        lookup: may answer 404 for a missing id.
    """

    method: Literal["GET", "POST", "DELETE"]
    path: str
    name: str
    summary: str
    response: str
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    body_required: bool = False
    mutates: bool = False
    conflict: bool = False
    lookup: bool = False
    tags: tuple[str, ...] = field(default=())


# -- shared pieces -------------------------------------------------------------------

_ID = Param("id", "path", integer(1, BIGINT_MAX, examples=[1]), "the id")
_QUEUE = Param(
    "name",
    "path",
    {**string(min_length=1, max_length=QUEUE_MAX), "pattern": "^[^\\x00/]*$"},
    "the queue's name",
)
_LIMIT = Param("limit", "query", integer(1, PAGE_MAX, default=50), "page size")
_OFFSET = Param("offset", "query", integer(0, BIGINT_MAX, default=0), "rows to skip")
_TEXT = string(max_length=QUEUE_MAX)
_REASONS = [reason.value for reason in FailureReason]
_STATES = [state.value for state in JobState]

_REQUEUE_OPTIONS: dict[str, Schema] = {
    "run_at": nullable(date_time("when the jobs may run; default now")),
    "queue_override": nullable(
        string("put the jobs in this queue instead", min_length=1, max_length=QUEUE_MAX)
    ),
    "max_attempts": nullable(integer(1, SMALLINT_MAX, "attempts instead of the entry's own")),
}
_DLQ_SELECTION: dict[str, Schema] = {
    "ids": array_of(integer(1, BIGINT_MAX), max_items=IDS_MAX, description="entry ids"),
    "task": _TEXT,
    "queue": _TEXT,
    "reason": enum_of(_REASONS),
    "dry_run": nullable(boolean("say what would happen, change nothing")),
}
_SELECTORS = ("ids", "task", "queue", "reason")
"""A bulk action needs ids or a filter: it never touches every entry by accident."""


def _nullable_type(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = _nullable_type("string", format="date-time")
_INT = {"type": "integer"}
_INT_OR_NULL = _nullable_type("integer")
_STR = {"type": "string"}
_STR_OR_NULL = _nullable_type("string")


def _record(properties: dict[str, Schema]) -> Schema:
    """An answer object: these properties always present (others may be added later)."""
    return {"type": "object", "properties": properties, "required": list(properties)}


_QUEUE_ROW = _record(
    {
        "name": _STR,
        "available": _INT,
        "scheduled": _INT,
        "running": _INT,
        "oldest_available_age_seconds": _nullable_type("number", minimum=0),
        "paused": {"type": "boolean"},
        "concurrency": _INT_OR_NULL,
        "dead_letters": _INT,
    }
)
_JOB_SUMMARY_FIELDS: dict[str, Schema] = {
    "id": _INT,
    "task": _STR,
    "queue": _STR,
    "state": _STR,
    "priority": _INT,
    "run_at": _TIME,
    "attempts": _INT,
    "max_attempts": _INT,
    "job_key": _STR_OR_NULL,
    "locked_by": _STR_OR_NULL,
    "locked_at": _TIME_OR_NULL,
    "created_at": _TIME,
    "updated_at": _TIME,
}
_JOB_SUMMARY = _record(
    {
        **_JOB_SUMMARY_FIELDS,
        "error_type": _STR_OR_NULL,
        "error_message": _STR_OR_NULL,
        "finished_at": _TIME_OR_NULL,
        "result": {},
    }
)
_JOB = _record(
    {
        **_JOB_SUMMARY_FIELDS,
        "state": {"type": "string", "enum": [*_STATES, "dead_lettered"]},
        "payload": {},
        "result": {},
        "last_error": {},
        "metadata": {},
        "finished_at": _TIME_OR_NULL,
        "prune_at": _TIME_OR_NULL,
        "cancel_requested_at": _TIME_OR_NULL,
        "dead_letter_id": _INT_OR_NULL,
        "failure_reason": _STR_OR_NULL,
    }
)
_OUTCOME = _record({"id": _INT, "outcome": _STR, "state": _STR_OR_NULL})
_DEAD_LETTER_FIELDS: dict[str, Schema] = {
    "id": _INT,
    "original_job_id": _INT,
    "task": _STR,
    "queue": _STR,
    "priority": _INT,
    "job_key": _STR_OR_NULL,
    "max_attempts": _INT,
    "failure_reason": _STR,
    "failure_count": _INT,
    "error_type": _STR_OR_NULL,
    "error_message": _STR_OR_NULL,
    "original_created_at": _TIME,
    "original_run_at": _TIME,
    "failed_at": _TIME,
    "requeued_count": _INT,
    "last_requeued_at": _TIME_OR_NULL,
    "notes": _STR_OR_NULL,
}
_DEAD_LETTER = _record(
    {**_DEAD_LETTER_FIELDS, "payload": {}, "last_error": {}, "retry_policy": {}, "metadata": {}}
)
_IDS = {"type": "array", "items": _INT}
_COUNTS = {
    "type": "array",
    "items": _record({"key": _STR, "count": _INT}),
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "machine-readable kind"},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "the input at fault"},
            "rule": {"type": "string", "description": "what that input must be"},
        },
        "required": ["error", "message"],
    },
    "Overview": _record(
        {
            "schema": _STR,
            "read_only": {"type": "boolean"},
            "user": _STR,
            "auth": {"type": "string", "enum": ["token", "app", "none"]},
            "now": _TIME,
            "jobs": {"type": "object", "additionalProperties": _INT},
            "queues": {"type": "array", "items": _QUEUE_ROW},
            "dead_letters": _INT,
            "workers": _record({"alive": _INT, "total": _INT}),
        }
    ),
    "Queues": _record({"queues": {"type": "array", "items": _QUEUE_ROW}}),
    "QueueSettings": _record(
        {
            "queue": _record(
                {
                    "name": _STR,
                    "paused": {"type": "boolean"},
                    "concurrency": _INT_OR_NULL,
                    "created_at": _TIME,
                    "updated_at": _TIME,
                }
            )
        }
    ),
    "Jobs": _record(
        {
            "jobs": {"type": "array", "items": _JOB_SUMMARY},
            "total": _INT,
            "limit": _INT,
            "offset": _INT,
        }
    ),
    "Job": _record({"job": _JOB}),
    "Cancelled": _record({"cancelled": _OUTCOME}),
    "Retried": _record({"retried": _OUTCOME}),
    "QueueStats": _record(
        {
            "name": _STR,
            "available": _INT,
            "scheduled": _INT,
            "running": _INT,
            "oldest_available_age_seconds": _nullable_type("number", minimum=0),
            "paused": {"type": "boolean"},
            "concurrency": _INT_OR_NULL,
            "completed": _INT,
            "cancelled": _INT,
        }
    ),
    "Throughput": _record(
        {
            "minutes": _INT,
            "queues": {
                "type": "array",
                "items": _record(
                    {"name": _STR, "completed_per_minute": {"type": "array", "items": _INT}}
                ),
            },
        }
    ),
    "Workers": _record(
        {
            "workers": {
                "type": "array",
                "items": _record(
                    {
                        "id": _STR,
                        "hostname": _STR,
                        "pid": _INT,
                        "queues": {},
                        "started_at": _TIME,
                        "last_heartbeat_at": _TIME,
                        "alive": {"type": "boolean"},
                        "seconds_since_heartbeat": _nullable_type("number"),
                        "running": _INT,
                    }
                ),
            }
        }
    ),
    "DeadLetters": _record(
        {
            "entries": {"type": "array", "items": _record(_DEAD_LETTER_FIELDS)},
            "total": _INT,
            "limit": _INT,
            "offset": _INT,
        }
    ),
    "DeadLetter": _record({"entry": _DEAD_LETTER}),
    "DeadLetterStats": _record(
        {
            "total": _INT,
            "oldest_failed_at": _TIME_OR_NULL,
            "newest_failed_at": _TIME_OR_NULL,
            "by_queue": _COUNTS,
            "by_task": _COUNTS,
            "by_reason": _COUNTS,
        }
    ),
    "RequeueResult": _record(
        {
            "dry_run": {"type": "boolean"},
            "job_ids": _IDS,
            "requeued_ids": _IDS,
            "skipped_ids": _IDS,
        }
    ),
    "DeleteResult": _record({"dry_run": {"type": "boolean"}, "deleted": _INT}),
    "Deleted": _record({"deleted": _INT}),
}
"""Named schemas of the answers (``components/schemas`` in the OpenAPI document)."""


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/api/overview",
        "overview",
        "Totals by state, per-queue stats, dead letters and live workers",
        "Overview",
        tags=("overview",),
    ),
    Endpoint(
        "GET", "/api/queues", "queues", "Every known queue with counts", "Queues", tags=("queues",)
    ),
    Endpoint(
        "GET",
        "/api/queues/throughput",
        "throughput",
        "Completed jobs per queue and minute, oldest minute first",
        "Throughput",
        params=(Param("minutes", "query", integer(1, 1440, default=30), "how far back"),),
        tags=("queues",),
    ),
    Endpoint(
        "GET",
        "/api/queues/{name}/stats",
        "queue_stats",
        "Exact counts of one queue, finished jobs included",
        "QueueStats",
        params=(_QUEUE,),
        lookup=True,
        tags=("queues",),
    ),
    Endpoint(
        "POST",
        "/api/queues/{name}/pause",
        "pause",
        "Workers stop claiming from the queue",
        "QueueSettings",
        params=(_QUEUE,),
        mutates=True,
        tags=("queues",),
    ),
    Endpoint(
        "POST",
        "/api/queues/{name}/resume",
        "resume",
        "Workers claim from the queue again (woken at once)",
        "QueueSettings",
        params=(_QUEUE,),
        mutates=True,
        tags=("queues",),
    ),
    Endpoint(
        "GET",
        "/api/jobs",
        "jobs",
        "Job summaries in claim order, filtered and paged",
        "Jobs",
        params=(
            Param("queue", "query", _TEXT, "only this queue"),
            Param("state", "query", enum_of(_STATES), "only this state"),
            Param("task", "query", _TEXT, "only this task"),
            Param("errored", "query", boolean(), "only jobs with (true) or without a last error"),
            Param(
                "order",
                "query",
                enum_of(["claim", "recent"]),
                "claim order (default) or the most recently changed first",
            ),
            _LIMIT,
            _OFFSET,
        ),
        tags=("jobs",),
    ),
    Endpoint(
        "GET",
        "/api/jobs/{id}",
        "job",
        "Every field of one job",
        "Job",
        params=(_ID,),
        lookup=True,
        tags=("jobs",),
    ),
    Endpoint(
        "POST",
        "/api/jobs/{id}/cancel",
        "cancel_job",
        "Cancel a waiting job, or ask a running one to stop",
        "Cancelled",
        params=(_ID,),
        mutates=True,
        lookup=True,
        tags=("jobs",),
    ),
    Endpoint(
        "POST",
        "/api/jobs/{id}/retry",
        "retry_job",
        "Make a scheduled job (e.g. waiting out a retry backoff) available now",
        "Retried",
        params=(_ID,),
        mutates=True,
        lookup=True,
        tags=("jobs",),
    ),
    Endpoint(
        "GET",
        "/api/workers",
        "workers",
        "Registered workers, liveness and running jobs",
        "Workers",
        tags=("workers",),
    ),
    Endpoint(
        "GET",
        "/api/dlq",
        "dead_letters",
        "Dead-letter entries, newest first, filtered and paged",
        "DeadLetters",
        params=(
            Param("task", "query", _TEXT, "only this task"),
            Param("queue", "query", _TEXT, "only this queue"),
            Param("reason", "query", enum_of(_REASONS), "only this failure reason"),
            _LIMIT,
            _OFFSET,
        ),
        tags=("dead letters",),
    ),
    Endpoint(
        "GET",
        "/api/dlq/stats",
        "dead_letter_stats",
        "Dead-letter counts by queue, task and reason",
        "DeadLetterStats",
        tags=("dead letters",),
    ),
    Endpoint(
        "POST",
        "/api/dlq/requeue",
        "requeue_many",
        "Requeue the entries the ids and filters select (or say what would be)",
        "RequeueResult",
        body=obj({**_DLQ_SELECTION, **_REQUEUE_OPTIONS}, any_of=_SELECTORS),
        body_required=True,
        mutates=True,
        tags=("dead letters",),
    ),
    Endpoint(
        "POST",
        "/api/dlq/delete",
        "delete_many",
        "Delete the entries the ids and filters select (or count them)",
        "DeleteResult",
        body=obj(_DLQ_SELECTION, any_of=_SELECTORS),
        body_required=True,
        mutates=True,
        tags=("dead letters",),
    ),
    Endpoint(
        "GET",
        "/api/dlq/{id}",
        "dead_letter",
        "Every field of one entry, payload and traceback included",
        "DeadLetter",
        params=(_ID,),
        lookup=True,
        tags=("dead letters",),
    ),
    Endpoint(
        "DELETE",
        "/api/dlq/{id}",
        "delete_dead_letter",
        "Delete one entry for good",
        "Deleted",
        params=(_ID,),
        mutates=True,
        lookup=True,
        tags=("dead letters",),
    ),
    Endpoint(
        "POST",
        "/api/dlq/{id}/requeue",
        "requeue_one",
        "Move one entry back to the jobs table",
        "RequeueResult",
        params=(_ID,),
        body=obj(_REQUEUE_OPTIONS),
        mutates=True,
        conflict=True,
        lookup=True,
        tags=("dead letters",),
    ),
)
"""Every operation, in routing order (fixed paths before ``{id}`` ones)."""
