"""Shipped Alembic revisions (branch label ``backfill_sa``) and the three ways to apply them.

* From the application's own Alembic history: add :data:`VERSION_LOCATION` (or
  :func:`version_location`) to ``version_locations``, pass :func:`include_object` /
  :func:`include_name` and :func:`revision_directives` (which keeps the
  application's new revisions on its own branch, in its own folder) to
  ``context.configure``, and run ``alembic upgrade heads``.
* Without Alembic in the application: ``python -m backfill_sa migrate`` (see
  :func:`backfill_sa.migrations.runner.run_migrate`).
* At application start-up: ``upgrade(engine)`` or ``await upgrade(async_engine)``.

Pick one per database: the first records our revision in the application's version
table, the other two in ``<schema>.alembic_version``. ``docs/migrations.md`` has
copy-paste snippets for each.

Importing this package is cheap (SQLAlchemy only); Alembic's command machinery is
imported when a migration actually runs.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, overload

from sqlalchemy import Connection, Engine

from backfill_sa.errors import ConfigurationError, MigrationError
from backfill_sa.migrations.autogen import include_name, include_object
from backfill_sa.migrations.placement import revision_directives
from backfill_sa.migrations.schema import DEFAULT_SCHEMA, validate_schema_name

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "BRANCH_LABEL",
    "VERSION_LOCATION",
    "alembic_config",
    "include_name",
    "include_object",
    "revision_directives",
    "upgrade",
    "upgrade_async",
    "version_location",
]

BRANCH_LABEL = "backfill_sa"
"""Branch label of our revisions: ``alembic upgrade backfill_sa@head`` applies only ours."""

VERSION_LOCATION = "backfill_sa.migrations:versions"
"""The ``package:path`` entry to add to an application's ``version_locations``.

Alembic resolves it with ``importlib.resources``. It contains a colon, so the
application's ``alembic.ini`` must not split ``version_locations`` on colons: use
``path_separator = space`` (or ``newline``), or a TOML list, or
:func:`version_location` instead.
"""

_VERSIONS = Path(__file__).resolve().parent / "versions"


def _is_async_engine(engine: object) -> TypeGuard[AsyncEngine]:
    """Whether ``engine`` is an AsyncEngine, without importing the asyncio extension
    (and with it the ORM) for callers that never use it."""
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(engine, module.AsyncEngine)


def version_location() -> str:
    """Return the absolute path of our versions folder.

    The same folder as :data:`VERSION_LOCATION`, as a plain path, for configurations
    that split ``version_locations`` on the OS path separator (``path_separator =
    os``, Alembic's default template) or that set it in code.
    """
    return str(_VERSIONS)


def alembic_config(schema: str = DEFAULT_SCHEMA, url: str | None = None) -> Config:
    """Return an Alembic ``Config`` for backfill_sa's own environment.

    Args:
        schema: the PostgreSQL schema to migrate (default ``backfill``).
        url: a synchronous SQLAlchemy URL, needed only for offline (``--sql``) runs.

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name.
    """
    from backfill_sa.migrations.runner import alembic_config as make_config

    return make_config(schema, url)


def _schema_for(connection: Connection, schema: str | None) -> str:
    if schema is not None:
        return validate_schema_name(schema)
    mapping = connection.get_execution_options().get("schema_translate_map") or {}
    mapped = mapping.get(DEFAULT_SCHEMA)
    return validate_schema_name(mapped if isinstance(mapped, str) else DEFAULT_SCHEMA)


def _upgrade_on(connection: Connection, schema: str | None, revision: str) -> None:
    from backfill_sa.migrations.runner import apply

    apply(connection, schema=_schema_for(connection, schema), action="upgrade", revision=revision)


def _failed(schema: str | None, revision: str, exc: Exception) -> MigrationError:
    where = f"schema {schema!r}" if schema is not None else "backfill_sa's schema"
    cause = getattr(exc, "orig", None) or exc  # the driver's message, without SQL echo
    return MigrationError(
        f"upgrading {where} to {revision!r} failed: {' '.join(str(cause).split())}"
    )


@overload
def upgrade(engine: Engine, *, schema: str | None = None, revision: str = "heads") -> None: ...


@overload
def upgrade(
    engine: AsyncEngine, *, schema: str | None = None, revision: str = "heads"
) -> Coroutine[Any, Any, None]: ...


def upgrade(
    engine: Engine | AsyncEngine, *, schema: str | None = None, revision: str = "heads"
) -> Coroutine[Any, Any, None] | None:
    """Bring backfill_sa's schema to ``revision`` (default: the newest), at start-up.

    With a sync ``Engine`` it runs now; with an ``AsyncEngine`` it returns an
    awaitable (``await upgrade(async_engine)``). A no-op when the schema is at the
    revision already, and safe when several processes call it at once: they
    serialise on a transaction-scoped advisory lock (so it also works through
    PgBouncer in transaction mode), and the whole upgrade is one transaction.

    Args:
        engine: where to migrate. Its ``schema_translate_map`` for ``backfill`` is
            honoured when ``schema`` is not given.
        schema: the schema to migrate; default the engine's translation of
            ``backfill``, else ``backfill``.
        revision: the target revision; default ``"heads"``.

    Raises:
        ConfigurationError: the schema name is not valid (nothing was run).
        MigrationError: the migration failed; the cause is chained. (With an
            ``AsyncEngine`` both are raised on ``await``.)

    Example:
        ``upgrade(create_engine(url))`` or ``await upgrade(create_async_engine(url))``
    """
    if _is_async_engine(engine):
        return upgrade_async(engine, schema=schema, revision=revision)
    assert isinstance(engine, Engine)
    try:
        with engine.begin() as connection:
            _upgrade_on(connection, schema, revision)
    except (ConfigurationError, MigrationError):
        raise
    except Exception as exc:
        raise _failed(schema, revision, exc) from exc
    return None


async def upgrade_async(
    engine: AsyncEngine, *, schema: str | None = None, revision: str = "heads"
) -> None:
    """Async form of :func:`upgrade` for an ``AsyncEngine`` (``await upgrade(engine)`` is the same).

    Raises:
        ConfigurationError: the schema name is not valid (nothing was run).
        MigrationError: the migration failed; the cause is chained.
    """
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, schema, revision)
    except (ConfigurationError, MigrationError):
        raise
    except Exception as exc:
        raise _failed(schema, revision, exc) from exc
