"""``migrate``: upgrade, current, downgrade and --sql through the real CLI."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from tests.acceptance.conftest import Runner

TABLES = ("jobs", "queues", "dead_letter_jobs", "workers", "leader")


def _existing(engine: Engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return {
            name
            for name in TABLES
            if conn.scalar(select(func.to_regclass(f'"{schema}".{name}'))) is not None
        }


def test_upgrade_current_downgrade(cli: Runner, admin_engine: Engine, unique_schema: str) -> None:
    before = cli("migrate", "current", "--schema", unique_schema)
    assert before.code == 0, before.stderr
    assert before.stdout.startswith("base")

    up = cli("migrate", "upgrade", "--schema", unique_schema)
    assert up.code == 0, up.stderr
    assert _existing(admin_engine, unique_schema) == set(TABLES)

    again = cli("migrate", "upgrade", "--schema", unique_schema)
    assert again.code == 0, again.stderr

    current = cli("migrate", "current", "--schema", unique_schema)
    assert current.code == 0
    assert "(head)" in current.stdout

    down = cli("migrate", "downgrade", "--schema", unique_schema)
    assert down.code == 0, down.stderr
    assert _existing(admin_engine, unique_schema) == set()
    assert cli("migrate", "current", "--schema", unique_schema).stdout.startswith("base")


def test_schema_comes_from_the_environment(
    cli: Runner, admin_engine: Engine, unique_schema: str
) -> None:
    done = cli("migrate", "upgrade", env={"BACKFILL_SCHEMA": unique_schema})

    assert done.code == 0, done.stderr
    assert _existing(admin_engine, unique_schema) == set(TABLES)


def test_sql_prints_ddl_and_changes_nothing(
    cli: Runner, admin_engine: Engine, unique_schema: str
) -> None:
    done = cli("migrate", "upgrade", "--sql", "--schema", unique_schema)

    assert done.code == 0, done.stderr
    assert f"CREATE TABLE {unique_schema}.jobs" in done.stdout
    assert "ix_jobs_claim" in done.stdout
    with admin_engine.connect() as conn:
        schemas = conn.scalar(
            select(func.count()).where(func.to_regnamespace(unique_schema).is_not(None))
        )
    assert schemas == 0


def test_sql_downgrade_prints_drops(cli: Runner, unique_schema: str) -> None:
    done = cli("migrate", "downgrade", "--sql", "--schema", unique_schema)

    assert done.code == 0, done.stderr
    assert f"DROP TABLE {unique_schema}.jobs" in done.stdout


def test_unknown_revision_fails_with_one_line(cli: Runner, unique_schema: str) -> None:
    done = cli("migrate", "upgrade", "no_such_rev", "--schema", unique_schema)

    assert done.code == 1
    assert len(done.stderr_lines) == 1, done.stderr
    assert "no_such_rev" in done.stderr
