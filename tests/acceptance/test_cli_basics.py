"""The CLI's surface: help, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import Runner

COMMANDS = ("migrate", "worker", "enqueue", "dlq", "demo", "embedded", "admin")


def test_help_lists_every_command(cli: Runner) -> None:
    done = cli("--help")

    assert done.code == 0
    for command in COMMANDS:
        assert f"    {command} " in done.stdout


def test_worker_help_lists_its_options(cli: Runner) -> None:
    done = cli("worker", "--help")

    assert done.code == 0
    for option in (
        "--tasks",
        "--queue",
        "--burst",
        "--schema",
        "--log-level",
        "--poll-interval-ms",
        "--shutdown-timeout-secs",
    ):
        assert option in done.stdout


BAD_WORKER_INPUT = [
    (["--queue", "fast=0"], {}, "--queue"),
    (["--queue", "fast"], {}, "--queue"),
    (["--queue", "fast=many"], {}, "--queue"),
    (["--queue", "=3"], {}, "--queue"),
    (["--queue", "fast=1", "--queue", "fast=2"], {}, "--queue"),
    (["--poll-interval-ms", "0"], {}, "--poll-interval-ms"),
    (["--poll-interval-ms", "abc"], {}, "--poll-interval-ms"),
    (["--shutdown-timeout-secs", "-1"], {}, "--shutdown-timeout-secs"),
    (["--log-level", "LOUD"], {}, "--log-level"),
    (["--schema", "Not-A-Schema"], {}, "--schema"),
    ([], {"FAST_QUEUE_CONCURRENCY": "abc"}, "FAST_QUEUE_CONCURRENCY"),
    ([], {"BULK_QUEUE_CONCURRENCY": "-3"}, "BULK_QUEUE_CONCURRENCY"),
    ([], {"POLL_INTERVAL_MS": "0"}, "POLL_INTERVAL_MS"),
    ([], {"SHUTDOWN_TIMEOUT_SECS": "soon"}, "SHUTDOWN_TIMEOUT_SECS"),
    ([], {"SHUTDOWN_TIMEOUT_SECS": "0"}, "SHUTDOWN_TIMEOUT_SECS"),
    ([], {"BACKFILL_SCHEMA": "Bad Name"}, "BACKFILL_SCHEMA"),
    ([], {"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
    ([], {"DATABASE_URL": ""}, "DATABASE_URL"),
    ([], {"DATABASE_URL": "  "}, "DATABASE_URL"),
]


@pytest.mark.parametrize(("flags", "env", "named"), BAD_WORKER_INPUT)
def test_bad_worker_values_give_one_line_and_exit_2(
    cli: Runner, flags: list[str], env: dict[str, str | None], named: str
) -> None:
    done = cli("worker", "--tasks", "examples.shop.tasks:make_registry", *flags, env=env)

    assert done.code == 2, done.stderr
    assert len(done.stderr_lines) == 1, done.stderr
    assert named in done.stderr_lines[0]
    assert done.stderr_lines[0].startswith("backfill_sa worker: error: ")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("no_such_module_here:registry", "cannot import"),
        ("examples.shop.tasks:missing", "has no attribute"),
        ("examples.shop.models:Order", "not a TaskRegistry"),
        ("examples.shop.tasks", "package.module:registry"),
    ],
)
def test_bad_tasks_spec_gives_one_line_and_exit_2(cli: Runner, spec: str, named: str) -> None:
    done = cli("worker", "--tasks", spec)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert named in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["launch"],
        ["migrate", "sideways"],
        ["migrate", "current", "--sql"],
        ["enqueue", "t", "--payload", "{not json"],
        ["enqueue", "t", "--run-at", "2030-01-01T09:00:00"],
        ["enqueue", "t", "--run-at", "next tuesday"],
        ["enqueue", "t", "--priority", "high"],
        ["dlq", "requeue"],
        ["dlq", "delete", "x"],
        ["demo", "--jobs", "0"],
    ],
)
def test_usage_errors_are_one_line_with_exit_2(cli: Runner, args: list[str]) -> None:
    done = cli(*args)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "error:" in done.stderr


def test_worker_refuses_an_unmigrated_schema(cli: Runner, unique_schema: str) -> None:
    done = cli("worker", "--tasks", "examples.shop.tasks:make_registry", "--schema", unique_schema)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert f"python -m backfill_sa migrate --schema {unique_schema}" in done.stderr


def test_unreachable_database_is_one_line_and_exit_1(cli: Runner) -> None:
    done = cli(
        "migrate",
        "current",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"},
    )

    assert done.code == 1
    assert len(done.stderr_lines) == 1, done.stderr
    assert "cannot connect" in done.stderr
