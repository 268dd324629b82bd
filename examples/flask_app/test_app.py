"""The sign-up service's tests: the job enqueued by a request, drained, its effect checked."""

from __future__ import annotations

import pytest
from flask import Flask

from backfill_sa.tasks import TaskRegistry
from backfill_sa.testing import DrainResult, assert_enqueued, drain, refute_enqueued
from examples.flask_app.app import database


def test_a_signup_is_welcomed_by_its_job(app: Flask, registry: TaskRegistry) -> None:
    client = app.test_client()

    created = client.post("/signups", json={"email": "ada@example.com"})

    assert created.status_code == 201
    signup_id = created.get_json()["id"]
    with app.app_context():
        session = database(app).session()
        assert_enqueued(session, task="send_welcome", payload={"signup_id": signup_id}, count=1)
        assert drain(session, registry) == DrainResult(succeeded=1)
        refute_enqueued(session)
        # Still inside: closing this session without a commit rolls back its savepoint,
        # and with it what the drain did.
        assert client.get(f"/signups/{signup_id}").get_json()["welcomed"] is True


def test_a_refused_signup_enqueues_nothing(app: Flask) -> None:
    refused = app.test_client().post("/signups", json={"email": "not-an-address"})

    assert refused.status_code == 400
    with app.app_context():
        refute_enqueued(database(app).session())


@pytest.mark.backfill_mode("inline")
def test_inline_mode_welcomes_during_the_request(app: Flask) -> None:
    client = app.test_client()

    signup_id = client.post("/signups", json={"email": "bob@example.com"}).get_json()["id"]

    assert client.get(f"/signups/{signup_id}").get_json()["welcomed"] is True
