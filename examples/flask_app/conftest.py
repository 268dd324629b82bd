"""The sign-up service's test set-up with backfill_sa's pytest plugin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import Connection, create_engine, text

from backfill_sa.dburl import sync_url
from backfill_sa.integrations.flask import testing_session_options
from backfill_sa.tasks import TaskRegistry
from backfill_sa.testing import mode_info
from examples.flask_app.app import Base, build_registry, create_app


@pytest.fixture(scope="session")
def signups_schema(backfill_database_url: str) -> Iterator[str]:
    """The app's tables in a schema of their own for this test session."""
    name = f"signups_test_{uuid.uuid4().hex[:8]}"
    engine = create_engine(
        sync_url(backfill_database_url),
        execution_options={"schema_translate_map": {"signups_app": name}},
    )
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
        Base.metadata.create_all(conn)
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def backfill_schema_translate_map(backfill_schema: str, signups_schema: str) -> dict[str, str]:
    """The plugin's connection sees both schemas under their usual names."""
    return {"backfill": backfill_schema, "signups_app": signups_schema}


@pytest.fixture
def app(backfill_connection: Connection, backfill_mode: str) -> Flask:
    """The app, ``db.session`` joined to the test's transaction (and in its mode)."""
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://unused", "TESTING": True},
        session_options=testing_session_options(backfill_connection),
    )
    if backfill_mode == "inline":
        session = app.extensions["sqlalchemy"].session
        session.session_factory.configure(info=mode_info("inline", build_registry(app)))
    return app


@pytest.fixture
def registry(app: Flask) -> TaskRegistry:
    """The app's tasks."""
    return build_registry(app)
