"""The dead-letter routes of the admin API: list, stats, get, requeue, delete, in bulk too.

Everything goes through :mod:`backfill_sa.dlq` (and, for the statistics,
:mod:`backfill_sa.statements.dead_letter`); each change runs in a transaction of its
own, a dry run in one that is rolled back, and is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response

from backfill_sa import dlq
from backfill_sa.admin.audit import audit
from backfill_sa.admin.protocol import ApiError, JsonResponse
from backfill_sa.admin.routing import Call, transaction
from backfill_sa.admin.serialize import dead_letter, requeue_result
from backfill_sa.statements import dead_letter as dead_letter_sql

__all__ = ["DeadLetterRoutes"]


class DeadLetterRoutes:
    """Handlers of the ``/api/dlq`` endpoints, over one session factory."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def dead_letters(self, call: Call) -> Response:
        """GET /api/dlq: dead-letter entries, newest first, filtered and paged."""
        p = call.params
        where = {"task": p.get("task"), "queue": p.get("queue"), "failure_reason": p.get("reason")}
        limit, offset = p["limit"], p["offset"]
        async with self.sessions() as session:
            total = await dlq.count_dead_letters_async(session, **where)
            entries = await dlq.list_dead_letters_async(
                session, **where, limit=limit, offset=offset
            )
            body = [dead_letter(entry, full=False) for entry in entries]
        return JsonResponse({"entries": body, "total": total, "limit": limit, "offset": offset})

    async def dead_letter_stats(self, call: Call) -> Response:
        """GET /api/dlq/stats: entry counts by queue, task and reason; oldest and newest."""
        async with self.sessions() as session:
            total, oldest, newest = (await session.execute(dead_letter_sql.span())).one()
            groups = {}
            for column, key in (("queue", "queue"), ("task", "task"), ("failure_reason", "reason")):
                rows = await session.execute(dead_letter_sql.count_by(column))
                groups[f"by_{key}"] = [{"key": k, "count": n} for k, n in rows]
        return JsonResponse(
            {"total": total, "oldest_failed_at": oldest, "newest_failed_at": newest, **groups}
        )

    async def dead_letter(self, call: Call) -> Response:
        """GET /api/dlq/{id}: every field of one entry, payload and traceback included."""
        entry_id: int = call.params["id"]
        async with self.sessions() as session:
            entry = await dlq.get_dead_letter_async(session, entry_id)
            if entry is None:
                raise ApiError.not_found(f"dead-letter entry {entry_id}")
            return JsonResponse({"entry": dead_letter(entry, full=True)})

    async def requeue_one(self, call: Call) -> Response:
        """POST /api/dlq/{id}/requeue: move one entry back to the jobs table."""
        entry_id: int = call.params["id"]
        async with transaction(self.sessions) as session:
            result = await dlq.requeue_dead_letters_async(session, [entry_id], **call.body)
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
        audit(call.user.name, "dlq.requeue", f"entry {entry_id}", 1, ids=result.requeued_ids)
        return JsonResponse({"dry_run": False, **requeue_result(result)})

    @staticmethod
    def _selection(body: Mapping[str, Any]) -> tuple[list[int] | None, dict[str, Any], str]:
        """The ids, filters (as :mod:`backfill_sa.dlq` names them) and a description."""
        ids = body.get("ids")
        filters = {
            "task": body.get("task"),
            "queue": body.get("queue"),
            "failure_reason": body.get("reason"),
        }
        said = [f"{k}={v!r}" for k, v in filters.items() if v is not None]
        if ids is not None:
            said.insert(0, f"{len(ids)} ids")
        return ids, filters, ", ".join(said) or "nothing"

    async def requeue_many(self, call: Call) -> Response:
        """POST /api/dlq/requeue: requeue the entries a body's ids or filters select."""
        ids, filters, target = self._selection(call.body)
        dry_run = bool(call.body.get("dry_run"))
        options = {
            k: call.body[k] for k in ("run_at", "queue_override", "max_attempts") if k in call.body
        }
        async with transaction(self.sessions, dry_run=dry_run) as session:
            result = await dlq.requeue_dead_letters_async(session, ids, **filters, **options)
        audit(
            call.user.name,
            "dlq.requeue",
            target,
            len(result.requeued_ids),
            ids=result.requeued_ids,
            dry_run=dry_run,
        )
        body = requeue_result(result)
        if dry_run:
            body["job_ids"] = []  # the jobs were never kept
        return JsonResponse({"dry_run": dry_run, **body})

    async def delete_many(self, call: Call) -> Response:
        """POST /api/dlq/delete: delete the entries a body's ids or filters select."""
        ids, filters, target = self._selection(call.body)
        dry_run = bool(call.body.get("dry_run"))
        async with transaction(self.sessions, dry_run=dry_run) as session:
            deleted = await dlq.delete_dead_letters_async(session, ids, **filters)
        audit(call.user.name, "dlq.delete", target, deleted, dry_run=dry_run)
        return JsonResponse({"dry_run": dry_run, "deleted": deleted})

    async def delete_dead_letter(self, call: Call) -> Response:
        """DELETE /api/dlq/{id}: delete one entry for good."""
        entry_id: int = call.params["id"]
        async with transaction(self.sessions) as session:
            deleted = await dlq.delete_dead_letters_async(session, [entry_id])
        if not deleted:
            raise ApiError.not_found(f"dead-letter entry {entry_id}")
        audit(call.user.name, "dlq.delete", f"entry {entry_id}", 1, ids=[entry_id])
        return JsonResponse({"deleted": entry_id})
