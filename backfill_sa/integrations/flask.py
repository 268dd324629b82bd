"""Flask with Flask-SQLAlchemy: the ``flask backfill worker`` command, sessions for tests.

Jobs need nothing Flask-specific: enqueue through ``db.session()`` and they commit
with the request's rows. This module adds the worker command and the session
options that join ``db.session`` to a test's transaction. Flask, click and
Flask-SQLAlchemy are imported inside the functions (extra ``flask``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backfill_sa.config import WorkerConfig
from backfill_sa.tasks import TaskRegistry

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Connection, Engine

__all__ = ["EXTENSION_KEY", "init_app", "testing_session_options"]

EXTENSION_KEY = "backfill_sa"
"""Key of this extension's state in ``app.extensions``."""

RegistrySource = TaskRegistry | Callable[[], TaskRegistry]


def _queues(values: tuple[str, ...]) -> dict[str, int] | None:
    import click

    if not values:
        return None
    queues: dict[str, int] = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
            raise click.BadParameter(
                f"{value!r} must be NAME=CONCURRENCY, e.g. fast=10", param_hint="--queue"
            )
        queues[name.strip()] = int(count)
    return queues


def init_app(app: Flask, registry: RegistrySource) -> None:
    """Add the ``flask backfill worker`` command to ``app``.

    The worker reads ``BACKFILL_DATABASE_URL`` from the app's config, else
    ``SQLALCHEMY_DATABASE_URI``, and ``BACKFILL_SCHEMA`` (default ``backfill``).
    ``flask backfill worker --queue fast=10 --queue bulk=5 [--burst]`` runs until
    SIGTERM/SIGINT (or, with ``--burst``, until nothing is due).

    Args:
        app: the Flask application.
        registry: its TaskRegistry, or a function returning it (called when the
            command runs, inside the app context: handlers may close over ``app``).
    """
    import click
    from flask.cli import AppGroup, with_appcontext

    app.extensions[EXTENSION_KEY] = registry
    group = AppGroup("backfill", help="backfill_sa job queue commands.")

    @group.command("worker")
    @click.option("--queue", "queue_specs", multiple=True, help="NAME=CONCURRENCY (repeatable).")
    @click.option("--burst", is_flag=True, help="Run what is due, then exit.")
    @click.option("--log-level", default="INFO", show_default=True)
    @with_appcontext
    def worker(queue_specs: tuple[str, ...], burst: bool, log_level: str) -> None:
        """Run a worker for this app's tasks."""
        from flask import current_app

        from backfill_sa.worker import WorkerRunner

        logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s %(message)s")
        config = current_app.config
        url = config.get("BACKFILL_DATABASE_URL") or config.get("SQLALCHEMY_DATABASE_URI")
        if not url:
            raise click.UsageError("set SQLALCHEMY_DATABASE_URI (or BACKFILL_DATABASE_URL)")
        if not isinstance(url, str):  # a sqlalchemy URL: str() would hide the password
            url = url.render_as_string(hide_password=False)
        options: dict[str, Any] = {"database_url": url}
        if config.get("BACKFILL_SCHEMA"):
            options["schema"] = config["BACKFILL_SCHEMA"]
        queues = _queues(queue_specs)
        if queues is not None:
            options["queues"] = queues
        source: RegistrySource = current_app.extensions[EXTENSION_KEY]
        tasks = source if isinstance(source, TaskRegistry) else source()
        runner = WorkerRunner(WorkerConfig(**options), tasks)
        result = asyncio.run(runner.run(burst=burst, handle_signals=True))
        click.echo(
            f"worker: {result.succeeded} succeeded, {result.retried} retried, "
            f"{result.snoozed} snoozed, {result.dead_lettered} dead-lettered"
        )

    app.cli.add_command(group)


def testing_session_options(connection: Connection, **options: Any) -> dict[str, Any]:
    """Return ``SQLAlchemy(session_options=...)`` that join ``db.session`` to ``connection``.

    For tests: pass it when the app (and its ``SQLAlchemy``) is created for the
    test, with the plugin's ``backfill_connection``; ``db.session`` then commits to
    savepoints of the test's transaction, which is rolled back at the end.
    Flask-SQLAlchemy picks an engine per model and ignores a session's ``bind``,
    so the sessions are of a subclass that prefers the bind when there is one.

    Args:
        connection: a connection in the test's outer transaction.
        **options: further session options (``info``, ``expire_on_commit``, ...).
    """
    from flask_sqlalchemy.session import Session as FlaskSession

    class JoinedSession(FlaskSession):
        def get_bind(
            self,
            mapper: Any | None = None,
            clause: Any | None = None,
            bind: Engine | Connection | None = None,
            **kwargs: Any,
        ) -> Engine | Connection:
            if bind is None and self.bind is not None:
                return self.bind
            return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)

    return {
        "bind": connection,
        "join_transaction_mode": "create_savepoint",
        "class_": JoinedSession,
        **options,
    }
