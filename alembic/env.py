"""The maintainers' Alembic environment: write and try new backfill_sa revisions.

Not shipped. ``alembic.ini`` at the repository root points here; new revisions go to
``backfill_sa/migrations/versions`` on the ``backfill_sa`` branch. The database is
``DATABASE_URL`` (any form :mod:`backfill_sa.dburl` accepts) unless
``sqlalchemy.url`` is set; the schema is ``-x backfill_schema=NAME``, else
``$BACKFILL_SCHEMA``, else ``backfill``. Our version table lives in that schema, as
with ``python -m backfill_sa migrate``, so both can be used on the same database.

Autogenerate compares :data:`backfill_sa.models.metadata` with that schema only, and
a post-write hook rewrites the name it compared against into ``schema=schema`` (the
revision's ``target_schema()``), so a revision generated against a scratch schema
works in every deployment. See ``alembic/README.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from logging.config import fileConfig
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import context
from alembic.script import write_hooks
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from backfill_sa.dburl import sync_url
from backfill_sa.migrations.autogen import metadata_in_schema
from backfill_sa.migrations.schema import DEFAULT_SCHEMA, target_schema
from backfill_sa.models import metadata

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

VERSION_TABLE = "alembic_version"
SCHEMA = target_schema()
target_metadata = metadata if SCHEMA == DEFAULT_SCHEMA else metadata_in_schema(metadata, SCHEMA)


@write_hooks.register("backfill_schema_variable")
def use_schema_variable(filename: str, options: Mapping[str, str]) -> None:
    """Post-write hook: turn ``schema="<the schema compared>"`` into ``schema=schema``.

    Revisions must name the schema through ``target_schema()`` (the template binds
    it to the local ``schema``), never as a literal. ``revision_environment = true``
    in ``alembic.ini`` makes this module run, and so register the hook, for every
    ``alembic revision``.
    """
    path = Path(filename)
    literal = re.compile(rf"""\bschema=(["']){re.escape(SCHEMA)}\1""")
    path.write_text(literal.sub("schema=schema", path.read_text()))


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Reflect our schema only; everything else in the database is someone else's."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def _url() -> str:
    configured = context.config.get_main_option("sqlalchemy.url")
    if configured:
        return configured
    from_env = os.environ.get("DATABASE_URL")
    if not from_env:
        raise SystemExit("DATABASE_URL: set it (or sqlalchemy.url in alembic.ini)")
    return sync_url(from_env).render_as_string(hide_password=False)


def _configure(connection: Connection | None) -> None:
    context.configure(
        connection=connection,
        url=None if connection is not None else _url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=include_name,
        compare_type=True,
        compare_server_default=True,
        literal_binds=connection is None,
    )


def run_offline() -> None:
    """``alembic upgrade --sql``: print the DDL."""
    _configure(None)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate or autogenerate against the database."""
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(CreateSchema(SCHEMA, if_not_exists=True))
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
