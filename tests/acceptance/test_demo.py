"""``python -m backfill_sa demo``: runs end to end and prints its summary."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tests.acceptance.conftest import Runner


def test_demo_runs_and_reports(cli: Runner, admin_engine: Engine, unique_schema: str) -> None:
    done = cli("demo", "--jobs", "400", "--schema", unique_schema, timeout=90)

    assert done.code == 0, done.stdout + done.stderr
    out = done.stdout
    assert "rolled back a transaction holding an order and its job: neither is there" in out
    assert "-> dead-lettered (max_attempts_exceeded)" in out
    assert "requeued from the DLQ" in out
    assert "jobs/s" in out
    assert "p50" in out
    assert "p99" in out
    assert "succeeded 401, dead-lettered 1 then requeued 1" in out
    assert "left in jobs 0, left in DLQ 0" in out
    assert out.rstrip().endswith("OK")
    assert "401/401 jobs" in done.stderr  # the progress bar's last state
    with admin_engine.connect() as conn:
        orders = conn.scalar(text(f'SELECT count(*) FROM "{unique_schema}".orders'))
    assert orders == 200
