"""The ``queues`` command: flow limits of queues across all workers, and their use.

``python -m backfill_sa queues limits`` lists every queue with settings, flow locks
or serial-keyed jobs: its limits, the jobs running under flow control and the
serial-keyed jobs waiting. ``queues set-limits NAME ...`` replaces a queue's limits
(flags left out clear theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from backfill_sa.cli_ops import CommandError, database_url, one_line, schema_name

__all__ = ["add_limit_actions", "cmd_queue_limits"]


def _rate(value: str) -> tuple[int, timedelta]:
    count, sep, seconds = value.partition("/")
    try:
        if not sep:
            raise ValueError(value)
        return int(count), timedelta(seconds=float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} must be COUNT/SECONDS, for example 10/1 or 100/60"
        ) from None


def add_limit_actions(actions: argparse._SubParsersAction[Any], common: Any) -> None:
    """Add ``queues limits`` and ``queues set-limits`` to the ``queues`` actions."""
    listing = actions.add_parser(
        "limits", parents=[common], help="limits, flow-controlled running and serial waiting"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=cmd_queue_limits)
    setting = actions.add_parser(
        "set-limits", parents=[common], help="replace a queue's limits (omitted: none)"
    )
    setting.add_argument("name")
    setting.add_argument("--global-concurrency", type=int, metavar="N")
    setting.add_argument("--partition-by", metavar="FIELD", help="payload field")
    setting.add_argument("--partition-concurrency", type=int, metavar="N")
    setting.add_argument("--rate", type=_rate, metavar="COUNT/SECONDS")
    setting.add_argument("--rate-per-partition", action="store_true")
    setting.set_defaults(handler=cmd_queue_limits)


async def _execute(url: str, schema: str, statements: Sequence[tuple[Any, dict[str, Any]]]) -> Any:
    from backfill_sa.statements.worker_sql import schema_probe
    from backfill_sa.worker.db import Database

    db = Database(url, schema=schema, pool_size=1)
    try:
        probe = await db.execute(
            schema_probe, {"qualified_name": f'"{schema}".job_locks'}, retry=False
        )
        if probe[0][0] is None:
            raise CommandError(
                f"schema {schema!r} has no job_locks table; run `python -m backfill_sa"
                " migrate upgrade` first"
            )
        result: Any = None
        for statement, params in statements:
            result = await db.execute(statement, params, retry=False)
        return result
    except OSError as exc:
        raise CommandError(f"database: cannot connect: {one_line(exc)}", code=1) from exc
    finally:
        await db.dispose()


def cmd_queue_limits(args: argparse.Namespace) -> int:
    """``queues limits|set-limits``.

    Raises:
        CommandError: the schema is not migrated or the database is unreachable.
        ConfigurationError: a limit breaks its rule (nothing is written).
    """
    from backfill_sa.flow import QueueLimits
    from backfill_sa.statements.worker_sql import queue_flow_stats, queue_set_limits

    schema = schema_name(args)
    if args.queues_action == "set-limits":
        limits = QueueLimits(
            global_concurrency=args.global_concurrency,
            partition_by=args.partition_by,
            partition_concurrency=args.partition_concurrency,
            rate_limit=args.rate,
            rate_limit_per_partition=args.rate_per_partition,
        )
        params = limits.params(args.name)
        asyncio.run(_execute(database_url(), schema, [(queue_set_limits, params)]))
        print(f"queue {args.name!r}: limits set")
        return 0
    rows = asyncio.run(_execute(database_url(), schema, [(queue_flow_stats, {})]))
    for row in rows:
        fields = dict(row)
        if args.json:
            print(json.dumps(fields))
        else:
            print("  ".join(f"{key}={value}" for key, value in fields.items()))
    return 0
