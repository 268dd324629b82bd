"""Alembic environment used by backfill_sa's own runner (CLI and ``upgrade(engine)``).

Applications that run our revisions from their own Alembic history do not use this
file: they add ``backfill_sa.migrations:versions`` to their ``version_locations``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text

from backfill_sa.migrations.schema import target_schema


def _configure(connection: Connection | None, url: str | None) -> None:
    schema = target_schema()
    context.configure(
        connection=connection,
        url=url,
        version_table="alembic_version",
        version_table_schema=schema,
        include_schemas=False,
        literal_binds=connection is None,
        transaction_per_migration=False,
    )


def run_offline() -> None:
    """Emit the DDL as SQL text (``migrate --sql``)."""
    url = context.config.get_main_option("sqlalchemy.url")
    _configure(None, url)
    schema = target_schema()
    context.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the revisions on the connection handed in, or on one made from the URL."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        url = context.config.get_main_option("sqlalchemy.url")
        assert url, "sqlalchemy.url or a connection must be configured"
        engine = create_engine(url)
        with engine.begin() as conn:
            _run_on(conn)
        engine.dispose()
    else:
        _run_on(connection)


def _run_on(connection: Connection) -> None:
    schema = target_schema()
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    _configure(connection, None)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
