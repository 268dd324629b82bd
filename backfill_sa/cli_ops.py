"""What CLI commands share (database, schema, errors) and the operator commands enqueue and dlq."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from backfill_sa.dburl import async_url
from backfill_sa.schema_name import DEFAULT_SCHEMA, validate_schema_name

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from backfill_sa.models import DeadLetterJob

__all__ = ["CommandError", "async_engine", "database_url", "require_schema", "schema_name"]


class CommandError(Exception):
    """A command cannot go on; ``main`` prints the one-line message and exits with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        self.code = code
        super().__init__(message)


def schema_name(args: argparse.Namespace) -> str:
    """Return the schema a command works on: ``--schema``, ``BACKFILL_SCHEMA`` or ``backfill``.

    Raises:
        CommandError: the name is not a valid schema name.
    """
    name = args.schema or os.environ.get("BACKFILL_SCHEMA") or DEFAULT_SCHEMA
    try:
        return validate_schema_name(name)
    except ValueError as exc:
        raise CommandError(f"--schema: {str(exc).split(': ', 1)[-1]}") from None


def database_url() -> str:
    """Return ``DATABASE_URL``, else the embedded server's URL (started if needed).

    Raises:
        DatabaseNotConfiguredError: neither is available.
        EmbeddedPostgresError: the embedded server could not be started.
    """
    from backfill_sa.embedded import resolve_database_url

    return resolve_database_url(os.environ)


def async_engine(url: str, schema: str) -> AsyncEngine:
    """Return an asyncpg engine (no pool) whose ``backfill`` schema is ``schema``."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    return create_async_engine(
        async_url(url),
        poolclass=NullPool,
        execution_options={"schema_translate_map": {DEFAULT_SCHEMA: schema}},
    )


async def require_schema(engine: AsyncEngine, schema: str) -> None:
    """Check that ``schema`` holds backfill_sa's tables.

    Raises:
        CommandError: the schema is not migrated (exit code 2), or the database cannot
            be reached (exit code 1).
    """
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    try:
        async with engine.connect() as connection:
            found = await connection.scalar(select(func.to_regclass(f'"{schema}".jobs')))
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(f"database: cannot connect: {one_line(exc)}", code=1) from exc
    if found is None:
        hint = "" if schema == DEFAULT_SCHEMA else f" --schema {schema}"
        raise CommandError(
            f"schema {schema!r} has no backfill_sa tables; "
            f"run `python -m backfill_sa migrate{hint}` first"
        )


def _session(engine: AsyncEngine) -> AsyncSession:
    from sqlalchemy.ext.asyncio import AsyncSession

    return AsyncSession(engine)


def one_line(exc: BaseException) -> str:
    """Return the error's message (the driver's, for database errors) on one line."""
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split())
    return text or type(cause).__name__


def cmd_enqueue(args: argparse.Namespace) -> int:
    """``enqueue TASK``: enqueue one job in its own transaction and print its id.

    Raises:
        CommandError: the schema is not migrated or the database is unreachable.
        JobValidationError: an option breaks a rule; nothing is written.
    """
    from backfill_sa.enqueue import enqueue_async

    schema = schema_name(args)
    options: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("queue", "priority", "run_at", "max_attempts", "job_key")
        if getattr(args, key) is not None
    }

    async def run() -> str:
        engine = async_engine(database_url(), schema)
        try:
            await require_schema(engine, schema)
            async with _session(engine) as session, session.begin():
                result = await enqueue_async(session, args.task, args.payload, **options)
        finally:
            await engine.dispose()
        return f"job {result.id}: {result.outcome.value}"

    print(asyncio.run(run()))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    """``dlq list|requeue|delete``: inspect or act on dead letters, one transaction.

    Raises:
        CommandError: the schema is not migrated or the database is unreachable.
        JobValidationError: a filter breaks a rule.
    """
    schema = schema_name(args)
    actions = {"list": _dlq_list, "requeue": _dlq_requeue, "delete": _dlq_delete}
    action = actions[args.dlq_action]

    async def run() -> list[str]:
        engine = async_engine(database_url(), schema)
        try:
            await require_schema(engine, schema)
            async with _session(engine) as session, session.begin():
                return await action(session, args)
        finally:
            await engine.dispose()

    for line in asyncio.run(run()):
        print(line)
    return 0


async def _dlq_list(session: AsyncSession, args: argparse.Namespace) -> list[str]:
    from backfill_sa.dlq import list_dead_letters_async

    entries = await list_dead_letters_async(
        session, task=args.task, queue=args.queue, failure_reason=args.reason, limit=args.limit
    )
    return [_dead_letter_line(entry, as_json=args.json) for entry in entries]


async def _dlq_requeue(session: AsyncSession, args: argparse.Namespace) -> list[str]:
    from backfill_sa.dlq import requeue_dead_letters_async

    result = await requeue_dead_letters_async(session, args.ids)
    lines = [
        f"requeued entry {entry} as job {job}"
        for entry, job in zip(result.requeued_ids, result.job_ids, strict=True)
    ]
    lines += [
        f"skipped entry {entry}: its job_key is held by a live job" for entry in result.skipped_ids
    ]
    missing = set(args.ids) - set(result.requeued_ids) - set(result.skipped_ids)
    return lines + [f"no entry {entry}" for entry in sorted(missing)]


async def _dlq_delete(session: AsyncSession, args: argparse.Namespace) -> list[str]:
    from backfill_sa.dlq import delete_dead_letters_async

    deleted = await delete_dead_letters_async(session, args.ids)
    return [f"deleted {deleted} of {len(set(args.ids))} entries"]


def _dead_letter_line(entry: DeadLetterJob, *, as_json: bool) -> str:
    error = entry.last_error if isinstance(entry.last_error, dict) else {}
    fields: dict[str, object] = {
        "id": entry.id,
        "task": entry.task,
        "queue": entry.queue,
        "failure_reason": entry.failure_reason,
        "failure_count": entry.failure_count,
        "failed_at": entry.failed_at.isoformat(),
        "error": f"{error.get('type', '')}: {error.get('message', '')}".strip(": "),
    }
    if as_json:
        return json.dumps({**fields, "payload": entry.payload}, default=str)
    return "  ".join(f"{key}={value}" for key, value in fields.items())
