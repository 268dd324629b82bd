"""Fixtures for the migration tests: empty schemas, named uniquely, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from backfill_sa.dburl import sync_url
from tests.migrations.helpers import drop_schemas


@pytest.fixture
def new_schema(admin_engine: Engine) -> Iterator[Callable[[str], str]]:
    """Make unique schema names (nothing is created); every one is dropped afterwards."""
    made: list[str] = []

    def make(prefix: str = "m") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        made.append(name)
        return name

    yield make
    drop_schemas(admin_engine, *made)


@pytest.fixture
def fresh_schema(new_schema: Callable[[str], str]) -> str:
    """A unique schema name that does not exist yet; dropped after the test."""
    return new_schema("m")


@pytest.fixture
def sync_db_url(database_url: str) -> str:
    """The server under test as a sync (psycopg) SQLAlchemy URL string."""
    return sync_url(database_url).render_as_string(hide_password=False)
