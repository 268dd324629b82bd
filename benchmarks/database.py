"""The PostgreSQL server under test: databases per library, URLs, and a few server facts."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from backfill_sa.dburl import parse_url
from benchmarks.measurement import PostgresCpu

__all__ = ["Server", "server_from_env"]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server reached through an admin DSN (any database on it).

    Attributes:
        dsn: plain libpq ``postgresql://`` DSN of the admin database.
    """

    dsn: str

    def dsn_for(self, database: str) -> str:
        """Return the plain DSN of ``database`` on this server."""
        return make_url(self.dsn).set(database=database).render_as_string(hide_password=False)

    def connect(self, database: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        """Open an autocommit psycopg connection to ``database`` (default: the admin one).

        Raises:
            psycopg.OperationalError: the server cannot be reached.
        """
        dsn = self.dsn if database is None else self.dsn_for(database)
        return psycopg.connect(dsn, autocommit=True)

    def create_database(self, name: str) -> str:
        """Drop ``name`` if it exists, create it empty, and return its DSN.

        Raises:
            ValueError: ``name`` is not a plain lower-case identifier.
            psycopg.Error: the server refused.
        """
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r}: must be a lower-case identifier")
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` (terminating its sessions) if it exists.

        Raises:
            psycopg.Error: the server refused.
        """
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    @contextmanager
    def cpu_meter(self, database: str) -> Iterator[PostgresCpu | None]:
        """Yield a meter of the CPU of ``database``'s backends (None when the server is
        not local), leaving out the meter's own connection, which stays open meanwhile.

        Raises:
            psycopg.OperationalError: the server cannot be reached.
        """
        with self.connect(database) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            pid = int(str(row[0])) if row else 0
            yield PostgresCpu.attach(pid, database, exclude=[pid])

    def facts(self) -> dict[str, str]:
        """Return the server's version and the settings that matter for these numbers."""
        names = (
            "server_version",
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "max_connections",
            "work_mem",
            "autovacuum",
        )
        with self.connect() as conn:
            result: dict[str, str] = {}
            for name in names:
                row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
                result[name] = str(row[0]) if row else ""
            row = conn.execute("SELECT inet_server_addr()::text").fetchone()
            result["server_addr"] = str(row[0]) if row and row[0] else "unix socket"
        return result


def server_from_env(url: str | None = None) -> Server:
    """Build the :class:`Server` from ``url``, else ``DATABASE_URL``, else the embedded one.

    Raises:
        backfill_sa.errors.ConfigurationError: the URL is not a PostgreSQL URL.
        backfill_sa.errors.DatabaseNotConfiguredError: nothing is set and the
            ``embedded`` extra is not installed.
    """
    if url:
        raw = url
    elif os.environ.get("DATABASE_URL"):
        raw = os.environ["DATABASE_URL"]
    else:
        from backfill_sa.embedded import resolve_database_url

        raw = resolve_database_url()
    plain = parse_url(raw).set(drivername="postgresql")
    return Server(plain.render_as_string(hide_password=False))
