"""``--log-format``: the CLI's log records as text lines or as JSON objects."""

from __future__ import annotations

import json

from tests.acceptance.conftest import Runner


def test_log_format_json_writes_one_object_per_record(cli: Runner, unique_schema: str) -> None:
    done = cli(
        "migrate",
        "upgrade",
        "--schema",
        unique_schema,
        "--log-level",
        "INFO",
        "--log-format",
        "json",
    )

    assert done.code == 0, done.stderr
    records = [json.loads(line) for line in done.stderr_lines]
    assert records, "the migration logs at INFO"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert {r["level"] for r in records} == {"INFO"}
    assert any(r["logger"].startswith("alembic") for r in records)


def test_log_format_text_is_the_default(cli: Runner, unique_schema: str) -> None:
    done = cli("migrate", "upgrade", "--schema", unique_schema, "--log-level", "INFO")

    assert done.code == 0, done.stderr
    assert done.stderr_lines
    assert not any(line.startswith("{") for line in done.stderr_lines)
    assert all(" INFO " in line for line in done.stderr_lines)


def test_log_format_rejects_other_values(cli: Runner) -> None:
    done = cli("migrate", "current", "--log-format", "xml")

    assert done.code == 2
    assert "--log-format" in done.stderr
