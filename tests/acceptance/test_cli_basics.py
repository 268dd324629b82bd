"""The CLI's surface: help, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backfill_sa.dburl import parse_url, redacted_url
from tests.acceptance.conftest import Runner

COMMANDS = (
    "migrate",
    "worker",
    "enqueue",
    "jobs",
    "queues",
    "dlq",
    "stats",
    "health",
    "demo",
    "embedded",
    "admin",
)

# Every command that talks to PostgreSQL, with arguments that would otherwise work.
DATABASE_COMMANDS = [
    ["migrate"],
    ["migrate", "current"],
    ["migrate", "downgrade"],
    ["worker", "--tasks", "examples.shop.tasks:make_registry", "--burst"],
    ["enqueue", "t"],
    ["jobs", "list"],
    ["jobs", "cancel", "1"],
    ["jobs", "retry", "1"],
    ["queues", "list"],
    ["queues", "pause", "q"],
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["dlq", "stats"],
    ["dlq", "requeue", "1"],
    ["dlq", "delete", "--task", "t", "--yes"],
    ["dlq", "purge", "--older-than", "1d", "--yes"],
    ["stats"],
    ["health"],
    ["demo", "--jobs", "10"],
    ["admin", "--port", "1"],
]


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


def test_bare_command_prints_help_and_exits_2(cli: Runner) -> None:
    done = cli()

    assert done.code == 2
    for command in COMMANDS:
        assert f"    {command} " in done.stdout
    assert done.stderr.strip().endswith("error: a command is required (see above)")


def test_bare_dlq_prints_its_help(cli: Runner) -> None:
    done = cli("dlq")

    assert done.code == 2
    for action in ("list", "show", "stats", "requeue", "delete", "purge"):
        assert f"    {action} " in done.stdout
    assert "dlq: error: an action is required" in done.stderr


def test_version(cli: Runner) -> None:
    from importlib.metadata import version

    done = cli("--version")

    assert done.code == 0
    assert done.stdout.strip() == f"backfill_sa {version('backfill-sa')}"


@pytest.mark.parametrize(
    ("args", "value"),
    [(args, "") for args in DATABASE_COMMANDS] + [(["dlq", "list"], "   ")],
    ids=[" ".join(args) for args in DATABASE_COMMANDS] + ["blank"],
)
def test_an_empty_database_url_is_refused_by_every_command(
    cli: Runner, tmp_path: Path, args: list[str], value: str
) -> None:
    done = cli(*args, env={"DATABASE_URL": value, "BACKFILL_DATA_DIR": str(tmp_path)})

    assert done.code == 2, done.stdout + done.stderr
    assert len(done.stderr_lines) == 1, done.stderr
    assert "DATABASE_URL: is set but empty" in done.stderr
    assert not any(tmp_path.iterdir())  # no embedded server was started


def test_an_unknown_flag_is_named_before_missing_ones(cli: Runner) -> None:
    done = cli("worker", "--bogus")

    assert done.code == 2
    assert done.stderr_lines == ["backfill_sa: error: unrecognized arguments: --bogus"]


def test_worker_without_tasks_names_the_flag(cli: Runner) -> None:
    done = cli("worker")

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "--tasks: required" in done.stderr


def test_a_tasks_module_that_fails_to_import_is_shown_with_file_and_line(
    cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "broken_tasks.py").write_text("import os\n\nregistry = undefined_name\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    env = {"PYTHONPATH": str(tmp_path)}

    broken = cli("worker", "--tasks", "broken_tasks:registry", env=env)
    syntax = cli("worker", "--tasks", "bad_syntax:registry", env=env)

    assert broken.code == syntax.code == 2
    assert len(broken.stderr_lines) == 1, broken.stderr
    assert "NameError: name 'undefined_name' is not defined" in broken.stderr
    assert "broken_tasks.py, line 3)" in broken.stderr
    assert "SyntaxError" in syntax.stderr
    assert "bad_syntax.py, line 1)" in syntax.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["launch"],
        ["migrate", "sideways"],
        ["migrate", "current", "--sql"],
        ["enqueue", "t", "--payload", "{not json"],
        ["enqueue", "t", "--run-at", "2030-01-01T09:00:00"],
        ["enqueue", "t", "--run-at", "next tuesday"],
        ["enqueue", "t", "--priority", "high"],
        ["dlq", "delete", "x"],
        ["dlq", "list", "--reason", "bogus"],
        ["dlq", "list", "--failed-after", "yesterday"],
        ["dlq", "purge"],
        ["dlq", "purge", "--older-than", "soon"],
        ["demo", "--jobs", "0"],
        ["migrate", "upgrade", "--json"],
    ],
)
def test_usage_errors_are_one_line_with_exit_2(cli: Runner, args: list[str]) -> None:
    done = cli(*args)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "error:" in done.stderr


def test_worker_refuses_an_unmigrated_schema_and_its_hint_works(
    cli: Runner, unique_schema: str
) -> None:
    args = ("worker", "--tasks", "examples.shop.tasks:make_registry", "--burst")
    done = cli(*args, "--schema", unique_schema)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    hint = re.search(r"run `python -m backfill_sa (.*?)` first", done.stderr)
    assert hint is not None
    assert hint.group(1) == f"migrate --schema {unique_schema}"

    migrated = cli(*hint.group(1).split())
    assert migrated.code == 0, migrated.stderr
    assert f"schema {unique_schema!r}: upgrade to heads done" in migrated.stdout
    again = cli(*args, "--schema", unique_schema)
    assert again.code == 0, again.stderr
    assert again.stdout.startswith("worker: 0 succeeded")


def test_the_schema_flag_is_kept_at_either_level(cli: Runner, unique_schema: str) -> None:
    before = cli("dlq", "--schema", unique_schema, "list")
    after = cli("dlq", "list", "--schema", unique_schema)

    for done in (before, after):
        assert done.code == 2
        assert f"schema {unique_schema!r} has no backfill_sa tables" in done.stderr


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=" ".join)
def test_unreachable_database_reads_the_same_for_every_command(
    cli: Runner, args: list[str]
) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere?connect_timeout=2"

    done = cli(*args, env={"DATABASE_URL": url})

    assert done.code == 1, done.stderr
    assert len(done.stderr_lines) == 1, done.stderr
    assert (
        "error: database: cannot connect to "
        "postgresql://someone:***@127.0.0.1:1/nowhere?connect_timeout=2: "
    ) in done.stderr
    assert "s3cret" not in done.stderr


def test_a_missing_role_reads_like_any_connection_failure(cli: Runner, database_url: str) -> None:
    url = parse_url(database_url).set(username="no_such_role_here", password=None)
    shown = url.render_as_string(hide_password=False)

    for args in (["migrate", "current"], ["dlq", "list"], ["demo", "--jobs", "10"]):
        done = cli(*args, env={"DATABASE_URL": shown})
        assert done.code == 1, done.stderr
        assert len(done.stderr_lines) == 1, done.stderr
        assert "error: database: cannot connect to " in done.stderr
        assert "no_such_role_here" in done.stderr


def test_the_worker_logs_queues_tasks_and_database_without_the_password(
    cli: Runner, database_url: str, schema: str
) -> None:
    with_password = parse_url(database_url).set(password="s3cret-pw")
    url = with_password.render_as_string(hide_password=False)

    done = cli(
        "worker",
        "--tasks",
        "examples.shop.tasks:make_registry",
        "--queue",
        "emails=3",
        "--burst",
        "--schema",
        schema,
        env={"DATABASE_URL": url},
    )

    assert done.code == 0, done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    started = next(line for line in done.stderr_lines if " started: " in line)
    assert "queues emails=3; tasks " in started
    assert f"database {redacted_url(url)}, " in started
    assert ":***@" in started
    assert f"schema {schema} (burst)" in started
    assert done.stdout.strip() == (
        "worker: 0 succeeded, 0 retried, 0 snoozed, 0 dead-lettered, "
        "0 returned to the queue at shutdown"
    )
