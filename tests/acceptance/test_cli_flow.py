"""``queues set-limits`` and ``queues limits`` through the real CLI."""

from __future__ import annotations

import json

from sqlalchemy import Engine, text

from tests.acceptance.conftest import Runner


def test_set_limits_then_list_them(cli: Runner, sync_engine: Engine, schema: str) -> None:
    done = cli(
        "queues",
        "set-limits",
        "emails",
        "--global-concurrency",
        "5",
        "--partition-by",
        "tenant",
        "--rate",
        "10/1.5",
        "--rate-per-partition",
        "--schema",
        schema,
    )
    assert done.code == 0, done.stderr
    with sync_engine.begin() as conn:
        conn.execute(
            text(
                f'INSERT INTO "{schema}".jobs (task, queue, serial_key)'
                " VALUES ('t', 'serial', 'k1'), ('t', 'serial', 'k1')"
            )
        )
    listed = cli("queues", "limits", "--json", "--schema", schema)
    assert listed.code == 0, listed.stderr
    emails, serial = (json.loads(line) for line in listed.stdout.splitlines())
    assert emails == {
        "name": "emails",
        "global_concurrency": 5,
        "partition_by": "tenant",
        "partition_concurrency": None,
        "rate_limit": 10,
        "rate_period_ms": 1500,
        "rate_limit_per_partition": True,
        "limited_running": 0,
        "serial_waiting": 0,
    }
    assert (serial["name"], serial["serial_waiting"], serial["global_concurrency"]) == (
        "serial",
        2,
        None,
    )


def test_set_limits_refuses_bad_limits(cli: Runner, schema: str) -> None:
    done = cli("queues", "set-limits", "q", "--partition-concurrency", "2", "--schema", schema)
    assert done.code == 2
    assert "partition_by" in done.stderr
    bad_rate = cli("queues", "set-limits", "q", "--rate", "ten", "--schema", schema)
    assert bad_rate.code == 2
    assert "COUNT/SECONDS" in bad_rate.stderr
