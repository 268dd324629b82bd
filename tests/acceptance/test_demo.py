"""``python -m backfill_sa demo``: runs end to end and prints its summary."""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from tests.acceptance.conftest import Runner


def test_demo_runs_and_reports(cli: Runner, admin_engine: Engine, unique_schema: str) -> None:
    # 400 jobs: 200 orders with two jobs each, 40 latency probes, one failing job.
    done = cli("demo", "--jobs", "400", "--schema", unique_schema, timeout=90)

    assert done.code == 0, done.stdout + done.stderr
    out = done.stdout
    assert (
        "committed 401 jobs with 200 orders in 8 transactions, each job with its order: "
        "400 for the orders"
    ) in out
    assert "and 1 notify_warehouse" in out
    assert "rolled back a transaction holding an order and its job: neither is there" in out
    assert re.search(r"attempt 3 \(\d+ ms later\): failed\n.*-> dead-lettered", out)
    assert "requeued from the DLQ:\n       attempt 1: succeeded" in out
    assert re.search(r"throughput +[\d,]+ jobs/s \(the orders' 400 jobs in", out)
    assert re.search(r"idle worker: p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert "succeeded 441 of 441; dead-lettered 1, requeued 1 and succeeded" in out
    assert "failed attempts retried 2;" in out
    assert "left in jobs 0, left in DLQ 0" in out
    assert "\n  OK\n" in out
    assert f"Left behind: schema {unique_schema!r}" in out
    assert "the demo's worker has stopped" in out
    assert "embedded PostgreSQL" not in out  # DATABASE_URL is set
    # The progress bar's last state: a count and a time, no rate to disagree with
    # the summary's throughput.
    assert re.search(r"441/441 jobs  [\d.]+ s\n", done.stderr)
    assert "/s" not in done.stderr
    with admin_engine.connect() as conn:
        orders = conn.scalar(text(f'SELECT count(*) FROM "{unique_schema}".orders'))
    assert orders == 200


def test_demo_refuses_a_schema_it_did_not_make(
    cli: Runner, admin_engine: Engine, unique_schema: str
) -> None:
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{unique_schema}"'))
        conn.execute(text(f'CREATE TABLE "{unique_schema}".precious (n int)'))

    done = cli("demo", "--schema", unique_schema)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "was not made by the demo" in done.stderr
    with admin_engine.connect() as conn:
        kept = conn.scalar(text(f"SELECT to_regclass('\"{unique_schema}\".precious')"))
    assert kept is not None
