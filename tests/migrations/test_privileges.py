"""A DBA creates the schema and hands it to the application's role; that role migrates it.

The role owns the schema but has no ``CREATE`` on the database, the usual least
privilege set-up. ``CREATE SCHEMA IF NOT EXISTS`` needs that privilege even when the
schema exists, so nothing on the way may issue it for an existing schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text

from backfill_sa.dburl import sync_url
from backfill_sa.migrations import upgrade
from tests.migrations.helpers import OUR_TABLES, tables_in


@pytest.fixture
def schema_owner(admin_engine: Engine, fresh_schema: str) -> Iterator[str]:
    """A role that owns ``fresh_schema`` and may not create schemas; dropped afterwards."""
    role = f"r_{uuid.uuid4().hex[:12]}"
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        conn.execute(text(f'CREATE SCHEMA "{fresh_schema}" AUTHORIZATION "{role}"'))
        may_create = conn.execute(
            text("SELECT has_database_privilege(:r, current_database(), 'CREATE')"), {"r": role}
        ).scalar_one()
    try:
        if may_create:
            pytest.skip("PUBLIC has CREATE on this database; the set-up cannot be reproduced")
        yield role
    finally:
        with admin_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{fresh_schema}" CASCADE'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def test_owner_of_a_premade_schema_can_upgrade(
    admin_engine: Engine, database_url: str, fresh_schema: str, schema_owner: str
) -> None:
    engine = create_engine(sync_url(database_url))

    @event.listens_for(engine, "connect")
    def _become_owner(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET ROLE "{schema_owner}"')
        cursor.close()
        dbapi_connection.commit()

    try:
        upgrade(engine, schema=fresh_schema)
    finally:
        engine.dispose()
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}
