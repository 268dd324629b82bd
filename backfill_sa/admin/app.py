"""The admin ASGI app: a JSON API over queues, jobs, workers and the DLQ, and a dashboard.

Build it with :func:`create_app` and serve it with any ASGI server, or mount it into
an existing Starlette or FastAPI application. Every route asks ``auth`` who is
calling first. The API's routes, their input checks and ``/openapi.json`` are all
built from :data:`~backfill_sa.admin.endpoints.ENDPOINTS`. Reads run in a short
transaction each; each mutating request runs in a transaction of its own and is
written to the audit log. See ``docs/admin.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backfill_sa.admin import queries
from backfill_sa.admin.audit import audit
from backfill_sa.admin.auth import Authenticator, InsecureNoAuth, Principal, TokenAuth
from backfill_sa.admin.auth import authenticate as run_auth
from backfill_sa.admin.dashboard import dashboard_response
from backfill_sa.admin.dlq_routes import DeadLetterRoutes
from backfill_sa.admin.endpoints import ENDPOINTS, Endpoint
from backfill_sa.admin.login import LoginPages
from backfill_sa.admin.openapi import openapi_document
from backfill_sa.admin.protocol import ApiError, JsonResponse, forbidden_origin
from backfill_sa.admin.routing import (
    Call,
    Handler,
    Refusal,
    parse_body,
    parse_params,
    transaction,
)
from backfill_sa.errors import ConfigurationError, JobValidationError
from backfill_sa.jobs import (
    CancelOutcome,
    RetryOutcome,
    cancel_job_async,
    get_job_async,
    retry_job_async,
)
from backfill_sa.queues import pause_queue_async, queue_stats_async, resume_queue_async
from backfill_sa.schema_name import DEFAULT_SCHEMA, validate_schema_name
from backfill_sa.states import JobState

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    engine: AsyncEngine,
    *,
    auth: TokenAuth | Authenticator,
    schema: str | None = None,
    read_only: bool = False,
    worker_expiry: dt.timedelta = dt.timedelta(seconds=60),
) -> Starlette:
    """Return the admin ASGI app (JSON API under ``/api``, dashboard at ``/``).

    The app never creates or disposes engines: ``engine`` stays the caller's.

    Args:
        engine: an async engine (asyncpg) on the database holding backfill_sa's tables.
        auth: who may call: a :class:`~backfill_sa.admin.auth.TokenAuth` (bearer tokens,
            with a login page for the dashboard), your own callable ``(request) ->
            Principal | None`` (sync or async; ``None`` answers 401), or
            :func:`~backfill_sa.admin.auth.insecure_no_auth` to let everybody in.
        schema: the schema of the tables; applied as ``schema_translate_map``
            ``{"backfill": schema}`` on top of the engine's own options. ``None`` keeps
            what the engine already maps ``backfill`` to (default ``backfill``).
        read_only: refuse every mutating request with 403, whoever asks.
        worker_expiry: a worker whose last heartbeat is older counts as dead (60 s,
            the worker's default ``heartbeat_expiry``).

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name, ``worker_expiry``
            is not positive, or ``auth`` is not callable.

    Example::

        engine = create_async_engine("postgresql+asyncpg://localhost/app")
        app = create_app(engine, auth=TokenAuth.from_env(), schema="backfill")
        # uvicorn module:app, or Mount("/admin", app=app) in your own app
    """
    if auth is None or not callable(auth):
        raise ConfigurationError(
            "auth",
            "must be a TokenAuth, a callable (request) -> Principal | None, or insecure_no_auth()",
        )
    if schema is None:
        mapping = engine.get_execution_options().get("schema_translate_map") or {}
        schema = str(mapping.get(DEFAULT_SCHEMA) or DEFAULT_SCHEMA)
    schema = validate_schema_name(schema)
    if worker_expiry <= dt.timedelta(0):
        raise ConfigurationError("worker_expiry", "must be a positive duration")
    bound = engine.execution_options(schema_translate_map={DEFAULT_SCHEMA: schema})
    api = _Api(bound, auth=auth, schema=schema, read_only=read_only, worker_expiry=worker_expiry)
    login = LoginPages(auth if isinstance(auth, TokenAuth) else None)
    routes = [
        Route("/", api.dashboard, methods=["GET"]),
        Route("/login", login.page, methods=["GET"]),
        Route("/login", login.submit, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
    ]
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in ENDPOINTS:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    routes += [api.route(path, endpoints) for path, endpoints in by_path.items()]
    handlers: Mapping[Any, Callable[[Request, Exception], Response]] = dict.fromkeys(
        (ApiError, HTTPException, JobValidationError, ConfigurationError, SQLAlchemyError, OSError),
        _error_response,
    )
    return Starlette(routes=routes, exception_handlers=handlers)


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


class _Api:
    """The route handlers, sharing one session factory and the app's settings."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        auth: TokenAuth | Authenticator,
        schema: str,
        read_only: bool,
        worker_expiry: dt.timedelta,
    ) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.auth = auth
        self.schema = schema
        self.read_only = read_only
        self.worker_expiry = worker_expiry
        self.dlq_routes = DeadLetterRoutes(self.sessions)
        self.auth_kind = (
            "token"
            if isinstance(auth, TokenAuth)
            else "none"
            if isinstance(auth, InsecureNoAuth)
            else "app"
        )

    # -- plumbing -----------------------------------------------------------------------

    async def user(self, request: Request) -> Principal:
        """The caller of ``request``; 401 when ``auth`` does not know them."""
        found = await run_auth(self.auth, request)
        if found is None:
            error = ApiError(401, "unauthorized", "authentication required").response()
            if isinstance(self.auth, TokenAuth):
                error.headers["WWW-Authenticate"] = 'Bearer realm="backfill_sa admin"'
            raise Refusal(error)
        return found

    def handler(self, name: str) -> Handler:
        """The handler method named ``name`` (an endpoint's operationId)."""
        owner = self.dlq_routes if hasattr(self.dlq_routes, name) else self
        found: Handler = getattr(owner, name)
        return found

    def route(self, path: str, endpoints: list[Endpoint]) -> Route:
        """One Starlette route for every method of ``path``, each checked as declared."""
        by_method: dict[str, tuple[Endpoint, Handler]] = {
            e.method: (e, self.handler(e.name)) for e in endpoints
        }

        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            endpoint, handler = by_method[method]
            try:
                user = await self.user(request)
            except Refusal as refusal:
                return refusal.response
            if endpoint.mutates:
                if self.read_only or user.read_only:
                    raise ApiError(403, "read_only", f"{user.name} may not change anything")
                if forbidden_origin(request):
                    raise ApiError(403, "forbidden", "cross-site requests may not change anything")
            params = parse_params(endpoint, request)
            body = await parse_body(endpoint, request)
            response: Response = await handler(Call(request, user, params, body))
            return response

        # {id} only matches digits, so /api/dlq/stats never reaches the {id} route.
        return Route(path.replace("{id}", "{id:int}"), dispatch, methods=list(by_method))

    # -- pages --------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        """GET /: the dashboard, or to the login page when nobody is signed in."""
        try:
            await self.user(request)
        except Refusal as refusal:
            if isinstance(self.auth, TokenAuth):
                return Response(status_code=303, headers={"Location": _relative(request, "login")})
            return refusal.response
        return dashboard_response()

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: the API's OpenAPI 3.1 document."""
        try:
            await self.user(request)
        except Refusal as refusal:
            return refusal.response
        root = request.scope.get("root_path", "") or "/"
        document = openapi_document(
            ENDPOINTS,
            server_url=root,
            bearer=isinstance(self.auth, TokenAuth),
            secured=not isinstance(self.auth, InsecureNoAuth),
        )
        return JsonResponse(document)

    # -- overview and queues ------------------------------------------------------------

    async def _queue_rows(self, session: AsyncSession) -> list[dict[str, Any]]:
        result = await session.execute(queries.queue_stats())
        return [dict(row) for row in result.mappings()]

    async def overview(self, call: Call) -> Response:
        """GET /api/overview: totals by state, per-queue stats, DLQ size, live workers."""
        async with self.sessions() as session:
            counts = (await session.execute(queries.overview_counts(self.worker_expiry))).one()
            queues = await self._queue_rows(session)
        states = ("available", "scheduled", "running")
        totals = {state: sum(int(q[state]) for q in queues) for state in states}
        return JsonResponse(
            {
                "schema": self.schema,
                "read_only": self.read_only or call.user.read_only,
                "user": call.user.name,
                "auth": self.auth_kind,
                "now": counts.now,
                "jobs": totals,
                "queues": queues,
                "dead_letters": counts.dead_letters,
                "workers": {"alive": counts.workers_alive, "total": counts.workers_total},
            }
        )

    async def queues(self, call: Call) -> Response:
        """GET /api/queues: every known queue with its counts and settings."""
        async with self.sessions() as session:
            return JsonResponse({"queues": await self._queue_rows(session)})

    async def pause(self, call: Call) -> Response:
        """POST /api/queues/{name}/pause: workers stop claiming from the queue."""
        return await self._set_paused(call, paused=True)

    async def resume(self, call: Call) -> Response:
        """POST /api/queues/{name}/resume: workers claim again, woken on commit."""
        return await self._set_paused(call, paused=False)

    async def _set_paused(self, call: Call, *, paused: bool) -> Response:
        name: str = call.params["name"]
        change = pause_queue_async if paused else resume_queue_async
        async with transaction(self.sessions) as session:
            settings = await change(session, name)
        audit(call.user.name, "queue.pause" if paused else "queue.resume", f"queue {name!r}", 1)
        return JsonResponse({"queue": dataclasses.asdict(settings)})

    async def queue_stats(self, call: Call) -> Response:
        """GET /api/queues/{name}/stats: exact counts of one queue, finished jobs included."""
        name: str = call.params["name"]
        async with self.sessions() as session:
            found = await queue_stats_async(session, name, include_finished=True)
        if not found:
            raise ApiError.not_found(f"queue {name!r}", field="name")
        stats = dataclasses.asdict(found[0])
        age: dt.timedelta | None = stats.pop("oldest_available_age")
        stats["oldest_available_age_seconds"] = None if age is None else age.total_seconds()
        return JsonResponse(stats)

    async def throughput(self, call: Call) -> Response:
        """GET /api/queues/throughput: completed jobs per queue and minute, oldest first."""
        minutes: int = call.params["minutes"]
        window = dt.timedelta(minutes=minutes)
        async with self.sessions() as session:
            rows = (await session.execute(queries.queue_throughput(window))).all()
        series: dict[str, list[int]] = {}
        for queue, minutes_ago, completed in rows:
            if 0 <= minutes_ago < minutes:
                series.setdefault(queue, [0] * minutes)[minutes - 1 - minutes_ago] = completed
        queues = [{"name": q, "completed_per_minute": v} for q, v in sorted(series.items())]
        return JsonResponse({"minutes": minutes, "queues": queues})

    # -- jobs ---------------------------------------------------------------------------

    async def jobs(self, call: Call) -> Response:
        """GET /api/jobs: job summaries in claim order, filtered and paged."""
        p = call.params
        where = queries.JobFilter(
            queue=p.get("queue"),
            state=JobState(p["state"]) if "state" in p else None,
            task=p.get("task"),
            errored=p.get("errored"),
        )
        limit, offset = p["limit"], p["offset"]
        async with self.sessions() as session:
            total = (await session.execute(queries.job_count(where))).scalar_one()
            recent = p.get("order") == "recent"
            listing = queries.job_list(where, limit=limit, offset=offset, recent=recent)
            page = await session.execute(listing)
            rows = [dict(row) for row in page.mappings()]
        return JsonResponse({"jobs": rows, "total": total, "limit": limit, "offset": offset})

    async def job(self, call: Call) -> Response:
        """GET /api/jobs/{id}: everything :func:`backfill_sa.jobs.get_job` knows of one job."""
        job_id: int = call.params["id"]
        async with self.sessions() as session:
            info = await get_job_async(session, job_id)
        if info is None:
            raise ApiError.not_found(f"job {job_id}")
        return JsonResponse({"job": dataclasses.asdict(info)})

    async def cancel_job(self, call: Call) -> Response:
        """POST /api/jobs/{id}/cancel: cancel a waiting job, ask a running one to stop.

        The answer's ``outcome`` is ``cancelled``, ``requested`` (running: its worker
        stops it) or ``already_finished`` (nothing changed); 404 if there is no job.
        """
        job_id: int = call.params["id"]
        async with transaction(self.sessions) as session:
            result = await cancel_job_async(session, job_id)
        if result.outcome is CancelOutcome.NOT_FOUND:
            raise ApiError.not_found(f"job {job_id}")
        changed = result.outcome in (CancelOutcome.CANCELLED, CancelOutcome.REQUESTED)
        target = f"job {job_id} ({result.outcome.value})"
        audit(call.user.name, "job.cancel", target, int(changed), ids=[job_id] if changed else [])
        body = {"id": job_id, "outcome": result.outcome, "state": result.state}
        return JsonResponse({"cancelled": body})

    async def retry_job(self, call: Call) -> Response:
        """POST /api/jobs/{id}/retry: make a scheduled job available now (workers woken).

        The answer's ``outcome`` is ``made_available`` or ``not_scheduled`` (nothing
        changed); 404 if there is no job.
        """
        job_id: int = call.params["id"]
        async with transaction(self.sessions) as session:
            result = await retry_job_async(session, job_id)
        if result.outcome is RetryOutcome.NOT_FOUND:
            raise ApiError.not_found(f"job {job_id}")
        changed = result.outcome is RetryOutcome.MADE_AVAILABLE
        target = f"job {job_id} ({result.outcome.value})"
        audit(call.user.name, "job.retry", target, int(changed), ids=[job_id] if changed else [])
        body = {"id": job_id, "outcome": result.outcome, "state": result.state}
        return JsonResponse({"retried": body})

    # -- workers ------------------------------------------------------------------------

    async def workers(self, call: Call) -> Response:
        """GET /api/workers: registered workers, liveness and running jobs."""
        async with self.sessions() as session:
            result = await session.execute(queries.worker_list(self.worker_expiry))
            rows = [dict(row) for row in result.mappings()]
        return JsonResponse({"workers": rows})

    # -- dead-letter queue --------------------------------------------------------------


def _relative(request: Request, target: str) -> str:
    """``target`` under the app's root, wherever the app is mounted."""
    root = request.scope.get("root_path", "")
    return f"{root}/{target}"
