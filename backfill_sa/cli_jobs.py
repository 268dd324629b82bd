"""``python -m backfill_sa jobs list|show|cancel|retry`` and ``queues list|pause|resume``.

Thin commands over :mod:`backfill_sa.jobs` and :mod:`backfill_sa.queues`: the
filters, states and outcomes are theirs. Acting on ids is immediate; cancelling by a
filter counts the matching jobs, honours ``--dry-run``, asks for confirmation unless
``--yes``, and works in chunks with a progress bar (see :mod:`backfill_sa.cli_bulk`).

Exit codes: 0 done; 1 a job was not found or nothing matched; 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from backfill_sa.cli_args import Parser, bare_command, non_negative_int, positive_int
from backfill_sa.cli_bulk import confirm, in_chunks
from backfill_sa.cli_ops import CommandError, emit, open_checked, run_in_session, schema_name

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from backfill_sa.jobs import JobInfo
    from backfill_sa.queues import QueueStats

__all__ = ["add_jobs_parser", "add_queues_parser", "cmd_jobs", "cmd_queues", "queue_row"]

_PAGE = 1000
"""Jobs read per page when collecting a filter's matches."""


def _states() -> tuple[str, ...]:
    from backfill_sa.states import JobState

    return tuple(state.value for state in JobState)


def add_jobs_parser(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Add ``jobs`` and its actions to the CLI's subcommands."""
    jobs = commands.add_parser("jobs", parents=[common], help="list, show, cancel, retry jobs")
    actions = jobs.add_subparsers(dest="jobs_action", metavar="ACTION")
    jobs.set_defaults(handler=cmd_jobs, help_parser=jobs)

    listing = actions.add_parser("list", parents=[common], help="jobs in id order")
    _filters(listing)
    listing.add_argument("--limit", type=positive_int, default=50, help="default 50")
    listing.add_argument(
        "--after", type=non_negative_int, help="only ids above this (the next page)"
    )
    _json(listing)

    show = actions.add_parser("show", parents=[common], help="one job in full")
    show.add_argument("id", type=positive_int, metavar="ID")
    _json(show)

    cancel = actions.add_parser(
        "cancel",
        parents=[common],
        help="cancel jobs (ids, or a filter): waiting at once, running by asking their worker",
    )
    cancel.add_argument("ids", nargs="*", type=positive_int, metavar="ID")
    _filters(cancel)
    cancel.add_argument("--dry-run", action="store_true", help="say what would change")
    cancel.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    retry = actions.add_parser(
        "retry", parents=[common], help="make scheduled jobs (a retry backoff too) run now"
    )
    retry.add_argument("ids", nargs="+", type=positive_int, metavar="ID")


def add_queues_parser(
    commands: argparse._SubParsersAction[Parser], common: Parser
) -> argparse._SubParsersAction[Parser]:
    """Add ``queues`` and its actions to the CLI's subcommands; return its actions."""
    queues = commands.add_parser("queues", parents=[common], help="list, pause, resume queues")
    actions = queues.add_subparsers(dest="queues_action", metavar="ACTION")
    queues.set_defaults(handler=cmd_queues, help_parser=queues)
    listing = actions.add_parser("list", parents=[common], help="queues and their job counts")
    listing.add_argument(
        "--finished", action="store_true", help="count retained completed/cancelled jobs too"
    )
    _json(listing)
    for name, text in (("pause", "workers claim nothing from it"), ("resume", "claim again")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("name", metavar="QUEUE")
        _json(action)
    return actions


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=_states(), help="only jobs in this state")
    parser.add_argument("--queue", help="only jobs of this queue")
    parser.add_argument("--task", help="only jobs of this task")


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON (lists: one object a line)")


def _filter_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {"state": args.state, "queue": args.queue, "task": args.task}
    return {key: value for key, value in values.items() if value is not None}


def _describe(filters: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in filters.items())


def _job(info: JobInfo, *, full: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": info.id,
        "task": info.task,
        "queue": info.queue,
        "state": str(getattr(info.state, "value", info.state)),
        "priority": info.priority,
        "attempts": info.attempts,
        "max_attempts": info.max_attempts,
        "run_at": info.run_at.isoformat(),
    }
    if full:
        row.update(
            payload=info.payload,
            result=info.result,
            last_error=info.last_error,
            job_key=info.job_key,
            metadata=dict(info.metadata),
            created_at=info.created_at.isoformat(),
            updated_at=info.updated_at.isoformat(),
            locked_by=info.locked_by,
            finished_at=info.finished_at.isoformat() if info.finished_at else None,
            prune_at=info.prune_at.isoformat() if info.prune_at else None,
            cancel_requested_at=(
                info.cancel_requested_at.isoformat() if info.cancel_requested_at else None
            ),
            dead_letter_id=info.dead_letter_id,
            failure_reason=info.failure_reason,
        )
    return row


def cmd_jobs(args: argparse.Namespace) -> int:
    """Run one ``jobs`` action.

    Raises:
        CommandError: usage (2), not found or nothing matched (1), unreachable
            database (1), schema not migrated (2).
        JobValidationError: a value breaks a rule of :mod:`backfill_sa.jobs`.
    """
    if args.jobs_action is None:
        return bare_command(args.help_parser, "an action")
    handlers = {"list": _list, "show": _show, "cancel": _cancel, "retry": _retry}
    return handlers[args.jobs_action](args, schema_name(args))


def _list(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.jobs import list_jobs_async

    filters = _filter_values(args)

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        found = await list_jobs_async(session, limit=args.limit, after=args.after, **filters)
        return [_job(info) for info in found]

    rows = run_in_session(schema, work)
    if not rows:
        raise CommandError(f"no job matches ({_describe(filters) or 'any job'})", code=1)
    shown = ("id", "task", "queue", "state", "priority", "attempts", "run_at")
    emit(rows, as_json=args.json, text=["  ".join(f"{k}={row[k]}" for k in shown) for row in rows])
    return 0


def _show(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.jobs import get_job_async

    async def work(session: AsyncSession) -> dict[str, Any] | None:
        info = await get_job_async(session, args.id)
        return None if info is None else _job(info, full=True)

    row = run_in_session(schema, work)
    if row is None:
        raise CommandError(f"no job has id {args.id}", code=1)
    text = [
        f"{key:<20} {json.dumps(value) if isinstance(value, (dict, list)) else value}"
        for key, value in row.items()
    ]
    emit(row, as_json=args.json, text=text)
    return 0


def _cancel(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.jobs import CancelOutcome, cancel_job_async, list_jobs_async

    filters = _filter_values(args)
    if not args.ids and not filters:
        raise CommandError("jobs cancel: give job ids, or --state, --queue or --task")
    outcomes: dict[str, list[int]] = {}

    async def work(session: AsyncSession, ids: list[int]) -> int:
        done = 0
        for job_id in ids:
            result = await cancel_job_async(session, job_id)
            outcomes.setdefault(result.outcome.value, []).append(job_id)
            done += result.outcome in (CancelOutcome.CANCELLED, CancelOutcome.REQUESTED)
        return done

    async def run() -> int | None:
        from sqlalchemy.ext.asyncio import AsyncSession

        async with open_checked(schema) as engine:
            if args.ids:
                async with AsyncSession(engine) as session, session.begin():
                    return await work(session, list(dict.fromkeys(args.ids)))
            ids: list[int] = []
            async with AsyncSession(engine) as session:
                while True:
                    page = await list_jobs_async(
                        session, limit=_PAGE, after=ids[-1] if ids else None, **filters
                    )
                    ids += [info.id for info in page if not info.finished]
                    if len(page) < _PAGE:
                        break
            what = _describe(filters)
            if not ids:
                raise CommandError(f"no unfinished job matches ({what})", code=1)
            if args.dry_run:
                print(f"would cancel {len(ids)} jobs with {what}; nothing changed")
                return None
            confirm(f"cancel {len(ids)} jobs with {what}", yes=args.yes)
            return await in_chunks(engine, ids, work, what="cancelled")

    done = asyncio.run(run())
    if done is None:
        return 0
    labels = {
        CancelOutcome.CANCELLED.value: "cancelled",
        CancelOutcome.REQUESTED.value: "cancel requested (running)",
        CancelOutcome.ALREADY_FINISHED.value: "already finished",
    }
    for outcome, label in labels.items():
        if outcomes.get(outcome):
            print(f"{label}: {len(outcomes[outcome])} ({_ids(outcomes[outcome])})")
    missing = outcomes.get(CancelOutcome.NOT_FOUND.value, [])
    if missing:
        raise CommandError(f"no job has id {_ids(missing, limit=50)}", code=1)
    return 0


def _retry(args: argparse.Namespace, schema: str) -> int:
    from backfill_sa.jobs import RetryOutcome, retry_job_async

    async def work(session: AsyncSession) -> list[tuple[int, str, str | None]]:
        found = []
        for job_id in dict.fromkeys(args.ids):
            result = await retry_job_async(session, job_id)
            state = None if result.state is None else str(result.state.value)
            found.append((job_id, result.outcome.value, state))
        return found

    missing = []
    for job_id, outcome, state in run_in_session(schema, work):
        if outcome == RetryOutcome.MADE_AVAILABLE.value:
            print(f"job {job_id}: available now")
        elif outcome == RetryOutcome.NOT_SCHEDULED.value:
            print(f"job {job_id}: left as it is ({state}, not scheduled)")
        else:
            missing.append(job_id)
    if missing:
        raise CommandError(f"no job has id {_ids(missing, limit=50)}", code=1)
    return 0


def _ids(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# ---------------------------------------------------------------- queues


def queue_row(stats: QueueStats) -> dict[str, Any]:
    """One queue's statistics as a JSON-ready dict."""
    age = stats.oldest_available_age
    return {
        "name": stats.name,
        "available": stats.available,
        "scheduled": stats.scheduled,
        "running": stats.running,
        "oldest_available_age_seconds": None if age is None else age.total_seconds(),
        "paused": stats.paused,
        "concurrency": stats.concurrency,
        **(
            {"completed": stats.completed, "cancelled": stats.cancelled}
            if stats.completed is not None
            else {}
        ),
    }


def cmd_queues(args: argparse.Namespace) -> int:
    """Run one ``queues`` action.

    Raises:
        CommandError: usage (2), nothing to list (1), unreachable database (1).
        JobValidationError: the queue name breaks its rule.
    """
    from backfill_sa.queues import pause_queue_async, queue_stats_async, resume_queue_async

    schema = schema_name(args)
    action = args.queues_action
    if action is None:
        return bare_command(args.help_parser, "an action")
    if action == "list":

        async def listing(session: AsyncSession) -> list[dict[str, Any]]:
            found = await queue_stats_async(session, include_finished=args.finished)
            return [queue_row(stats) for stats in found]

        rows = run_in_session(schema, listing)
        if not rows:
            raise CommandError("no queue has jobs or settings", code=1)
        text = [
            f"{r['name']:<16} available {r['available']:>7}  scheduled {r['scheduled']:>7}  "
            f"running {r['running']:>5}  {'PAUSED' if r['paused'] else 'active'}"
            + (f"  completed {r['completed']}  cancelled {r['cancelled']}" if args.finished else "")
            for r in rows
        ]
        emit(rows, as_json=args.json, text=text)
        return 0
    change = pause_queue_async if action == "pause" else resume_queue_async

    async def switch(session: AsyncSession) -> dict[str, Any]:
        settings = await change(session, args.name)
        return {"name": settings.name, "paused": settings.paused}

    row = run_in_session(schema, switch)
    state = "paused: workers claim nothing from it" if row["paused"] else "active"
    emit(row, as_json=args.json, text=[f"queue {row['name']!r}: {state}"])
    return 0
