"""What CLI commands share: the database and schema they use, errors, output, and ``enqueue``.

Every command that needs a database finds it with :func:`database_url` and opens it
with :func:`open_checked`, so that "cannot connect" reads the same everywhere and
names the server (never its password).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from backfill_sa.dburl import async_connect_args, async_url, redacted_url
from backfill_sa.schema_name import DEFAULT_SCHEMA, SCHEMA_ENV_VAR, validate_schema_name

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from backfill_sa.tasks import TaskRegistry

__all__ = [
    "CommandError",
    "async_engine",
    "check_reachable",
    "connect_failure",
    "database_url",
    "emit",
    "load_registry",
    "one_line",
    "open_checked",
    "require_schema",
    "run_in_session",
    "schema_name",
]

T = TypeVar("T")
logger = logging.getLogger("backfill_sa.cli")


class CommandError(Exception):
    """A command cannot go on; ``main`` prints the one-line message and exits with ``code``.

    Codes: 1 not found, nothing matched, or the database is unreachable; 2 usage
    (a flag, an environment variable, a schema that is not migrated).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        self.code = code
        super().__init__(message)


def schema_name(args: argparse.Namespace) -> str:
    """Return the schema a command works on: ``--schema``, ``BACKFILL_SCHEMA`` or ``backfill``.

    Raises:
        CommandError: the name is not a valid schema name; the message names the
            flag or the variable that gave it.
    """
    flag = getattr(args, "schema", None)
    env = os.environ.get(SCHEMA_ENV_VAR)
    if flag is not None:
        name, source = flag, "--schema"
    elif env is not None and env.strip():
        name, source = env, SCHEMA_ENV_VAR
    else:
        name, source = DEFAULT_SCHEMA, "--schema"
    try:
        return validate_schema_name(name)
    except ValueError as exc:
        raise CommandError(f"{source}: {str(exc).split(': ', 1)[-1]}") from None


def database_url() -> str:
    """Return ``DATABASE_URL``, else (unset) the embedded server's URL, started if needed.

    When the embedded server is used, one line on stderr says so and names its data
    directory. An empty ``DATABASE_URL`` is refused.

    Raises:
        ConfigurationError: ``DATABASE_URL`` is empty or not a PostgreSQL URL, or
            ``BACKFILL_DATA_DIR`` is empty.
        DatabaseNotConfiguredError: it is unset and the ``embedded`` extra is missing.
        EmbeddedPostgresError: the embedded server could not be started.
    """
    from backfill_sa.embedded import (
        DATABASE_URL_ENV,
        check_database_url,
        embedded_available,
        ensure_embedded_url,
        find_running,
        resolve_data_dir,
        resolve_database_url,
    )

    raw = os.environ.get(DATABASE_URL_ENV)
    if raw is not None:
        return check_database_url(raw)
    if not embedded_available():
        return resolve_database_url(os.environ)  # raises, saying what to do
    data_dir = resolve_data_dir()
    running = find_running(data_dir) is not None
    url = ensure_embedded_url(data_dir)
    state = "running" if running else "started now, and left running"
    print(
        f"backfill_sa: DATABASE_URL is unset: using the embedded PostgreSQL in {data_dir} "
        f"({state}; `python -m backfill_sa embedded stop` stops it)",
        file=sys.stderr,
    )
    return url


def async_engine(url: str, schema: str) -> AsyncEngine:
    """Return an asyncpg engine (no pool) whose ``backfill`` schema is ``schema``."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    return create_async_engine(
        async_url(url),
        connect_args=async_connect_args(url),
        poolclass=NullPool,
        execution_options={"schema_translate_map": {DEFAULT_SCHEMA: schema}},
    )


def one_line(exc: BaseException) -> str:
    """Return the error's message (the driver's, for database errors) on one line."""
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split())
    return text or type(cause).__name__


def connect_failure(url: str, exc: BaseException) -> CommandError:
    """Return the one error every command raises when the database cannot be reached."""
    return CommandError(f"database: cannot connect to {redacted_url(url)}: {one_line(exc)}", 1)


async def require_schema(engine: AsyncEngine, schema: str | None, url: str = "") -> None:
    """Check that the database answers and that ``schema`` holds backfill_sa's tables.

    Args:
        engine: where to look.
        schema: the schema to check; None checks only that the database answers.
        url: the URL to name in an error (default: the engine's, password hidden).

    Raises:
        CommandError: the database cannot be reached (exit code 1), or the schema is
            not migrated (exit code 2, with the command that migrates it).
    """
    import asyncpg
    from sqlalchemy.exc import SQLAlchemyError

    from backfill_sa.statements.workers import schema_probe

    probe = f'"{schema}".jobs' if schema is not None else "pg_catalog.pg_class"
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(schema_probe, {"qualified_name": probe})
    # SQLAlchemy 2.0 lets asyncpg's own connect errors (a missing role) out unwrapped.
    except (SQLAlchemyError, OSError, asyncpg.PostgresError) as exc:
        raise connect_failure(url or engine.url.render_as_string(), exc) from exc
    if found is None and schema is not None:
        raise CommandError(not_migrated(schema))


def check_reachable(url: str) -> None:
    """Check that the database at ``url`` answers, as every command words it.

    Raises:
        CommandError: it does not (exit code 1).
    """

    async def probe() -> None:
        engine = async_engine(url, DEFAULT_SCHEMA)
        try:
            await require_schema(engine, None, url)
        finally:
            await engine.dispose()

    asyncio.run(probe())


def not_migrated(schema: str) -> str:
    """The message for a schema without our tables, with the command that fixes it."""
    hint = "" if schema == DEFAULT_SCHEMA else f" --schema {schema}"
    return (
        f"schema {schema!r} has no backfill_sa tables; "
        f"run `python -m backfill_sa migrate{hint}` first"
    )


@asynccontextmanager
async def open_checked(schema: str) -> AsyncIterator[AsyncEngine]:
    """Yield an engine on the command's database whose ``schema`` is migrated.

    Raises:
        CommandError: unreachable database (1) or schema not migrated (2).
    """
    url = database_url()
    engine = async_engine(url, schema)
    try:
        await require_schema(engine, schema, url)
        yield engine
    finally:
        await engine.dispose()


def run_in_session(schema: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on the command's migrated schema; return its result.

    Raises:
        CommandError: unreachable database (1) or schema not migrated (2).
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    async def run() -> T:
        async with (
            open_checked(schema) as engine,
            AsyncSession(engine) as session,
            session.begin(),
        ):
            return await work(session)

    return asyncio.run(run())


def emit(rows: list[dict[str, Any]] | dict[str, Any], *, as_json: bool, text: list[str]) -> None:
    """Print ``text`` lines, or with ``--json`` the rows (a list: one object per line)."""
    if not as_json:
        for line in text:
            print(line)
    elif isinstance(rows, dict):
        print(json.dumps(rows, default=str))
    else:
        for row in rows:
            print(json.dumps(row, default=str))


def load_registry(spec: str) -> TaskRegistry:
    """Import ``package.module:attribute`` and return the TaskRegistry it names.

    The attribute may also be a function without arguments that returns one. The
    current directory is importable, as it is for ``python -m``. A module that
    fails to import is reported with the file and line where it failed (the full
    traceback is logged at DEBUG).

    Raises:
        CommandError: the module cannot be imported, the attribute is missing, or it
            is not a TaskRegistry.
    """
    import importlib
    import inspect

    from backfill_sa.tasks import TaskRegistry

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"--tasks: {spec!r} must be package.module:registry")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise CommandError(
            f"--tasks: cannot import {module_name!r}: {type(exc).__name__}: {one_line(exc)}"
            f"{_where(exc)}"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CommandError(f"--tasks: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if inspect.isfunction(target):
        try:
            target = target()
        except Exception as exc:
            logger.debug("%s() failed", spec, exc_info=True)
            raise CommandError(
                f"--tasks: {spec}() raised {type(exc).__name__}: {one_line(exc)}{_where(exc)}"
            ) from exc
    if not isinstance(target, TaskRegistry):
        raise CommandError(f"--tasks: {spec!r} is a {type(target).__name__}, not a TaskRegistry")
    return target


def _where(exc: BaseException) -> str:
    """`` (at FILE, line N)``: where ``exc`` happened, outside the import machinery."""
    import traceback

    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {_short(exc.filename)}, line {exc.lineno})"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in frame.filename and not frame.filename.endswith("cli_ops.py")
    ]
    if not frames:
        return ""
    return f" (at {_short(frames[-1].filename)}, line {frames[-1].lineno})"


def _short(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
