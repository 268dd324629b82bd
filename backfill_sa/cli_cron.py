"""The ``cron`` command: the application's cron schedules, their last and next ticks.

``python -m backfill_sa cron list --tasks app.jobs:registry`` prints one line per
schedule of the registry (name, expression, zone, task, queue, the last tick a
worker handled and the next run times), and the schedules the database knows that
the registry no longer has.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from typing import Any

from backfill_sa.cli_ops import CommandError, database_url, one_line, schema_name

__all__ = ["add_cron_command", "cmd_cron_list"]

UTC = dt.timezone.utc


def add_cron_command(
    commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser
) -> None:
    """Add ``cron list`` to the command line's subcommands."""
    cron = commands.add_parser("cron", parents=[common], help="list cron schedules")
    actions = cron.add_subparsers(dest="cron_action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", parents=[common], help="schedules with their last tick and next run times"
    )
    listing.add_argument("--tasks", required=True, help="package.module:registry")
    listing.add_argument("--next", type=int, default=3, help="next run times shown (3)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    cron.set_defaults(handler=cmd_cron_list)


async def _states(url: str, schema: str) -> dict[str, dict[str, Any]]:
    from backfill_sa.statements.worker_sql import cron_schedule_states, schema_probe
    from backfill_sa.worker.db import Database

    db = Database(url, schema=schema, pool_size=1)
    try:
        probe = await db.execute(
            schema_probe, {"qualified_name": f'"{schema}".cron_schedules'}, retry=False
        )
        if probe[0][0] is None:
            raise CommandError(
                f"schema {schema!r} has no cron_schedules table; run `python -m backfill_sa"
                " migrate upgrade` first"
            )
        return {row["name"]: dict(row) for row in await db.execute(cron_schedule_states)}
    except OSError as exc:
        raise CommandError(f"database: cannot connect: {one_line(exc)}", code=1) from exc
    finally:
        await db.dispose()


def cmd_cron_list(args: argparse.Namespace) -> int:
    """``cron list``: print the registry's schedules with their last and next ticks.

    Raises:
        CommandError: the registry cannot be loaded, ``--next`` is out of range, the
            schema is not migrated, or the database is unreachable.
        ConfigurationError: a schedule names a task the registry does not hold.
    """
    from backfill_sa.cli import load_registry
    from backfill_sa.worker.scheduler import resolve_schedules

    if not 0 <= args.next <= 100:
        raise CommandError("--next: must be from 0 to 100")
    registry = load_registry(args.tasks)
    resolved = resolve_schedules(registry)
    states = asyncio.run(_states(database_url(), schema_name(args)))
    now = dt.datetime.now(UTC)
    for entry in resolved:
        schedule = entry.schedule
        runs: list[str] = []
        after = now
        for _ in range(args.next):
            tick = schedule.next_tick(after)
            if tick is None:
                break
            runs.append(tick.astimezone(schedule.zone).isoformat())
            after = tick
        state = states.pop(schedule.name, None)
        last = state["last_tick_at"] if state else None
        fields: dict[str, Any] = {
            "name": schedule.name,
            "expression": schedule.expression,
            "timezone": schedule.timezone,
            "task": schedule.task,
            "queue": entry.row.queue,
            "fill": str(schedule.fill),
            "last_tick": last.astimezone(schedule.zone).isoformat() if last else None,
            "next": runs,
        }
        print(_line(fields, as_json=args.json))
    for name, state in sorted(states.items()):
        fields = {
            "name": name,
            "expression": state["expression"],
            "timezone": state["timezone"],
            "last_tick": state["last_tick_at"].isoformat(),
            "note": "not in this registry",
        }
        print(_line(fields, as_json=args.json))
    return 0


def _line(fields: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(fields)
    shown = {k: (", ".join(v) if isinstance(v, list) else v) for k, v in fields.items()}
    return "  ".join(
        f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
        for key, value in shown.items()
    )
