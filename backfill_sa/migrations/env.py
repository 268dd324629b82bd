"""Alembic environment of backfill_sa's own runner (``migrate`` and ``upgrade(engine)``).

The version table is ``alembic_version`` inside our schema, so this history never
mixes with an application's. Applications that run our revisions from their own
Alembic history do not use this file: they add our versions folder to their
``version_locations`` (see ``docs/migrations.md``).

Online runs get their connection (transaction begun, advisory lock held) through
``config.attributes["connection"]``; a bare ``sqlalchemy.url`` works too, for
``alembic -c`` experiments. Offline runs (``--sql``) print the DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData, Table, create_engine, inspect
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, DropTable

from backfill_sa.migrations.schema import target_schema

VERSION_TABLE = "alembic_version"


def _configure(connection: Connection | None, url: str | None) -> None:
    context.configure(
        connection=connection,
        url=url,
        version_table=VERSION_TABLE,
        version_table_schema=target_schema(),
        include_schemas=False,
        literal_binds=connection is None,
        transaction_per_migration=False,
    )


def run_offline() -> None:
    """Emit the DDL as SQL text.

    From base, the schema is created first (the version table lives in it); down to
    base, the version table is dropped last, as the online runner does.
    """
    schema = target_schema()
    _configure(None, context.config.get_main_option("sqlalchemy.url") or "postgresql://")
    if context.get_starting_revision_argument() in (None, "base"):
        context.execute(CreateSchema(schema, if_not_exists=True))
    with context.begin_transaction():
        context.run_migrations()
        if context.get_revision_argument() in (None, (), "base"):
            version_table = Table(VERSION_TABLE, MetaData(), schema=schema)
            context.execute(DropTable(version_table, if_exists=True))


def _run_on(connection: Connection) -> None:
    schema = target_schema()
    # Only when missing: CREATE SCHEMA, even IF NOT EXISTS, needs CREATE on the
    # database, which a role that merely owns a pre-made schema does not have.
    if not inspect(connection).has_schema(schema):
        connection.execute(CreateSchema(schema))
    _configure(connection, None)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the revisions on the connection handed in, or on one made from the URL."""
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_on(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url: set it, or hand a connection in config.attributes")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
