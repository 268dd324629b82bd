"""``cron list`` through the real CLI."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Engine, text

from tests.acceptance.conftest import Runner

TASKS = "tests.acceptance.cron_app:make_registry"


def test_cron_list_shows_schedules_last_ticks_and_next_runs(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    with sync_engine.begin() as conn:
        conn.execute(
            text(
                f'INSERT INTO "{schema}".cron_schedules (name, expression, timezone, last_tick_at)'
                " VALUES ('report', '*/5 * * * *', 'UTC', '2026-06-01T10:05:00Z'),"
                " ('retired', '@daily', 'UTC', '2026-05-01T00:00:00Z')"
            )
        )
    done = cli("cron", "list", "--tasks", TASKS, "--schema", schema, "--json")
    assert done.code == 0, done.stderr
    every_five, nightly, retired = (json.loads(line) for line in done.stdout.splitlines())

    assert every_five["name"] == "report"
    assert every_five["queue"] == "fast"  # the task's queue
    assert every_five["last_tick"] == "2026-06-01T10:05:00+00:00"
    runs = [dt.datetime.fromisoformat(t) for t in every_five["next"]]
    assert len(runs) == 3
    assert all(t.minute % 5 == 0 and t.second == 0 for t in runs)
    assert runs[1] - runs[0] == dt.timedelta(minutes=5)
    assert runs[0] > dt.datetime.now(dt.timezone.utc)

    assert (nightly["name"], nightly["queue"], nightly["timezone"]) == (
        "nightly",
        "bulk",
        "Europe/Berlin",
    )
    assert nightly["last_tick"] is None
    assert all(t.endswith(("+01:00", "+02:00")) and "T02:30" in t for t in nightly["next"])

    assert retired == {
        "name": "retired",
        "expression": "@daily",
        "timezone": "UTC",
        "last_tick": "2026-05-01T00:00:00+00:00",
        "note": "not in this registry",
    }

    plain = cli("cron", "list", "--tasks", TASKS, "--schema", schema, "--next", "1")
    assert plain.code == 0, plain.stderr
    assert plain.stdout.splitlines()[1].startswith("name=nightly  expression='30 2 * * *'")


def test_cron_list_refuses_a_bad_registry(cli: Runner, schema: str) -> None:
    done = cli("cron", "list", "--tasks", "tests.acceptance.cron_app:nope", "--schema", schema)
    assert done.code == 2
    assert "has no attribute" in done.stderr
