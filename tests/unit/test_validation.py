"""JobSpec validation and normalisation: every rule names its field, no database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from backfill_sa.errors import JobValidationError
from backfill_sa.priority import Priority
from backfill_sa.retry import FAST, RetryPolicy
from backfill_sa.validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    JobSpec,
    check_job_key_mode,
    dump_json,
)

UTC = dt.timezone.utc


def _error(**kwargs: Any) -> JobValidationError:
    kwargs.setdefault("task", "t")
    with pytest.raises(JobValidationError) as info:
        JobSpec(**kwargs)
    return info.value


def test_defaults_normalise_to_the_documented_row() -> None:
    row = JobSpec("send_email").row
    assert row.task == "send_email"
    assert row.queue == "bulk"
    assert row.payload == "{}"
    assert row.metadata == "{}"
    assert row.priority == 0
    assert row.run_at is None
    assert row.max_attempts == 8
    assert row.job_key is None
    assert row.retry_policy is None


def test_payload_is_serialised_once_compactly_and_later_changes_are_not_seen() -> None:
    payload: dict[str, Any] = {"to": "é@example.com", "items": [1, 2.5, None, True]}
    spec = JobSpec("t", payload)
    payload["to"] = "changed"
    assert spec.row.payload == '{"to":"é@example.com","items":[1,2.5,null,true]}'
    assert json.loads(spec.row.payload)["to"] == "é@example.com"


def test_tuples_serialise_as_arrays_and_scalars_are_valid_payloads() -> None:
    assert JobSpec("t", (1, "a")).row.payload == '[1,"a"]'
    assert JobSpec("t", "text").row.payload == '"text"'
    assert JobSpec("t", 0).row.payload == "0"


def test_retry_policy_is_stored_as_its_json_and_sets_max_attempts() -> None:
    spec = JobSpec("t", retry=FAST)
    assert spec.row.retry_policy is not None
    assert json.loads(spec.row.retry_policy) == FAST.to_json()
    assert spec.row.max_attempts == FAST.max_attempts == 3


def test_explicit_max_attempts_wins_over_the_retry_policy() -> None:
    assert JobSpec("t", retry=FAST, max_attempts=5).row.max_attempts == 5


def test_priority_enum_becomes_a_plain_int() -> None:
    row = JobSpec("t", priority=Priority.EMERGENCY).row
    assert row.priority == -20
    assert type(row.priority) is int


def test_run_at_is_normalised_to_utc() -> None:
    local = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    row = JobSpec("t", run_at=local).row
    assert row.run_at == local
    assert row.run_at is not None
    assert row.run_at.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("task", "", "1 to 200 characters"),
        ("task", "x" * 201, "1 to 200 characters"),
        ("task", 5, "must be a string"),
        ("task", "a\x00b", "NUL"),
        ("task", "a\ud800", "unpaired surrogates"),
        ("queue", "", "1 to 100 characters"),
        ("queue", "q" * 101, "1 to 100 characters"),
        ("queue", None, "must be a string"),
        ("job_key", "", "1 to 512 characters"),
        ("job_key", "k" * 513, "1 to 512 characters"),
        ("priority", True, "must be an integer"),
        ("priority", 1.0, "must be an integer"),
        ("priority", -32769, "between -32768 and 32767"),
        ("priority", 32768, "between -32768 and 32767"),
        ("run_at", dt.datetime(2030, 1, 1), "timezone-aware"),
        ("run_at", dt.date(2030, 1, 1), "must be a datetime"),
        ("run_at", "2030-01-01T00:00:00Z", "must be a datetime"),
        ("max_attempts", 0, "between 1 and 32767"),
        ("max_attempts", 32768, "between 1 and 32767"),
        ("max_attempts", False, "must be an integer"),
        ("job_key_mode", "upsert", "'replace', 'preserve_run_at', 'unsafe_dedupe' or 'period'"),
        ("retry", {"max_attempts": 3}, "must be a RetryPolicy"),
        ("metadata", ["a"], "must be a JSON object"),
        ("max_payload_bytes", 0, "at least 2"),
    ],
)
def test_each_rule_names_its_field(field: str, value: object, rule: str) -> None:
    error = _error(**{field: value})
    assert error.field == field
    assert rule in error.rule
    assert str(error) == f"{field}: {error.rule}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", "x" * 200),
        ("queue", "q" * 100),
        ("job_key", "k" * 512),
        ("priority", -32768),
        ("priority", 32767),
        ("max_attempts", 1),
        ("max_attempts", 32767),
        ("job_key_mode", "preserve_run_at"),
        ("job_key_mode", "unsafe_dedupe"),
    ],
)
def test_limits_are_inclusive(field: str, value: object) -> None:
    kwargs: dict[str, Any] = {"task": "t", field: value}
    assert getattr(JobSpec(**kwargs), field) == value


def test_run_at_outside_the_utc_range_is_refused() -> None:
    early = dt.datetime(1, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    error = _error(run_at=early)
    assert (error.field, error.rule) == ("run_at", "must be representable in UTC")


@pytest.mark.parametrize(
    ("payload", "field", "rule"),
    [
        ({"items": [1, 2, Decimal("1.5")]}, "payload.items[2]", "Decimal is not JSON-serialisable"),
        ({"a": {"b": float("nan")}}, "payload.a.b", "NaN and Infinity"),
        ([float("inf")], "payload[0]", "NaN and Infinity"),
        ({"when": dt.datetime(2030, 1, 1, tzinfo=UTC)}, "payload.when", "datetime is not"),
        ({1: "one"}, "payload[1]", "keys must be strings"),
        ({"a": {None: 1}}, "payload.a[None]", "keys must be strings"),
        ({"a b": {"c": {1, 2}}}, "payload['a b'].c", "set is not JSON-serialisable"),
        ({"s": "a\x00b"}, "payload.s", "NUL"),
        ({"k\x00": 1}, "payload['k\\x00']", "NUL"),
        ({"s": "\udc80"}, "payload.s", "unpaired surrogates"),
        (b"bytes", "payload", "bytes is not JSON-serialisable"),
    ],
)
def test_payload_errors_give_the_path_to_the_bad_value(
    payload: object, field: str, rule: str
) -> None:
    error = _error(payload=payload)
    assert error.field == field
    assert rule in error.rule


def test_circular_payload_is_refused_with_its_path() -> None:
    items: list[object] = [1]
    items.append(items)
    error = _error(payload={"items": items})
    assert error.field == "payload.items[1]"
    assert "circular" in error.rule


def test_deeply_nested_payload_is_refused() -> None:
    payload: object = []
    for _ in range(100_000):
        payload = [payload]
    error = _error(payload=payload)
    assert error.field == "payload"
    assert "nested too deeply" in error.rule


def test_a_backslash_u0000_text_is_not_mistaken_for_nul() -> None:
    # The JSON text holds "\\u0000" (an escaped backslash), which jsonb accepts.
    assert JobSpec("t", {"s": "\\u0000"}).row.payload == '{"s":"\\\\u0000"}'


def test_payload_size_limit_counts_utf8_bytes() -> None:
    text = "é" * 10  # 20 bytes in UTF-8, 10 characters
    limit = len(json.dumps(text, ensure_ascii=False).encode()) - 1
    error = _error(payload=text, max_payload_bytes=limit)
    assert error.field == "payload"
    assert f"at most {limit} bytes" in error.rule
    JobSpec("t", text, max_payload_bytes=limit + 1)


def test_default_payload_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1_048_576
    big = "x" * (DEFAULT_MAX_PAYLOAD_BYTES - 2)  # plus two quotes: exactly the limit
    JobSpec("t", big)
    error = _error(payload=big + "x")
    assert error.field == "payload"


def test_metadata_follows_the_payload_rules() -> None:
    error = _error(metadata={"trace": {"span": float("nan")}})
    assert error.field == "metadata.trace.span"
    error = _error(metadata={"tags": "x" * 100}, max_payload_bytes=50)
    assert error.field == "metadata"


def test_metadata_accepts_any_mapping() -> None:
    spec = JobSpec("t", metadata=MappingProxyType({"tenant": "acme"}))
    assert spec.row.metadata == '{"tenant":"acme"}'


def test_jobspec_is_frozen_and_hashable() -> None:
    spec = JobSpec("t", {"a": 1}, retry=RetryPolicy())
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.task = "other"  # type: ignore[misc]
    assert hash(spec) == hash(JobSpec("t", {"a": 1}, retry=RetryPolicy()))
    assert spec == JobSpec("t", {"a": 1}, retry=RetryPolicy())
    assert spec != JobSpec("t", {"a": 2}, retry=RetryPolicy())


def test_dump_json_reports_under_the_field_name_given() -> None:
    with pytest.raises(JobValidationError) as info:
        dump_json({"x": [object()]}, "args", 100)
    assert info.value.field == "args.x[0]"


def test_check_job_key_mode_returns_the_mode() -> None:
    assert check_job_key_mode("replace") == "replace"
    with pytest.raises(JobValidationError):
        check_job_key_mode(None)


def test_payload_text_is_what_json_dumps_gives() -> None:
    values: list[object] = [
        {"n": 17, "kind": "benchmark", "nested": {"a": [1, 2.5, None, True, False]}},
        ["é", "日本", {"k": -0.0}, 10**30, 1e-300],
        "plain",
        3,
        {"": {}, "x": []},
        (1, 2),
    ]
    for value in values:
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        assert JobSpec("t", value).row.payload == expected


def test_a_refused_payload_does_not_affect_the_next() -> None:
    items: list[object] = []
    items.append(items)
    assert "circular" in _error(payload=items).rule
    assert JobSpec("t", {"a": [1, [2]]}).row.payload == '{"a":[1,[2]]}'
    assert JobSpec("t", [[1], [1]]).row.payload == "[[1],[1]]"  # same list twice is fine
    shared = [1]
    assert JobSpec("t", {"a": shared, "b": shared}).row.payload == '{"a":[1],"b":[1]}'


def test_named_and_plain_int_priorities_both_become_plain_ints() -> None:
    for given, stored in ((Priority.BULK_DEFAULT, 0), (Priority.FAST_HIGH, -10), (7, 7)):
        row = JobSpec("t", priority=given).row
        assert (row.priority, type(row.priority)) == (stored, int)
    assert type(JobSpec("t").row.priority) is int
