"""Run backfill_sa's own Alembic environment: the engine behind ``migrate`` and ``upgrade()``.

Our revisions are applied with a version table (``alembic_version``) inside our
schema, so they never touch an application's own Alembic history. Every online run
takes a transaction-scoped advisory lock keyed on the schema first, so processes
that migrate at the same moment queue up, and the ones that come second find the
schema at head and do nothing. The whole run is one transaction (PostgreSQL DDL is
transactional): a failure leaves the schema as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Literal, TextIO

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, MetaData, Table, func, inspect, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from backfill_sa.dburl import async_connect_args, async_url, parse_url
from backfill_sa.errors import ConfigurationError, MigrationError
from backfill_sa.migrations.schema import DEFAULT_SCHEMA, validate_schema_name

__all__ = ["VERSION_TABLE", "Action", "alembic_config", "apply", "current_heads", "run_migrate"]

Action = Literal["upgrade", "downgrade", "current"]
VERSION_TABLE = "alembic_version"
"""Name of our version table, created inside our schema."""

_HERE = Path(__file__).resolve().parent


def alembic_config(
    schema: str = DEFAULT_SCHEMA, url: str | None = None, *, out: TextIO | None = None
) -> Config:
    """Return an Alembic ``Config`` for backfill_sa's own environment.

    Args:
        schema: the PostgreSQL schema to migrate (default ``backfill``).
        url: a synchronous SQLAlchemy URL; needed only for offline (``--sql``) runs,
            online runs hand their connection in through ``config.attributes``.
        out: where Alembic writes SQL (offline mode) and messages; default stdout.

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name.
    """
    cfg = Config(output_buffer=out, stdout=out if out is not None else sys.stdout)
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("version_locations", str(_HERE / "versions"))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["backfill_schema"] = validate_schema_name(schema)
    return cfg


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"backfill_sa.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def current_heads(connection: Connection, schema: str) -> tuple[str, ...]:
    """Return the revisions recorded in our version table (empty when none)."""
    context = MigrationContext.configure(
        connection,
        opts={"version_table": VERSION_TABLE, "version_table_schema": schema},
    )
    return tuple(context.get_current_heads())


def apply(
    connection: Connection,
    *,
    schema: str,
    action: Literal["upgrade", "downgrade"],
    revision: str,
) -> None:
    """Upgrade or downgrade ``schema`` on ``connection``, inside its transaction.

    Takes the schema's advisory lock (released at commit or rollback), then runs
    Alembic. Reaching ``base`` on the way down also drops our (then empty) version
    table, as Alembic's offline mode does, so nothing of ours is left but the empty
    schema. Schema translation on the connection is switched off: the revisions
    name the schema themselves.

    Args:
        connection: a connection with a transaction begun; the caller commits.
        schema: the schema to migrate.
        action: ``"upgrade"`` or ``"downgrade"``.
        revision: the target, e.g. ``"heads"``, ``"base"``, ``"bf0001"``.

    Raises:
        MigrationError: upgrading a schema whose tables exist without our version
            table (another history manages them).
        alembic.util.CommandError: the revision is unknown or cannot be reached.
        sqlalchemy.exc.SQLAlchemyError: the database refused a statement.
    """
    connection = connection.execution_options(schema_translate_map=None)
    connection.execute(select(func.pg_advisory_xact_lock(_lock_key(schema))))
    cfg = alembic_config(schema)
    cfg.attributes["connection"] = connection
    if action == "upgrade":
        _refuse_foreign_history(connection, schema)
        command.upgrade(cfg, revision)
        return
    command.downgrade(cfg, revision)
    if not current_heads(connection, schema):
        Table(VERSION_TABLE, MetaData(), schema=schema).drop(connection, checkfirst=True)


def _refuse_foreign_history(connection: Connection, schema: str) -> None:
    """Stop before re-creating tables that another history (or ``create_all``) made."""
    if current_heads(connection, schema):
        return
    if inspect(connection).has_table("jobs", schema=schema):
        raise MigrationError(
            f"schema: {schema!r} already holds backfill_sa's tables but no "
            f"{schema}.{VERSION_TABLE}: they are managed elsewhere, most likely by your "
            "application's own Alembic history (run `alembic upgrade heads` there), or were "
            "made by metadata.create_all(); use one way to migrate per database"
        )


def _print_current(connection: Connection, schema: str, out: TextIO) -> None:
    script_heads = set(ScriptDirectory.from_config(alembic_config(schema)).get_heads())
    heads = current_heads(connection, schema)
    if not heads and inspect(connection).has_table("jobs", schema=schema):
        print(
            f"none recorded in {schema}.{VERSION_TABLE}, but schema {schema!r} holds "
            "backfill_sa's tables: another Alembic history manages them (most likely your "
            "application's: `alembic current` there shows the backfill_sa branch)",
            file=out,
        )
    elif not heads:
        print("base (no backfill_sa revision applied)", file=out)
    for head in heads:
        print(f"{head} (head)" if head in script_heads else head, file=out)


def _offline(cfg: Config, action: Action, revision: str) -> None:
    if action == "upgrade":
        command.upgrade(cfg, revision, sql=True)
    else:
        # Offline Alembic cannot read the current revision: start from our head.
        start = revision.split(":", 1)[0] if ":" in revision else "heads"
        target = revision.split(":", 1)[1] if ":" in revision else revision
        command.downgrade(cfg, f"{start}:{target}", sql=True)


def run_migrate(
    url: str,
    *,
    schema: str = "backfill",
    action: Literal["upgrade", "downgrade", "current"] = "upgrade",
    revision: str | None = None,
    sql: bool = False,
    out: TextIO | None = None,
) -> int:
    """Upgrade, downgrade or show backfill_sa's schema: what ``backfill_sa migrate`` runs.

    Runs on asyncpg (a core dependency; no synchronous driver needed), in a new event
    loop: call it from synchronous code, not from a running loop (there, use
    ``await upgrade(async_engine)``).

    Args:
        url: the database URL, in any form :mod:`backfill_sa.dburl` accepts.
            With ``sql=True`` it only selects the dialect.
        schema: the schema holding our tables and our ``alembic_version`` table.
        action: ``"upgrade"`` (to ``revision``, default the newest), ``"downgrade"``
            (to ``revision``, default ``"base"``: all our tables dropped) or
            ``"current"`` (print the applied revision, ``base``, or that another
            Alembic history manages the tables).
        revision: the target revision; see ``action`` for the defaults. With
            ``sql=True`` a downgrade may be given as ``"from:to"``; otherwise it
            starts from our newest revision.
        sql: print the DDL (Alembic offline mode) instead of running it, for DBAs.
            Nothing is read from or written to the database.
        out: where to print (DDL or the current revision); default stdout.

    Returns:
        The process exit code: 0 on success.

    Raises:
        MigrationError: a bad argument (the message names it), an unreachable
            database, an unknown revision, or a failed migration; the cause is chained.

    Example:
        ``run_migrate(os.environ["DATABASE_URL"], action="upgrade")``
    """
    stream = out if out is not None else sys.stdout
    if action not in ("upgrade", "downgrade", "current"):
        raise MigrationError(f"action: must be 'upgrade', 'downgrade' or 'current', not {action!r}")
    if action == "current" and (sql or revision is not None):
        raise MigrationError("action: 'current' takes neither a revision nor --sql")
    target = revision or ("heads" if action == "upgrade" else "base")
    try:
        name = validate_schema_name(schema)
        db_url = async_url(url)
    except ConfigurationError as exc:
        raise MigrationError(str(exc)) from exc
    what = f"{action} of schema {name!r}" + ("" if action == "current" else f" to {target!r}")
    try:
        if sql:
            # Offline: nothing connects, the URL only names the dialect.
            offline_url = db_url.set(drivername="postgresql").render_as_string(hide_password=False)
            _offline(alembic_config(name, offline_url, out=stream), action, target)
            return 0
        shown = parse_url(url).render_as_string(hide_password=True)
        timeout = async_connect_args(url)
        asyncio.run(
            _online(db_url, name, action, target, out=stream, what=what, shown=shown, args=timeout)
        )
    except CommandError as exc:
        raise MigrationError(f"revision: {what} failed: {exc}") from exc
    except SQLAlchemyError as exc:
        raise MigrationError(f"{what} failed in the database: {_reason(exc)}") from exc
    return 0


async def _online(
    db_url: URL,
    schema: str,
    action: Action,
    target: str,
    *,
    out: TextIO,
    what: str,
    shown: str,
    args: dict[str, float],
) -> None:
    """Run one online migrate action on asyncpg (a core dependency), in one transaction.

    Alembic runs synchronously inside ``AsyncConnection.run_sync``, as its async
    recipe does, so no synchronous driver is needed.
    """
    engine = create_async_engine(db_url, poolclass=NullPool, connect_args=args)
    try:
        try:
            connection = await engine.connect()
        # SQLAlchemy 2.0 lets asyncpg's own errors (a missing role) out of connect
        # unwrapped; 2.1 wraps them in DBAPIError.
        except (SQLAlchemyError, OSError, asyncpg.PostgresError) as exc:
            raise MigrationError(f"{what}: cannot connect to {shown}: {_reason(exc)}") from exc
        try:
            async with connection.begin():
                if action == "current":
                    await connection.run_sync(_print_current, schema, out)
                else:
                    await connection.run_sync(_apply_on, schema, action, target)
        finally:
            await connection.close()
    finally:
        await engine.dispose()


def _apply_on(connection: Connection, schema: str, action: Action, target: str) -> None:
    assert action != "current"
    apply(connection, schema=schema, action=action, revision=target)


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return " ".join(str(cause).split())
