"""``health``, ``stats`` and ``migrate current`` through the real CLI, text and JSON."""

from __future__ import annotations

import datetime as dt
import json
import re

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, insert, text

from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import JobSpec, enqueue_many
from backfill_sa.migrations import alembic_config, upgrade
from backfill_sa.models import DeadLetterJob
from backfill_sa.statements.overview import workers
from tests.acceptance.conftest import Runner

(HEAD,) = ScriptDirectory.from_config(alembic_config()).get_heads()


def test_health_is_0_on_a_current_schema(cli: Runner, schema: str) -> None:
    done = cli("health", "--schema", schema)
    as_json = cli("health", "--json", "--schema", schema)

    assert done.code == as_json.code == 0, done.stderr
    assert done.stdout.startswith("ok: ")
    assert done.stdout.strip().endswith(f"schema {schema!r} at {HEAD} (head)")
    state = json.loads(as_json.stdout)
    assert (state["ok"], state["schema"], state["revision"], state["head"]) == (
        True,
        schema,
        [HEAD],
        [HEAD],
    )


def test_health_is_1_on_a_schema_without_tables(cli: Runner, unique_schema: str) -> None:
    done = cli("health", "--schema", unique_schema)
    as_json = cli("health", "--json", "--schema", unique_schema)

    assert done.code == as_json.code == 1
    assert done.stdout == ""
    assert done.stderr_lines == [
        f"backfill_sa health: error: schema {unique_schema!r} has no backfill_sa tables; "
        f"run `python -m backfill_sa migrate --schema {unique_schema}` first"
    ]
    state = json.loads(as_json.stdout)
    assert (state["ok"], state["current"], state["revision"]) == (False, False, [])


def test_health_is_1_on_a_schema_behind_head_and_its_hint_works(
    cli: Runner, admin_engine: Engine, unique_schema: str
) -> None:
    upgrade(admin_engine, schema=unique_schema, revision="bf0001")  # the first revision

    behind = cli("health", "--schema", unique_schema)

    assert behind.code == 1
    assert len(behind.stderr_lines) == 1, behind.stderr
    assert f"schema {unique_schema!r} is not at head {HEAD} (it records bf0001)" in behind.stderr
    hint = re.search(r"run `python -m backfill_sa (.*?)`$", behind.stderr_lines[0])
    assert hint is not None
    assert cli(*hint.group(1).split()).code == 0
    assert cli("health", "--schema", unique_schema).code == 0


def test_health_finds_our_revision_in_the_apps_alembic_history(
    cli: Runner, fresh_database: str
) -> None:
    engine = create_engine(sync_url(fresh_database))
    upgrade(engine)
    with engine.begin() as conn:
        # As the application's own Alembic history leaves it: our revision recorded
        # in its alembic_version, none in ours.
        conn.execute(text("DROP TABLE backfill.alembic_version"))
        conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        conn.execute(text(f"INSERT INTO alembic_version VALUES ('{HEAD}'), ('app0001')"))
    engine.dispose()
    env: dict[str, str | None] = {"DATABASE_URL": fresh_database}

    current = cli("migrate", "current", env=env)
    health = cli("health", "--json", env=env)

    assert current.code == 0, current.stderr
    assert "none recorded in backfill.alembic_version" in current.stdout
    assert "another Alembic history manages them" in current.stdout
    assert health.code == 0, health.stderr
    state = json.loads(health.stdout)
    assert (state["ok"], state["managed_elsewhere"], state["revision"]) == (True, True, [HEAD])


def test_stats_shows_queues_dead_letters_and_workers(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    from sqlalchemy.orm import Session

    future = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
    with Session(sync_engine) as session, session.begin():
        enqueue_many(
            session,
            [JobSpec("a", queue="fast") for _ in range(3)]
            + [JobSpec("b", queue="bulk", run_at=future) for _ in range(2)],
        )
    now = dt.datetime.now(dt.timezone.utc)
    with sync_engine.begin() as conn:
        conn.execute(
            insert(DeadLetterJob),
            [
                {
                    "original_job_id": n,
                    "task": "c",
                    "queue": "bulk",
                    "payload": {},
                    "priority": 0,
                    "max_attempts": 1,
                    "failure_reason": reason,
                    "failure_count": 1,
                    "original_created_at": now,
                    "original_run_at": now,
                }
                for n, reason in enumerate(["permanent_error", "permanent_error", "unknown_task"])
            ],
        )
        conn.execute(insert(workers).values(id="w-1", hostname="h", pid=9, queues={"fast": 10}))

    done = cli("stats", "--schema", schema)
    as_json = cli("stats", "--json", "--schema", schema)

    assert done.code == as_json.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "queues"
    bulk = next(line for line in lines if line.startswith("  bulk "))
    fast = next(line for line in lines if line.startswith("  fast "))
    assert bulk.split()[1:5] == ["0", "2", "0", "3"]
    assert fast.split()[1:5] == ["3", "0", "0", "0"]
    assert "dead letters: 3 (permanent_error 2, unknown_task 1)" in lines
    assert "workers: 1 live of 1 registered" in lines
    summary = json.loads(as_json.stdout)
    assert {q["name"]: q["available"] for q in summary["queues"]} == {"bulk": 0, "fast": 3}
    assert summary["dead_letters"] == {
        "total": 3,
        "by_reason": {"permanent_error": 2, "unknown_task": 1},
    }
    assert [(w["id"], w["alive"], w["queues"]) for w in summary["workers"]] == [
        ("w-1", True, {"fast": 10})
    ]


def test_migrate_current_json(cli: Runner, schema: str, unique_schema: str) -> None:
    at_head = cli("migrate", "current", "--json", "--schema", schema)
    empty = cli("migrate", "current", "--json", "--schema", unique_schema)

    assert at_head.code == empty.code == 0
    assert json.loads(at_head.stdout)["current"] is True
    assert json.loads(empty.stdout)["revision"] == []
