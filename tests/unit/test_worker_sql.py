"""The worker's pre-rendered SQL is what the Core builders compile to, and its JSON decoding."""

from __future__ import annotations

import json

import pytest

from backfill_sa.statements import worker_sql
from backfill_sa.statements.render import render_all
from backfill_sa.statements.rendered import SCHEMA_PLACEHOLDER, RenderedSql
from backfill_sa.worker.db import decode_json


def test_every_builder_is_rendered_and_matches_the_generated_module() -> None:
    fresh = render_all()
    assert sorted(fresh) == sorted(worker_sql.__all__), (
        "run python -m backfill_sa.statements.render"
    )
    for name, expected in fresh.items():
        stored = getattr(worker_sql, name)
        assert (stored.text, stored.params, dict(stored.defaults), stored.inline) == (
            expected.text,
            expected.params,
            dict(expected.defaults),
            expected.inline,
        ), f"{name} is stale: run python -m backfill_sa.statements.render"


def test_the_schema_is_substituted_in_every_table_reference() -> None:
    sql = worker_sql.job_claim_batch.for_schema("tenant_a", {"limit": 7})
    assert SCHEMA_PLACEHOLDER not in sql
    assert "tenant_a.jobs" in sql
    assert "tenant_a.queues" in sql


def test_the_claim_limit_is_written_into_the_text_and_must_be_an_int() -> None:
    claim = worker_sql.job_complete_and_claim
    assert claim.inline == ("limit",)
    assert "limit" not in claim.params
    assert "LIMIT 7 FOR UPDATE SKIP LOCKED" in claim.for_schema("s", {"limit": 7})
    with pytest.raises(TypeError, match="'limit' must be an int"):
        claim.for_schema("s", {"limit": "7; DROP TABLE jobs"})
    with pytest.raises(KeyError, match="'limit' was not given"):
        claim.for_schema("s", {})


def test_arguments_follow_placeholder_order_with_defaults_filled_in() -> None:
    stmt = RenderedSql("probe", "SELECT $1, $2, $3", ("a", "b", "c"), {"b": 7})
    assert stmt.arguments({"a": 1, "c": 3}) == [1, 7, 3]
    assert stmt.arguments({"a": 1, "b": 2, "c": 3}) == [1, 2, 3]


def test_a_missing_argument_names_the_statement_and_the_parameter() -> None:
    stmt = RenderedSql("probe", "SELECT $1", ("a",))
    with pytest.raises(KeyError, match="probe: parameter 'a' was not given"):
        stmt.arguments({})


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 17, "kind": "benchmark", "pad": "xx"}',
        "{}",
        "[1, 2.5, null, true]",
        '"caf\\u00e9"',
        '  {"a": 1}  ',
        "0",
    ],
)
def test_the_workers_json_decoder_agrees_with_json_loads(text: str) -> None:
    assert decode_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1} {"b": 2}', "", "{", "nan?"])
def test_the_workers_json_decoder_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        decode_json(text)
