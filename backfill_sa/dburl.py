"""Database URLs: accept every common PostgreSQL form, hand each part the driver it needs.

``DATABASE_URL`` may be the plain ``postgresql://user:pass@host:port/db`` (or
``postgres://``) form that libpq tools use, or any SQLAlchemy
``postgresql+driver://`` form. The worker and async APIs need asyncpg, sync
helpers (migrations, CLI) need a sync driver: psycopg (v3) when installed, else
psycopg2, else the pure-Python pg8000.
"""

from __future__ import annotations

import importlib.util

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from backfill_sa.errors import ConfigurationError

__all__ = ["async_url", "libpq_dsn", "parse_url", "sync_url"]

_SYNC_DRIVERS = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"), ("pg8000", "pg8000"))


def parse_url(url: str | URL) -> URL:
    """Parse ``url`` and check that it points at PostgreSQL.

    Raises:
        ConfigurationError: the URL cannot be parsed or is not a PostgreSQL URL.
    """
    if isinstance(url, URL):
        parsed = url
    else:
        text = url.strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text[len("postgres://") :]
        try:
            parsed = make_url(text)
        except ArgumentError as exc:
            raise ConfigurationError(
                "DATABASE_URL", f"cannot be parsed as a database URL ({exc})"
            ) from exc
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(
            "DATABASE_URL", f"must be a PostgreSQL URL, got scheme {parsed.drivername!r}"
        )
    return parsed


def async_url(url: str | URL) -> URL:
    """Return ``url`` with the asyncpg driver, whatever driver it named.

    Raises:
        ConfigurationError: see :func:`parse_url`.
    """
    parsed = parse_url(url)
    query = {k: v for k, v in parsed.query.items() if k != "sslmode"}
    mode = parsed.query.get("sslmode")
    if isinstance(mode, str) and "ssl" not in query:
        # asyncpg takes libpq's modes (disable ... verify-full) as its `ssl` argument.
        query["ssl"] = mode
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def sync_url(url: str | URL) -> URL:
    """Return ``url`` with a synchronous driver.

    A URL that names a sync driver keeps it; a plain or asyncpg URL gets the first
    installed of psycopg, psycopg2 and pg8000.

    Raises:
        ConfigurationError: see :func:`parse_url`; or no sync driver is installed.
    """
    parsed = parse_url(url)
    driver = parsed.get_driver_name()
    if "+" in parsed.drivername and driver not in ("asyncpg", "psycopg_async"):
        return parsed
    for module, name in _SYNC_DRIVERS:
        if importlib.util.find_spec(module) is not None:
            query = dict(parsed.query)
            ssl = query.pop("ssl", None)
            if ssl is not None and "sslmode" not in query:
                query["sslmode"] = ssl
            return parsed.set(drivername=f"postgresql+{name}", query=query)
    raise ConfigurationError(
        "DATABASE_URL",
        "a synchronous PostgreSQL driver is needed for this command: pip install 'psycopg[binary]'",
    )


def libpq_dsn(url: str | URL) -> str:
    """Return ``url`` as a plain ``postgresql://`` DSN (for asyncpg.connect or psql).

    Raises:
        ConfigurationError: see :func:`parse_url`.
    """
    parsed = parse_url(url)
    query = {k: v for k, v in parsed.query.items() if k != "ssl"}
    mode = parsed.query.get("ssl")
    if isinstance(mode, str) and "sslmode" not in query:
        query["sslmode"] = mode  # a DSN names the mode libpq's way
    return parsed.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
