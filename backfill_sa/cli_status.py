"""``python -m backfill_sa health`` (for container probes) and ``stats`` (queues, DLQ, workers).

``health`` exits 0 when the database answers and backfill_sa's schema is at the
newest revision this installation ships (recorded in ``<schema>.alembic_version``, or
in the application's own ``alembic_version`` when its Alembic history carries our
branch), else 1, with one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from backfill_sa.cli_ops import (
    CommandError,
    async_engine,
    connect_failure,
    database_url,
    emit,
    not_migrated,
    run_in_session,
    schema_name,
)
from backfill_sa.dburl import redacted_url

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["cmd_health", "cmd_stats", "revision_state"]

_WORKER_EXPIRY = dt.timedelta(seconds=60)
"""A worker is live when it heartbeat within this (WorkerConfig's default expiry)."""


def _revision_state(connection: Connection, schema: str) -> dict[str, Any]:
    """Where ``schema`` stands: our recorded revision(s), the shipped head, and a verdict."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from backfill_sa.migrations.runner import alembic_config, current_heads
    from backfill_sa.statements.workers import schema_probe

    connection = connection.execution_options(schema_translate_map=None)
    heads = sorted(ScriptDirectory.from_config(alembic_config(schema)).get_heads())
    has_tables = connection.scalar(schema_probe, {"qualified_name": f'"{schema}".jobs'})
    recorded = sorted(current_heads(connection, schema)) if has_tables else []
    managed_elsewhere = False
    if has_tables and not recorded and inspect(connection).has_table("alembic_version"):
        # Our branch may live in the application's own Alembic history.
        theirs = MigrationContext.configure(connection).get_current_heads()
        recorded = sorted(set(theirs) & set(heads))
        managed_elsewhere = True
    current = bool(has_tables) and set(heads) <= set(recorded)
    if not has_tables:
        problem = not_migrated(schema)
    elif not current:
        where = "the application's alembic_version" if managed_elsewhere else "it"
        flag = "" if schema == "backfill" else f" --schema {schema}"
        fix = (
            "`alembic upgrade heads` in the application"
            if managed_elsewhere
            else f"`python -m backfill_sa migrate{flag}`"
        )
        problem = (
            f"schema {schema!r} is not at head {', '.join(heads)} "
            f"({where} records {', '.join(recorded) or 'no backfill_sa revision'}); run {fix}"
        )
    else:
        problem = None
    return {
        "schema": schema,
        "revision": recorded,
        "head": heads,
        "current": current,
        "managed_elsewhere": managed_elsewhere,
        "problem": problem,
    }


def revision_state(url: str, schema: str, timeout: float) -> dict[str, Any]:
    """Return where ``schema`` stands (see ``health --json``), asking within ``timeout`` s.

    Raises:
        CommandError: the database cannot be reached in time (exit code 1).
    """
    import asyncpg
    from sqlalchemy.exc import SQLAlchemyError

    async def look() -> dict[str, Any]:
        async with engine.connect() as connection:
            return await connection.run_sync(_revision_state, schema)

    async def probe() -> dict[str, Any]:
        try:
            return await asyncio.wait_for(look(), timeout)
        except asyncio.TimeoutError as exc:
            late = TimeoutError(f"no answer within {timeout:g} s")
            raise connect_failure(url, late) from exc
        # SQLAlchemy 2.0 lets asyncpg's own connect errors out unwrapped.
        except (SQLAlchemyError, OSError, asyncpg.PostgresError) as exc:
            raise connect_failure(url, exc) from exc
        finally:
            await engine.dispose()

    engine = async_engine(url, schema)
    state = asyncio.run(probe())
    return {"ok": state["problem"] is None, "database": redacted_url(url), **state}


def cmd_health(args: argparse.Namespace) -> int:
    """``health``: exit 0 if the database answers and the schema is current, else 1.

    Raises:
        CommandError: the database cannot be reached (1) or the schema is not
            current (1); usage (2).
    """
    schema = schema_name(args)
    state = revision_state(database_url(), schema, args.timeout)
    if args.json:
        emit(state, as_json=True, text=[])
    if state["problem"] is not None:
        raise CommandError(state["problem"], code=1)
    if not args.json:
        print(
            f"ok: {state['database']}, schema {schema!r} at {', '.join(state['revision'])} (head)"
        )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """``stats``: jobs by queue and state, finished jobs, dead letters by reason, workers.

    Raises:
        CommandError: unreachable database (1), schema not migrated (2).
    """
    from backfill_sa.cli_jobs import queue_row
    from backfill_sa.queues import finished_jobs_estimate_async, queue_stats_async
    from backfill_sa.statements.overview import dead_letter_stats, worker_list

    async def work(session: AsyncSession) -> dict[str, Any]:
        queues = [queue_row(stats) for stats in await queue_stats_async(session)]
        dead = [dict(row) for row in (await session.execute(dead_letter_stats())).mappings()]
        workers = [
            dict(row) for row in (await session.execute(worker_list(_WORKER_EXPIRY))).mappings()
        ]
        finished = await finished_jobs_estimate_async(session)
        return {"queues": queues, "dead_letters": dead, "workers": workers, "finished": finished}

    found = run_in_session(schema_name(args), work)
    by_reason: dict[str, int] = {}
    by_queue: dict[str, int] = {}
    for group in found["dead_letters"]:
        count = int(group["entries"])
        by_reason[group["failure_reason"]] = by_reason.get(group["failure_reason"], 0) + count
        by_queue[group["queue"]] = by_queue.get(group["queue"], 0) + count
    queues = {row["name"]: row for row in found["queues"]}
    for name in by_queue.keys() - queues.keys():  # only dead letters left of that queue
        queues[name] = {
            "name": name,
            "available": 0,
            "scheduled": 0,
            "running": 0,
            "oldest_available_age_seconds": None,
            "paused": False,
            "concurrency": None,
        }
    for name, row in queues.items():
        row["dead_letters"] = by_queue.get(name, 0)
    summary = {
        "queues": [queues[name] for name in sorted(queues)],
        "finished_jobs_estimate": found["finished"],
        "dead_letters": {"total": sum(by_reason.values()), "by_reason": by_reason},
        "workers": found["workers"],
    }
    emit(summary, as_json=args.json, text=_stats_text(summary))
    return 0


def _stats_text(summary: dict[str, Any]) -> list[str]:
    lines = ["queues"]
    header = f"  {'name':<16}{'available':>10}{'scheduled':>10}{'running':>9}{'dead':>7}"
    lines.append(header + "  oldest waiting   paused")
    for queue in summary["queues"]:
        age = queue["oldest_available_age_seconds"]
        lines.append(
            f"  {queue['name']:<16}{queue['available']:>10}{queue['scheduled']:>10}"
            f"{queue['running']:>9}{queue['dead_letters']:>7}  "
            f"{'-' if age is None else f'{age:.1f} s':<15}  {'yes' if queue['paused'] else 'no'}"
        )
    if not summary["queues"]:
        lines.append("  (no queue has jobs, settings or dead letters)")
    estimate = summary["finished_jobs_estimate"]
    lines.append(
        f"finished jobs kept (completed, cancelled): about {estimate}"
        if estimate
        else "finished jobs kept (completed, cancelled): no estimate yet (PostgreSQL has not"
        " analysed the table); `queues list --finished` counts them"
    )
    dead = summary["dead_letters"]
    reasons = ", ".join(f"{reason} {count}" for reason, count in dead["by_reason"].items())
    lines.append(f"dead letters: {dead['total']}" + (f" ({reasons})" if reasons else ""))
    workers = summary["workers"]
    alive = [worker for worker in workers if worker["alive"]]
    lines.append(f"workers: {len(alive)} live of {len(workers)} registered")
    for worker in workers:
        queues = ", ".join(f"{name}={limit}" for name, limit in (worker["queues"] or {}).items())
        state = "live" if worker["alive"] else "silent"
        lines.append(
            f"  {worker['id']}  {state}  running {worker['running']}  queues {queues}  "
            f"heartbeat {worker['seconds_since_heartbeat']:.0f} s ago"
        )
    return lines
