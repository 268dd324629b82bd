"""Database URLs: accept every common PostgreSQL form, hand each part the driver it needs.

``DATABASE_URL`` may be the plain ``postgresql://user:pass@host:port/db`` (or
``postgres://``) form that libpq tools use, or any SQLAlchemy
``postgresql+driver://`` form. The worker and async APIs need asyncpg, sync
helpers (migrations, CLI) need a sync driver: psycopg (v3) when installed, else
psycopg2, else the pure-Python pg8000.

:func:`check_url` and :func:`libpq_dsn` work on the text and load no SQLAlchemy (the
worker uses them); the functions that return a SQLAlchemy ``URL`` import it when called.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING

from backfill_sa.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "async_connect_args",
    "async_url",
    "check_url",
    "libpq_dsn",
    "parse_url",
    "redacted_url",
    "sync_url",
]

_POSTGRES_SCHEME = re.compile(r"^(?:postgres|postgresql)(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*):[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)

_SYNC_DRIVERS = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"), ("pg8000", "pg8000"))


def parse_url(url: str | URL) -> URL:
    """Parse ``url`` and check that it points at PostgreSQL.

    Raises:
        ConfigurationError: the URL cannot be parsed or is not a PostgreSQL URL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str):
        parsed = url
    else:
        text = check_url(url)
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

    libpq's ``sslmode`` becomes asyncpg's ``ssl``; libpq's ``connect_timeout`` is
    dropped (asyncpg takes no such URL parameter): pass :func:`async_connect_args`
    as ``connect_args`` to keep it.

    Raises:
        ConfigurationError: see :func:`parse_url`.
    """
    parsed = parse_url(url)
    query = {k: v for k, v in parsed.query.items() if k not in ("sslmode", "connect_timeout")}
    mode = parsed.query.get("sslmode")
    if isinstance(mode, str) and "ssl" not in query:
        # asyncpg takes libpq's modes (disable ... verify-full) as its `ssl` argument.
        query["ssl"] = mode
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def async_connect_args(url: str | URL) -> dict[str, float]:
    """Return asyncpg ``connect_args`` for what :func:`async_url` cannot say in the URL.

    libpq's ``connect_timeout=SECONDS`` becomes ``{"timeout": SECONDS}``.

    Raises:
        ConfigurationError: see :func:`parse_url`, or ``connect_timeout`` is not a number.
    """
    seconds = parse_url(url).query.get("connect_timeout")
    if not isinstance(seconds, str):
        return {}
    try:
        return {"timeout": float(seconds)}
    except ValueError:
        raise ConfigurationError(
            "DATABASE_URL", f"connect_timeout must be a number of seconds, got {seconds!r}"
        ) from None


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


def check_url(url: str) -> str:
    """Return ``url`` stripped of surrounding blanks if it is a PostgreSQL URL.

    Only the scheme is checked (``postgresql``, ``postgres``, or either with a
    ``+driver``); the rest is left to the driver that connects.

    Raises:
        ConfigurationError: the text is not a URL, or not a PostgreSQL one.
    """
    text = url.strip()
    if _POSTGRES_SCHEME.match(text):
        return text
    scheme = _SCHEME.match(text)
    if scheme is None:
        raise ConfigurationError(
            "DATABASE_URL", "cannot be parsed as a database URL (expected scheme://...)"
        )
    raise ConfigurationError(
        "DATABASE_URL", f"must be a PostgreSQL URL, got scheme {scheme.group(1)!r}"
    )


def libpq_dsn(url: str | URL) -> str:
    """Return ``url`` as a plain ``postgresql://`` DSN (for asyncpg.connect or psql).

    The driver suffix is dropped and asyncpg's ``ssl=MODE`` query parameter becomes
    libpq's ``sslmode=MODE`` (unless ``sslmode`` is there already); everything else
    is kept as written.

    Raises:
        ConfigurationError: see :func:`check_url`.
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    text = check_url(text)
    rest = _POSTGRES_SCHEME.sub("", text, count=1)
    base, _, query = rest.partition("?")
    pairs = [pair for pair in query.split("&") if pair]
    keys = {pair.partition("=")[0] for pair in pairs}
    if "ssl" in keys:
        keep_ssl_as_sslmode = "sslmode" not in keys
        pairs = [
            "sslmode" + pair[3:] if keep_ssl_as_sslmode else pair
            for pair in pairs
            if pair.partition("=")[0] != "ssl" or keep_ssl_as_sslmode
        ]
    return "postgresql://" + base + ("?" + "&".join(pairs) if pairs else "")


def redacted_url(url: str) -> str:
    """Return ``url`` with its password (in the user part or a ``password=`` query
    parameter) replaced by ``***``, for logs and messages; loads no SQLAlchemy.

    Example:
        ``redacted_url("postgresql://u:secret@db/app")`` is ``"postgresql://u:***@db/app"``.
    """
    text = _USERINFO_PASSWORD.sub(r"\1:***@", url.strip(), count=1)
    return _QUERY_PASSWORD.sub(r"\1***", text)
