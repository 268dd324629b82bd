"""Shipped Alembic revisions (branch label ``backfill_sa``) and ways to apply them.

Three ways in:

* from the application's own Alembic history: add :data:`VERSION_LOCATION` to
  ``version_locations`` and run ``alembic upgrade heads``;
* ``python -m backfill_sa migrate`` for applications without Alembic;
* :func:`upgrade` at application start-up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backfill_sa.errors import MigrationError
from backfill_sa.migrations.schema import DEFAULT_SCHEMA, validate_schema_name

__all__ = ["BRANCH_LABEL", "VERSION_LOCATION", "alembic_config", "upgrade"]

BRANCH_LABEL = "backfill_sa"
VERSION_LOCATION = "backfill_sa.migrations:versions"
"""The ``package:path`` entry to add to an application's ``version_locations``."""

_HERE = Path(__file__).resolve().parent


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"backfill_sa.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def alembic_config(schema: str = DEFAULT_SCHEMA, url: str | None = None) -> Config:
    """Return an Alembic ``Config`` for backfill_sa's own environment.

    Args:
        schema: the PostgreSQL schema to migrate (default ``backfill``).
        url: a synchronous SQLAlchemy URL, needed only when no connection is handed in.

    Raises:
        ValueError: ``schema`` is not a valid schema name.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("version_locations", str(_HERE / "versions"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["backfill_schema"] = validate_schema_name(schema)
    return cfg


def _upgrade_on(connection: Connection, schema: str, revision: str) -> None:
    # A transaction-level advisory lock: concurrent callers queue up here, and the
    # second one finds the schema at head and does nothing.
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(schema)})
    cfg = alembic_config(schema)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def upgrade(
    engine: Engine | AsyncEngine, *, schema: str = DEFAULT_SCHEMA, revision: str = "heads"
) -> None:
    """Bring backfill_sa's schema to ``revision`` (default: the newest).

    A no-op when the schema is there already; safe when several processes call it at
    once (they serialise on a transaction-scoped advisory lock). Accepts a sync
    ``Engine``; for an ``AsyncEngine`` use :func:`upgrade_async`.

    Raises:
        MigrationError: the migration failed; the cause is chained.
        TypeError: an ``AsyncEngine`` was passed (use :func:`upgrade_async`).
    """
    if isinstance(engine, AsyncEngine):
        raise TypeError("engine: an AsyncEngine needs `await upgrade_async(engine)`")
    try:
        with engine.begin() as connection:
            _upgrade_on(connection, schema, revision)
    except Exception as exc:
        raise MigrationError(f"upgrading schema {schema!r} to {revision} failed: {exc}") from exc


async def upgrade_async(
    engine: AsyncEngine, *, schema: str = DEFAULT_SCHEMA, revision: str = "heads"
) -> None:
    """Async twin of :func:`upgrade` for an ``AsyncEngine``.

    Raises:
        MigrationError: the migration failed; the cause is chained.
    """
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, schema, revision)
    except Exception as exc:
        raise MigrationError(f"upgrading schema {schema!r} to {revision} failed: {exc}") from exc
