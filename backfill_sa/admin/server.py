"""Run the admin app with uvicorn from a database URL: what the ``admin`` CLI command calls."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backfill_sa.admin.app import create_app
from backfill_sa.admin.auth import Authenticator, TokenAuth, insecure_no_auth
from backfill_sa.admin.queries import schema_has_tables
from backfill_sa.dburl import async_url
from backfill_sa.errors import ConfigurationError
from backfill_sa.schema_name import DEFAULT_SCHEMA, validate_schema_name

__all__ = ["INSECURE_WARNING", "is_loopback", "resolve_auth", "serve"]

logger = logging.getLogger(__name__)

INSECURE_WARNING = (
    "admin: WARNING: serving WITHOUT AUTHENTICATION (--insecure): anyone who can reach "
    "this port can pause queues, cancel jobs, delete dead letters and read every payload"
)


def is_loopback(host: str) -> bool:
    """Return True when ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_auth(
    auth: TokenAuth | Authenticator | None,
    *,
    host: str,
    insecure: bool,
    environ: Mapping[str, str] | None = None,
) -> TokenAuth | Authenticator:
    """Decide how the standalone server authenticates, or refuse to start.

    ``insecure`` serves without authentication, on a loopback address only. Otherwise
    ``auth`` is used, else the tokens of ``BACKFILL_ADMIN_TOKEN`` /
    ``BACKFILL_ADMIN_READONLY_TOKEN`` (:meth:`TokenAuth.from_env`).

    Raises:
        ConfigurationError: no authentication configured and ``insecure`` not given;
            ``insecure`` with a host that is not loopback; ``insecure`` together with
            ``auth``; a token that is too short.
    """
    if insecure:
        if auth is not None:
            raise ConfigurationError("insecure", "must not be combined with auth")
        if not is_loopback(host):
            raise ConfigurationError(
                "host",
                f"{host!r} is not a loopback address: serving without authentication is "
                "only allowed on 127.0.0.1, ::1 or localhost",
            )
        return insecure_no_auth()
    found = auth if auth is not None else TokenAuth.from_env(environ)
    if found is None:
        raise ConfigurationError(
            "BACKFILL_ADMIN_TOKEN",
            "is not set: set it (and optionally BACKFILL_ADMIN_READONLY_TOKEN) to a secret "
            "of at least 16 characters, or pass --insecure to serve on loopback without "
            "authentication",
        )
    return found


def serve(
    database_url: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    host: str = "127.0.0.1",
    port: int = 8080,
    read_only: bool = False,
    auth: TokenAuth | Authenticator | None = None,
    insecure: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the admin API and dashboard until interrupted (Ctrl-C or SIGTERM).

    Creates an asyncpg engine for ``database_url``, checks that ``schema`` holds
    backfill_sa's tables, serves :func:`~backfill_sa.admin.create_app` with uvicorn
    and disposes of the engine on the way out. Once listening it logs
    ``admin: serving http://HOST:PORT/`` at INFO (``backfill_sa.admin.server``); uvicorn
    logs through ``uvicorn.*`` loggers. Configuring logging is the caller's job.

    Authentication is required: ``auth``, else the tokens in ``BACKFILL_ADMIN_TOKEN``
    (read-write) and ``BACKFILL_ADMIN_READONLY_TOKEN`` (read-only). Without any, it
    refuses to start unless ``insecure`` is given, which serves without
    authentication, logs :data:`INSECURE_WARNING` at WARNING on every start, and is
    refused outright for a ``host`` that is not loopback.

    Args:
        database_url: any PostgreSQL URL form (see :mod:`backfill_sa.dburl`).
        schema: the schema of backfill_sa's tables.
        host: the interface to bind; ``127.0.0.1`` keeps the app local.
        port: the TCP port to listen on (0: any free port, shown in the log line).
        read_only: refuse every mutating request with 403.
        auth: a :class:`~backfill_sa.admin.auth.TokenAuth` or your own authenticator;
            ``None`` reads the tokens from the environment.
        insecure: serve without authentication (loopback only).
        on_ready: called with the app's URL (``http://HOST:PORT/``) once the port is
            bound, before the first request is served; e.g. to print it.

    Raises:
        ConfigurationError: a bad URL, schema name or port; no authentication and
            no ``insecure``; ``insecure`` on a non-loopback host; or the schema has no
            backfill_sa tables (run the migrations first).
        OSError: the database cannot be reached, or ``host``/``port`` cannot be bound
            (address in use, unknown host).
        sqlalchemy.exc.SQLAlchemyError: the database refused the connection.
    """
    validate_schema_name(schema)
    if not 0 <= port <= 65535:
        raise ConfigurationError("port", "must be between 0 and 65535")
    chosen = resolve_auth(auth, host=host, insecure=insecure)
    url = async_url(database_url)
    if insecure:
        logger.warning(INSECURE_WARNING)
    asyncio.run(
        _serve(
            url,
            schema=schema,
            host=host,
            port=port,
            read_only=read_only,
            auth=chosen,
            on_ready=on_ready,
        )
    )


async def _serve(
    url: URL,
    *,
    schema: str,
    host: str,
    port: int,
    read_only: bool,
    auth: TokenAuth | Authenticator,
    on_ready: Callable[[str], None] | None,
) -> None:
    import uvicorn

    engine = create_async_engine(
        url,
        pool_size=4,
        pool_pre_ping=True,
        execution_options={"schema_translate_map": {DEFAULT_SCHEMA: schema}},
    )
    try:
        await _require_tables(engine, schema)
        app = create_app(engine, auth=auth, schema=schema, read_only=read_only)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off")
        # Bound here, not by uvicorn, so that a taken port is an OSError for the
        # caller rather than uvicorn's sys.exit(1).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family) as listener:
            bound = int(listener.getsockname()[1])
            address = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
            logger.info(
                "admin: serving %s (schema %r%s)",
                address,
                schema,
                ", read-only" if read_only else "",
                extra={"host": host, "port": bound, "schema": schema, "read_only": read_only},
            )
            if on_ready is not None:
                on_ready(address)
            await uvicorn.Server(config).serve(sockets=[listener])
    finally:
        await engine.dispose()


async def _require_tables(engine: AsyncEngine, schema: str) -> None:
    async with engine.connect() as connection:
        found = await connection.scalar(schema_has_tables(schema))
    if not found:
        hint = "" if schema == DEFAULT_SCHEMA else f" --schema {schema}"
        raise ConfigurationError(
            "schema",
            f"{schema!r} has no backfill_sa tables; "
            f"run `python -m backfill_sa migrate upgrade{hint}` first",
        )
