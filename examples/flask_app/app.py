"""A Flask + Flask-SQLAlchemy sign-up service: the welcome job is enqueued in
``db.session`` with the sign-up row, and ``flask backfill worker`` runs it.

Run it (``DATABASE_URL`` set, the ``flask`` extra installed)::

    FLASK_APP=examples.flask_app.app flask backfill-example-setup   # tables
    FLASK_APP=examples.flask_app.app flask run                      # the web app
    FLASK_APP=examples.flask_app.app flask backfill worker --queue fast=4
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, cast

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, MetaData, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import enqueue
from backfill_sa.integrations.flask import init_app
from backfill_sa.tasks import JobContext, TaskRegistry


class Base(DeclarativeBase):
    """The application's models, in schema ``signups_app``."""

    metadata = MetaData(schema="signups_app")


class Signup(Base):
    """A sign-up; its welcome mail is a job."""

    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    welcomed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


def database(app: Flask) -> SQLAlchemy:
    """The app's Flask-SQLAlchemy extension."""
    return cast(SQLAlchemy, app.extensions["sqlalchemy"])


def build_registry(app: Flask) -> TaskRegistry:
    """The app's tasks; sync handlers, each in an app context of its own."""
    registry = TaskRegistry()

    @registry.task("send_welcome", queue="fast")
    def send_welcome(payload: dict[str, int], ctx: JobContext) -> None:
        with app.app_context():
            session = database(app).session()
            signup = session.get(Signup, payload["signup_id"])
            if signup is not None:
                # (a real app sends mail here)
                signup.welcomed_at = dt.datetime.now(dt.timezone.utc)
            session.commit()

    return registry


def create_app(
    config: Mapping[str, Any] | None = None, *, session_options: dict[str, Any] | None = None
) -> Flask:
    """Build the app.

    Args:
        config: Flask config (default: ``SQLALCHEMY_DATABASE_URI`` from ``DATABASE_URL``).
        session_options: Flask-SQLAlchemy session options (tests join their
            transaction with :func:`backfill_sa.integrations.flask.testing_session_options`).
    """
    app = Flask(__name__)
    if config is None:
        url = sync_url(os.environ["DATABASE_URL"]).render_as_string(hide_password=False)
        config = {"SQLALCHEMY_DATABASE_URI": url}
    app.config.update(config)
    db = SQLAlchemy(app, session_options=session_options or {})
    init_app(app, lambda: build_registry(app))

    @app.post("/signups")
    def sign_up() -> ResponseReturnValue:
        email = str((request.get_json(silent=True) or {}).get("email", ""))
        if "@" not in email:
            abort(400, "email: must contain @")
        signup = Signup(email=email)
        db.session.add(signup)
        db.session.flush()
        enqueue(db.session(), "send_welcome", {"signup_id": signup.id}, queue="fast")
        db.session.commit()
        return jsonify(id=signup.id), 201

    @app.get("/signups/<int:signup_id>")
    def show(signup_id: int) -> ResponseReturnValue:
        signup = db.session.get(Signup, signup_id) or abort(404)
        return jsonify(id=signup.id, email=signup.email, welcomed=signup.welcomed_at is not None)

    @app.cli.command("backfill-example-setup")
    def setup() -> None:
        """Create backfill_sa's tables and the app's."""
        from backfill_sa.migrations import upgrade

        upgrade(db.engine)
        with db.engine.begin() as conn:
            translate = conn.get_execution_options().get("schema_translate_map") or {}
            conn.exec_driver_sql(
                f"CREATE SCHEMA IF NOT EXISTS {translate.get('signups_app', 'signups_app')}"
            )
            Base.metadata.create_all(conn)

    return app
