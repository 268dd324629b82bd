"""``flask backfill worker``: runs what the app committed (real commits, so schemas
of its own rather than the plugin's per-test transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from backfill_sa.dburl import sync_url
from examples.flask_app.app import create_app


@pytest.fixture
def committed_schemas(backfill_database_url: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {"backfill": f"flaskcli_bf_{suffix}", "signups_app": f"flaskcli_app_{suffix}"}
    yield names
    engine = create_engine(sync_url(backfill_database_url))
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    engine.dispose()


def test_flask_backfill_worker_runs_the_committed_jobs(
    backfill_database_url: str, committed_schemas: dict[str, str]
) -> None:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": sync_url(backfill_database_url),
            "SQLALCHEMY_ENGINE_OPTIONS": {
                "execution_options": {"schema_translate_map": committed_schemas}
            },
            "BACKFILL_SCHEMA": committed_schemas["backfill"],
        }
    )
    cli = app.test_cli_runner()
    setup = cli.invoke(args=["backfill-example-setup"])
    assert setup.exit_code == 0, setup.output
    client = app.test_client()
    signup_id = client.post("/signups", json={"email": "ada@example.com"}).get_json()["id"]
    assert client.get(f"/signups/{signup_id}").get_json()["welcomed"] is False

    result = cli.invoke(args=["backfill", "worker", "--burst", "--queue", "fast=2"])

    assert result.exit_code == 0, result.output
    assert "worker: 1 succeeded, 0 retried, 0 snoozed, 0 dead-lettered" in result.output
    assert client.get(f"/signups/{signup_id}").get_json()["welcomed"] is True
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


def test_a_bad_queue_option_names_the_rule() -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://unused/db"})

    result = app.test_cli_runner().invoke(args=["backfill", "worker", "--queue", "fast"])

    assert result.exit_code == 2
    assert "'fast' must be NAME=CONCURRENCY, e.g. fast=10" in result.output
