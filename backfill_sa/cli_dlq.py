"""``python -m backfill_sa dlq list|show|stats|requeue|delete|purge``: the dead-letter queue.

The filters are those of :mod:`backfill_sa.dlq` (task, queue, failure reason, failed
after/before). Acting on ids is immediate; acting on a filter (or ``purge``) counts
the matching entries, honours ``--dry-run``, asks for confirmation unless ``--yes``,
and works in chunks with a progress bar (see :mod:`backfill_sa.cli_bulk`).

Exit codes: 0 done; 1 an id was not found or nothing matched; 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from backfill_sa.cli_args import (
    Parser,
    aware_datetime,
    bare_command,
    duration,
    non_negative_int,
    positive_int,
)
from backfill_sa.cli_bulk import confirm, in_chunks
from backfill_sa.cli_ops import CommandError, emit, open_checked, run_in_session, schema_name
from backfill_sa.states import FailureReason

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from backfill_sa.models import DeadLetterJob

__all__ = ["add_dlq_parser", "cmd_dlq"]

_REASONS = tuple(reason.value for reason in FailureReason)


def add_dlq_parser(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``dlq`` and its actions to the CLI's subcommands."""
    dlq = commands.add_parser(
        "dlq", parents=[common], help="inspect, requeue and delete dead letters"
    )
    actions = dlq.add_subparsers(dest="dlq_action", metavar="ACTION")
    dlq.set_defaults(handler=cmd_dlq, help_parser=dlq)

    listing = actions.add_parser("list", parents=[common], help="entries, newest first")
    _filters(listing, failed_after=True)
    listing.add_argument("--limit", type=positive_int, default=50, help="default 50")
    listing.add_argument("--offset", type=non_negative_int, default=0, help="skip this many")
    _json(listing)

    show = actions.add_parser("show", parents=[common], help="one entry in full")
    show.add_argument("id", type=positive_int, metavar="ID")
    _json(show)

    stats = actions.add_parser(
        "stats", parents=[common], help="entries by task, queue and failure reason"
    )
    _json(stats)

    requeue = actions.add_parser(
        "requeue", parents=[common], help="move entries (ids, or a filter) back to the jobs"
    )
    requeue.add_argument("ids", nargs="*", type=positive_int, metavar="ID")
    _filters(requeue)
    requeue.add_argument("--run-at", type=aware_datetime, help="when the jobs may run (ISO 8601)")
    requeue.add_argument("--to-queue", help="put the jobs in this queue instead of their own")
    requeue.add_argument("--max-attempts", type=positive_int, help="give the jobs this many")
    _bulk(requeue)

    delete = actions.add_parser(
        "delete", parents=[common], help="delete entries (ids, or a filter)"
    )
    delete.add_argument("ids", nargs="*", type=positive_int, metavar="ID")
    _filters(delete, failed_before=True)
    _bulk(delete)

    purge = actions.add_parser(
        "purge", parents=[common], help="delete entries that failed more than a while ago"
    )
    purge.add_argument(
        "--older-than", type=duration, required=True, help="e.g. 30d, 12h, 1d12h, 90m"
    )
    _bulk(purge)


def _filters(
    parser: argparse.ArgumentParser, *, failed_after: bool = False, failed_before: bool = False
) -> None:
    parser.add_argument("--task", help="only entries of this task")
    parser.add_argument("--queue", help="only entries from this queue")
    parser.add_argument("--reason", choices=_REASONS, help="only entries with this reason")
    if failed_after:
        parser.add_argument("--failed-after", type=aware_datetime, help="ISO 8601, inclusive")
    if failed_after or failed_before:
        parser.add_argument("--failed-before", type=aware_datetime, help="ISO 8601, exclusive")


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON (lists: one object a line)")


def _bulk(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would change; change nothing"
    )
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _filter_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {
        "task": args.task,
        "queue": args.queue,
        "failure_reason": args.reason,
        "failed_after": getattr(args, "failed_after", None),
        "failed_before": getattr(args, "failed_before", None),
    }
    return {key: value for key, value in values.items() if value is not None}


def _conditions(filters: dict[str, Any]) -> str:
    """``task=x, queue=y`` for a message."""
    return ", ".join(
        f"{key}={value.isoformat() if isinstance(value, dt.datetime) else value}"
        for key, value in filters.items()
    )


def _describe(filters: dict[str, Any]) -> str:
    if not filters:
        return "every entry"
    return "entries with " + _conditions(filters)


def cmd_dlq(args: argparse.Namespace) -> int:
    """Run one ``dlq`` action.

    Raises:
        CommandError: usage (2), not found or nothing matched (1), unreachable
            database (1), schema not migrated (2).
        JobValidationError: a value breaks a rule of :mod:`backfill_sa.dlq`.
    """
    action = args.dlq_action
    if action is None:
        return bare_command(args.help_parser, "an action")
    handlers = {
        "list": _list,
        "show": _show,
        "stats": _stats,
        "requeue": _requeue,
        "delete": _delete,
        "purge": _purge,
    }
    return handlers[action](args, schema_name(args))


# ---------------------------------------------------------------- reading


def _entry(entry: DeadLetterJob, *, full: bool = False) -> dict[str, Any]:
    error = entry.last_error if isinstance(entry.last_error, dict) else {}
    row: dict[str, Any] = {
        "id": entry.id,
        "task": entry.task,
        "queue": entry.queue,
        "failure_reason": entry.failure_reason,
        "failure_count": entry.failure_count,
        "failed_at": entry.failed_at.isoformat(),
        "error": f"{error.get('type', '')}: {error.get('message', '')}".strip(": "),
        "payload": entry.payload,
    }
    if full:
        row.update(
            original_job_id=entry.original_job_id,
            priority=entry.priority,
            job_key=entry.job_key,
            max_attempts=entry.max_attempts,
            original_created_at=entry.original_created_at.isoformat(),
            original_run_at=entry.original_run_at.isoformat(),
            requeued_count=entry.requeued_count,
            last_requeued_at=entry.last_requeued_at.isoformat() if entry.last_requeued_at else None,
            notes=entry.notes,
            metadata=entry.meta,
            traceback=error.get("traceback"),
        )
    return row


def _list(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.dlq import list_dead_letters_async

    filters = _filter_values(args)

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        entries = await list_dead_letters_async(
            session, limit=args.limit, offset=args.offset, **filters
        )
        return [_entry(entry) for entry in entries]

    rows = run_in_session(schema, work)
    if not rows:
        raise CommandError(f"no dead-letter entry matches ({_describe(filters)})", code=1)
    shown = ("id", "task", "queue", "failure_reason", "failure_count", "failed_at", "error")
    emit(
        rows,
        as_json=args.json,
        text=["  ".join(f"{key}={row[key]}" for key in shown) for row in rows],
    )
    return 0


def _show(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.dlq import get_dead_letter_async

    async def work(session: AsyncSession) -> dict[str, Any] | None:
        entry = await get_dead_letter_async(session, args.id)
        return None if entry is None else _entry(entry, full=True)

    row = run_in_session(schema, work)
    if row is None:
        raise CommandError(f"no dead-letter entry has id {args.id}", code=1)
    text = [
        f"{key:<20} {json.dumps(value) if isinstance(value, (dict, list)) else value}"
        for key, value in row.items()
        if key != "traceback"
    ]
    if row.get("traceback"):
        text += ["traceback:", *str(row["traceback"]).rstrip().splitlines()]
    emit(row, as_json=args.json, text=text)
    return 0


def _stats(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.statements.overview import dead_letter_stats

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        result = await session.execute(dead_letter_stats())
        return [dict(row) for row in result.mappings()]

    groups = run_in_session(schema, work)
    total = sum(int(group["entries"]) for group in groups)
    text = [f"{total} dead-letter entries"]
    text += [
        f"  {g['entries']:>7}  task={g['task']}  queue={g['queue']}  "
        f"reason={g['failure_reason']}  newest={g['newest'].isoformat()}"
        for g in groups
    ]
    emit({"total": total, "groups": groups}, as_json=args.json, text=text)
    return 0


# ---------------------------------------------------------------- changing


def _requeue(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.dlq import requeue_dead_letters_async

    filters = _filter_values(args)
    options: dict[str, Any] = {
        "run_at": args.run_at,
        "queue_override": args.to_queue,
        "max_attempts": args.max_attempts,
    }
    skipped: list[int] = []

    async def work(session: AsyncSession, ids: list[int]) -> int:
        result = await requeue_dead_letters_async(session, ids, **filters, **options)
        skipped.extend(result.skipped_ids)
        for entry, job in zip(result.requeued_ids, result.job_ids, strict=True):
            if args.ids:
                print(f"requeued entry {entry} as job {job}")
        return len(result.requeued_ids)

    def report(done: int) -> None:
        for entry in skipped:
            print(f"skipped entry {entry}: its job_key is held by a live job")
        if not args.ids:
            print(f"requeued {done} entries" + (f", skipped {len(skipped)}" if skipped else ""))

    done = _mutate(args, schema, filters, work, verb="requeue", report=report)
    if done is not None:  # None: a dry run
        report(done)
    return 0


def _delete(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.dlq import delete_dead_letters_async

    filters = _filter_values(args)

    async def work(session: AsyncSession, ids: list[int]) -> int:
        return await delete_dead_letters_async(session, ids, **filters)

    def report(done: int) -> None:
        print(f"deleted {done} entries")

    done = _mutate(args, schema, filters, work, verb="delete", report=report)
    if done is not None:
        report(done)
    return 0


def _purge(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.dlq import delete_dead_letters_async

    older: dt.timedelta = args.older_than
    cutoff: dict[str, Any] = {}

    async def work(session: AsyncSession, ids: list[int]) -> int:
        return await delete_dead_letters_async(session, ids, **cutoff)

    async def cut(engine: AsyncEngine) -> None:
        from sqlalchemy import func, select

        async with engine.connect() as connection:
            now = await connection.scalar(select(func.now()))  # the database's clock
        assert isinstance(now, dt.datetime)
        cutoff["failed_before"] = now - older

    args.ids = []

    def report(done: int) -> None:
        print(f"purged {done} entries")

    done = _mutate(args, schema, cutoff, work, verb="delete", report=report, before=cut)
    if done is not None:
        report(done)
    return 0


def _mutate(
    args: argparse.Namespace,
    schema: str,
    filters: dict[str, Any],
    work: Callable[[AsyncSession, list[int]], Awaitable[int]],
    *,
    verb: str,
    report: Callable[[int], None],
    before: Callable[[AsyncEngine], Awaitable[None]] | None = None,
) -> int | None:
    """Run ``work`` on the given ids (one transaction) or on the filter's matches (chunks).

    Returns how many rows ``work`` changed, or None after a dry run. When some of
    the ids given are missing, ``report`` is called with what was done before the
    error is raised.

    Raises:
        CommandError: an id was not found, or nothing matched (code 1); not confirmed.
    """
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession

    from backfill_sa.dlq import list_dead_letter_ids_async

    missing: list[int] = []

    async def run() -> int | None:
        async with open_checked(schema) as engine:
            if before is not None:
                await before(engine)
            if args.ids:
                return await _by_ids(engine, args.ids, filters, work, missing)
            async with AsyncSession(engine) as session:
                ids = await list_dead_letter_ids_async(session, **filters)
            what = _describe(filters)
            if not ids:
                raise CommandError(f"no dead-letter entry matches ({what})", code=1)
            if args.dry_run:
                print(f"would {verb} {len(ids)} dead-letter {what}; nothing changed")
                return None
            confirm(f"{verb} {len(ids)} dead-letter {what}", yes=args.yes)
            return await in_chunks(engine, ids, work, what=f"{verb}d")

    done = asyncio.run(run())
    if missing:
        if done:
            report(done)
        shown = ", ".join(str(entry) for entry in missing)
        which = "has" if len(missing) == 1 else "have"
        extra = f" matching {_conditions(filters)}" if filters else ""
        raise CommandError(f"no dead-letter entry{extra} {which} id {shown}", code=1)
    return done


async def _by_ids(
    engine: AsyncEngine,
    ids: list[int],
    filters: dict[str, Any],
    work: Callable[[AsyncSession, list[int]], Awaitable[int]],
    missing: list[int],
) -> int:
    """Act on the ``ids`` that exist (and match ``filters``) in one transaction.

    The others are appended to ``missing``.
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    from backfill_sa.statements import dead_letter as sql

    wanted = list(dict.fromkeys(ids))
    where = sql.DeadLetterFilter(ids=tuple(wanted), **filters)
    async with AsyncSession(engine) as session, session.begin():
        present = set((await session.execute(sql.select_ids(where))).scalars())
        found = [entry for entry in wanted if entry in present]
        done = await work(session, found) if found else 0
    missing.extend(entry for entry in wanted if entry not in present)
    return done
