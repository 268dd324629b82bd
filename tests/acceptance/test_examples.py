"""Examples and the README's quick start run, so they cannot rot.

Each runs in a database of its own: they use the default ``backfill`` schema (and
the shop its ``shop`` schema) exactly as a user would.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from sqlalchemy import create_engine, func, select

from backfill_sa.dburl import sync_url
from backfill_sa.models import Job
from examples.shop.models import Order
from tests.acceptance.conftest import REPO, base_env, run_command


def test_readme_quick_start_is_examples_quickstart() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)

    assert (REPO / "examples" / "quickstart.py").read_text() in blocks


UNFINISHED = Job.state.in_(["available", "scheduled", "running"])


def test_quickstart_runs(fresh_database: str) -> None:
    done = run_command(["examples/quickstart.py"], env=base_env(fresh_database))

    assert done.code == 0, done.stderr
    assert "welcome mail to ada@example.com" in done.stdout
    assert "1 job(s) succeeded" in done.stdout
    engine = create_engine(sync_url(fresh_database))
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Job).where(UNFINISHED)) == 0
    engine.dispose()


def test_shop_app_runs_its_worker(fresh_database: str) -> None:
    done = run_command(["-m", "examples.shop.app"], env=base_env(fresh_database))

    assert done.code == 0, done.stderr
    assert "declined: rolled back with its jobs" in done.stdout
    assert "worker: 2 succeeded, 0 dead-lettered" in done.stdout
    engine = create_engine(sync_url(fresh_database))
    with engine.connect() as conn:
        orders = conn.execute(select(Order.email, Order.status)).all()
        jobs = conn.scalar(select(func.count()).select_from(Job).where(UNFINISHED))
    engine.dispose()
    assert orders == [("ada@example.com", "confirmed")]
    assert jobs == 0


def test_cli_worker_burst_runs_the_shop_jobs(fresh_database: str) -> None:
    env = base_env(fresh_database)
    placed = run_command(["-m", "examples.shop.app", "--enqueue-only"], env=env)
    assert placed.code == 0, placed.stderr
    extra = run_command(
        [
            "-m",
            "backfill_sa",
            "enqueue",
            "send_receipt",
            "--payload",
            '{"order_id": 99, "email": "cli@example.com"}',
        ],
        env=env,
    )
    assert extra.code == 0, extra.stderr

    done = run_command(
        [
            "-m",
            "backfill_sa",
            "worker",
            "--tasks",
            "examples.shop.tasks:make_registry",
            "--burst",
            "--queue",
            "fast=2",
            "--queue",
            "bulk=2",
        ],
        env=env,
    )

    assert done.code == 0, done.stderr
    assert "worker: 3 succeeded, 0 retried, 0 snoozed, 0 dead-lettered" in done.stdout
    assert "receipt for order 99 sent to cli@example.com" in done.stdout
    engine = create_engine(sync_url(fresh_database))
    with engine.connect() as conn:
        statuses = conn.scalars(select(Order.status)).all()
        jobs = conn.scalar(select(func.count()).select_from(Job).where(UNFINISHED))
    engine.dispose()
    assert statuses == ["confirmed"]
    assert jobs == 0


def test_cli_worker_runs_until_sigterm_then_exits_0(fresh_database: str) -> None:
    env = base_env(fresh_database)
    env["PYTHONUNBUFFERED"] = "1"
    placed = run_command(["-m", "examples.shop.app", "--enqueue-only"], env=env)
    assert placed.code == 0, placed.stderr
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backfill_sa",
            "worker",
            "--tasks",
            "examples.shop.tasks:make_registry",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        # Each line blocks until a job has run: both are done before the signal.
        lines = {worker.stdout.readline().strip() for _ in range(2)}
        assert lines == {
            "receipt for order 1 sent to ada@example.com",
            "order 1 confirmed (attempt 1)",
        }
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert worker.returncode == 0, err
    assert "worker: 2 succeeded" in out
