"""The admin ASGI app: a JSON API over queues, jobs, workers and the DLQ, and a dashboard.

Build it with :func:`create_app` and serve it with any ASGI server, or mount it into
an existing Starlette or FastAPI application. Reads run in a short transaction each;
each mutating request runs in a transaction of its own. See ``docs/admin.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backfill_sa import dlq
from backfill_sa.admin import queries
from backfill_sa.admin.dashboard import dashboard_response
from backfill_sa.admin.protocol import (
    BIGINT_MAX,
    ApiError,
    JsonResponse,
    enum_param,
    forbidden_origin,
    int_param,
    json_body,
    path_id,
    query_params,
    text_field,
)
from backfill_sa.admin.serialize import dead_letter, requeue_result
from backfill_sa.errors import ConfigurationError, JobValidationError
from backfill_sa.jobs import CancelOutcome, cancel_job_async, get_job_async
from backfill_sa.notify import channel_for
from backfill_sa.queues import pause_queue_async, resume_queue_async
from backfill_sa.schema_name import DEFAULT_SCHEMA, validate_schema_name
from backfill_sa.states import UNFINISHED_STATES, FailureReason, JobState

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

_PAGE_DEFAULT = 50
_PAGE_MAX = 1000
_QUEUE_MAX = 100
_REQUEUE_OPTIONS = ("run_at", "queue_override", "max_attempts")
_REQUEUE_FILTERS = ("ids", "task", "queue", "reason")


def create_app(
    engine: AsyncEngine,
    *,
    schema: str | None = None,
    read_only: bool = False,
    worker_expiry: dt.timedelta = dt.timedelta(seconds=60),
) -> Starlette:
    """Return the admin ASGI app (JSON API under ``/api``, dashboard at ``/``).

    The app never creates or disposes engines: ``engine`` stays the caller's.

    Args:
        engine: an async engine (asyncpg) on the database holding backfill_sa's tables.
        schema: the schema of the tables; applied as ``schema_translate_map``
            ``{"backfill": schema}`` on top of the engine's own options. ``None`` keeps
            what the engine already maps ``backfill`` to (default ``backfill``).
        read_only: refuse every mutating request with 403.
        worker_expiry: a worker whose last heartbeat is older counts as dead (60 s,
            the worker's default ``heartbeat_expiry``).

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name, or
            ``worker_expiry`` is not positive.

    Example::

        engine = create_async_engine("postgresql+asyncpg://localhost/app")
        app = create_app(engine, schema="backfill", read_only=True)
        # uvicorn module:app, or Mount("/admin", app=app) in your own app
    """
    if schema is None:
        mapping = engine.get_execution_options().get("schema_translate_map") or {}
        schema = str(mapping.get(DEFAULT_SCHEMA) or DEFAULT_SCHEMA)
    schema = validate_schema_name(schema)
    if worker_expiry <= dt.timedelta(0):
        raise ConfigurationError("worker_expiry", "must be a positive duration")
    bound = engine.execution_options(schema_translate_map={DEFAULT_SCHEMA: schema})
    api = _Api(bound, schema=schema, read_only=read_only, worker_expiry=worker_expiry)
    write = api.guard_write
    routes = [
        Route("/", _dashboard, methods=["GET"]),
        Route("/api/overview", api.overview, methods=["GET"]),
        Route("/api/queues", api.queues, methods=["GET"]),
        Route("/api/queues/{name}/pause", write(api.pause), methods=["POST"]),
        Route("/api/queues/{name}/resume", write(api.resume), methods=["POST"]),
        Route("/api/jobs", api.jobs, methods=["GET"]),
        Route("/api/jobs/{id}", api.job, methods=["GET"]),
        Route("/api/jobs/{id}/cancel", write(api.cancel_job), methods=["POST"]),
        Route("/api/workers", api.workers, methods=["GET"]),
        Route("/api/dlq", api.dead_letters, methods=["GET"]),
        Route("/api/dlq/requeue", write(api.requeue_many), methods=["POST"]),
        Route("/api/dlq/{id}", api.dead_letter, methods=["GET"]),
        Route("/api/dlq/{id}", write(api.delete_dead_letter), methods=["DELETE"]),
        Route("/api/dlq/{id}/requeue", write(api.requeue_one), methods=["POST"]),
    ]
    handlers: Mapping[Any, Callable[[Request, Exception], Response]] = dict.fromkeys(
        (ApiError, HTTPException, JobValidationError, ConfigurationError, SQLAlchemyError, OSError),
        _error_response,
    )
    return Starlette(routes=routes, exception_handlers=handlers)


async def _dashboard(request: Request) -> Response:
    return dashboard_response()


def _error_response(request: Request, exc: Exception) -> Response:
    """Turn any error a handler raises into the API's JSON error shape."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, (JobValidationError, ConfigurationError)):
        return ApiError.invalid(exc.field, exc.rule).response()
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = ApiError(exc.status_code, code, str(exc.detail)).response()
        response.headers.update(exc.headers or {})
        return response
    if isinstance(exc, (SQLAlchemyError, OSError)):
        logger.warning(
            "admin: database error on %s",
            request.url.path,
            exc_info=exc,
            extra={"path": request.url.path},
        )
        cause = getattr(exc, "orig", None) or exc
        message = " ".join(str(cause).split()) or type(cause).__name__
        return ApiError(503, "database", f"database error: {message}").response()
    raise exc  # pragma: no cover - only the types registered above reach here


def _page(params: Mapping[str, str]) -> tuple[int, int]:
    limit = int_param(params, "limit", default=_PAGE_DEFAULT, minimum=1, maximum=_PAGE_MAX)
    offset = int_param(params, "offset", default=0, minimum=0, maximum=BIGINT_MAX)
    return limit, offset


def _queue_name(request: Request) -> str:
    name = text_field("name", request.path_params["name"])
    if not 1 <= len(name) <= _QUEUE_MAX:
        raise ApiError.invalid("name", f"must be 1 to {_QUEUE_MAX} characters")
    return name


def _requeue_options(body: Mapping[str, object]) -> dict[str, Any]:
    """``run_at``, ``queue_override`` and ``max_attempts`` from a request body."""
    options: dict[str, Any] = {}
    run_at = body.get("run_at")
    if run_at is not None:
        text = text_field("run_at", run_at).strip()
        try:
            options["run_at"] = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError.invalid("run_at", "must be an ISO 8601 date-time") from None
    if body.get("queue_override") is not None:
        options["queue_override"] = text_field("queue_override", body["queue_override"])
    max_attempts = body.get("max_attempts")
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise ApiError.invalid("max_attempts", "must be a whole number")
        options["max_attempts"] = max_attempts
    return options


def _ids(value: object) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= BIGINT_MAX for i in value
    ):
        raise ApiError.invalid("ids", f"must be a list of whole numbers from 1 to {BIGINT_MAX}")
    return value


class _Api:
    """The route handlers, sharing one session factory and the app's settings."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema: str,
        read_only: bool,
        worker_expiry: dt.timedelta,
    ) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.schema = schema
        self.read_only = read_only
        self.worker_expiry = worker_expiry
        self.channel = channel_for(schema)

    def guard_write(self, handler: Handler) -> Handler:
        """Wrap a mutating handler: 403 in read-only mode or for cross-site requests."""

        async def guarded(request: Request) -> Response:
            if self.read_only:
                raise ApiError(403, "read_only", "the admin app is read-only")
            if forbidden_origin(request):
                raise ApiError(403, "forbidden", "cross-site requests may not change anything")
            return await handler(request)

        return guarded

    # -- overview and queues ------------------------------------------------------------

    async def _queue_rows(self, session: AsyncSession) -> list[dict[str, Any]]:
        result = await session.execute(queries.queue_stats())
        return [dict(row) for row in result.mappings()]

    async def overview(self, request: Request) -> Response:
        """GET /api/overview: totals by state, per-queue stats, DLQ size, live workers."""
        query_params(request, ())
        async with self.sessions() as session:
            counts = (await session.execute(queries.overview_counts(self.worker_expiry))).one()
            queues = await self._queue_rows(session)
        totals = {s.value: sum(int(q[s.value]) for q in queues) for s in UNFINISHED_STATES}
        return JsonResponse(
            {
                "schema": self.schema,
                "read_only": self.read_only,
                "now": counts.now,
                "jobs": totals,
                "queues": queues,
                "dead_letters": counts.dead_letters,
                "workers": {"alive": counts.workers_alive, "total": counts.workers_total},
            }
        )

    async def queues(self, request: Request) -> Response:
        """GET /api/queues: every known queue with its counts and settings."""
        query_params(request, ())
        async with self.sessions() as session:
            return JsonResponse({"queues": await self._queue_rows(session)})

    async def pause(self, request: Request) -> Response:
        """POST /api/queues/{name}/pause: workers stop claiming from the queue."""
        return await self._set_paused(request, paused=True)

    async def resume(self, request: Request) -> Response:
        """POST /api/queues/{name}/resume: workers claim again, woken on commit."""
        return await self._set_paused(request, paused=False)

    async def _set_paused(self, request: Request, *, paused: bool) -> Response:
        name = _queue_name(request)
        change = pause_queue_async if paused else resume_queue_async
        async with self.sessions() as session, session.begin():
            settings = await change(session, name)
        return JsonResponse({"queue": dataclasses.asdict(settings)})

    # -- jobs ---------------------------------------------------------------------------

    async def jobs(self, request: Request) -> Response:
        """GET /api/jobs: job summaries in claim order, filtered and paged."""
        params = query_params(request, ("queue", "state", "task", "limit", "offset"))
        where = queries.JobFilter(
            queue=params.get("queue"),
            state=enum_param(JobState, "state", params.get("state")),
            task=params.get("task"),
        )
        limit, offset = _page(params)
        async with self.sessions() as session:
            total = (await session.execute(queries.job_count(where))).scalar_one()
            page = await session.execute(queries.job_list(where, limit=limit, offset=offset))
            rows = [dict(row) for row in page.mappings()]
        return JsonResponse({"jobs": rows, "total": total, "limit": limit, "offset": offset})

    async def job(self, request: Request) -> Response:
        """GET /api/jobs/{id}: every field of one job, payload included."""
        job_id = path_id(request)
        query_params(request, ())
        async with self.sessions() as session:
            info = await get_job_async(session, job_id)
        if info is None:
            raise ApiError.not_found(f"job {job_id}")
        return JsonResponse({"job": dataclasses.asdict(info)})

    async def cancel_job(self, request: Request) -> Response:
        """POST /api/jobs/{id}/cancel: cancel a waiting job, ask a running one to stop.

        The answer's ``outcome`` is ``cancelled``, ``requested`` (running: its worker
        stops it) or ``already_finished`` (nothing changed); 404 if there is no job.
        """
        job_id = path_id(request)
        async with self.sessions() as session, session.begin():
            result = await cancel_job_async(session, job_id)
        if result.outcome is CancelOutcome.NOT_FOUND:
            raise ApiError.not_found(f"job {job_id}")
        return JsonResponse(
            {"cancelled": {"id": job_id, "outcome": result.outcome, "state": result.state}}
        )

    # -- workers ------------------------------------------------------------------------

    async def workers(self, request: Request) -> Response:
        """GET /api/workers: registered workers, liveness and running jobs."""
        query_params(request, ())
        async with self.sessions() as session:
            result = await session.execute(queries.worker_list(self.worker_expiry))
            rows = [dict(row) for row in result.mappings()]
        return JsonResponse({"workers": rows})

    # -- dead-letter queue --------------------------------------------------------------

    async def dead_letters(self, request: Request) -> Response:
        """GET /api/dlq: dead-letter entries, newest first, filtered and paged."""
        params = query_params(request, ("task", "queue", "reason", "limit", "offset"))
        task, queue = params.get("task"), params.get("queue")
        reason = enum_param(FailureReason, "reason", params.get("reason"))
        limit, offset = _page(params)
        async with self.sessions() as session:
            total = await dlq.count_dead_letters_async(
                session, task=task, queue=queue, failure_reason=reason
            )
            entries = await dlq.list_dead_letters_async(
                session, task=task, queue=queue, failure_reason=reason, limit=limit, offset=offset
            )
            body = [dead_letter(entry, full=False) for entry in entries]
        return JsonResponse({"entries": body, "total": total, "limit": limit, "offset": offset})

    async def dead_letter(self, request: Request) -> Response:
        """GET /api/dlq/{id}: every field of one entry, payload and traceback included."""
        entry_id = path_id(request)
        query_params(request, ())
        async with self.sessions() as session:
            entry = await dlq.get_dead_letter_async(session, entry_id)
            if entry is None:
                raise ApiError.not_found(f"dead-letter entry {entry_id}")
            return JsonResponse({"entry": dead_letter(entry, full=True)})

    async def requeue_one(self, request: Request) -> Response:
        """POST /api/dlq/{id}/requeue: move one entry back to the jobs table."""
        entry_id = path_id(request)
        options = _requeue_options(await json_body(request, _REQUEUE_OPTIONS, required=False))
        async with self.sessions() as session, session.begin():
            result = await dlq.requeue_dead_letters_async(session, [entry_id], **options)
        if result.skipped_ids:
            raise ApiError(
                409,
                "conflict",
                f"dead-letter entry {entry_id} stays: its job_key is held by a live job",
                field="job_key",
                rule="must not be held by a live job",
            )
        if not result.requeued_ids:
            raise ApiError.not_found(f"dead-letter entry {entry_id}")
        return JsonResponse(requeue_result(result))

    async def requeue_many(self, request: Request) -> Response:
        """POST /api/dlq/requeue: requeue the entries a body's ids or filters select."""
        body = await json_body(request, _REQUEUE_FILTERS + _REQUEUE_OPTIONS, required=True)
        ids = _ids(body["ids"]) if body.get("ids") is not None else None
        task = text_field("task", body["task"]) if body.get("task") is not None else None
        queue = text_field("queue", body["queue"]) if body.get("queue") is not None else None
        raw_reason = body.get("reason")
        reason = enum_param(
            FailureReason,
            "reason",
            None if raw_reason is None else text_field("reason", raw_reason),
        )
        options = _requeue_options(body)
        async with self.sessions() as session, session.begin():
            result = await dlq.requeue_dead_letters_async(
                session, ids, task=task, queue=queue, failure_reason=reason, **options
            )
        return JsonResponse(requeue_result(result))

    async def delete_dead_letter(self, request: Request) -> Response:
        """DELETE /api/dlq/{id}: delete one entry for good."""
        entry_id = path_id(request)
        async with self.sessions() as session, session.begin():
            deleted = await dlq.delete_dead_letters_async(session, [entry_id])
        if not deleted:
            raise ApiError.not_found(f"dead-letter entry {entry_id}")
        return JsonResponse({"deleted": entry_id})
