"""Operator commands through the real CLI: ``enqueue`` and ``dlq``, text and JSON, exit codes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from backfill_sa.models import DeadLetterJob, Job
from backfill_sa.statements.overview import workers
from tests.acceptance.conftest import Runner

TASKS = """\
from datetime import timedelta

from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import TaskRegistry

registry = TaskRegistry()


@registry.task("resize", queue="images", priority=-3, max_attempts=2)
async def resize(payload, ctx):
    pass


@registry.task(
    "ping", retry=RetryPolicy(max_attempts=4, initial_delay=timedelta(seconds=1))
)
async def ping(payload, ctx):
    pass
"""


def _dead_letter(
    engine: Engine,
    task: str,
    *,
    queue: str = "bulk",
    reason: str = "max_attempts_exceeded",
    failed_at: dt.datetime | None = None,
) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        entry_id: int = conn.execute(
            insert(DeadLetterJob)
            .values(
                original_job_id=7,
                task=task,
                queue=queue,
                payload={"n": 1},
                priority=0,
                max_attempts=3,
                failure_reason=reason,
                failure_count=3,
                last_error={"type": "RuntimeError", "message": "boom", "traceback": "Trace\n  x"},
                original_created_at=now,
                original_run_at=now,
                **({"failed_at": failed_at} if failed_at else {}),
            )
            .returning(DeadLetterJob.id)
        ).scalar_one()
    return entry_id


def _count(engine: Engine, model: type[Job] | type[DeadLetterJob]) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def tasks_module(tmp_path: Path) -> dict[str, str | None]:
    """An importable module with a registry; the env that makes it importable."""
    (tmp_path / "ops_tasks.py").write_text(TASKS)
    return {"PYTHONPATH": str(tmp_path)}


# ---------------------------------------------------------------- enqueue


def test_enqueue_writes_one_job(cli: Runner, sync_engine: Engine, schema: str) -> None:
    done = cli(
        "enqueue",
        "send_receipt",
        "--payload",
        '{"order_id": 5}',
        "--queue",
        "fast",
        "--priority",
        "-10",
        "--run-at",
        "2099-01-01T00:00:00Z",
        "--max-attempts",
        "4",
        "--schema",
        schema,
    )

    assert done.code == 0, done.stderr
    with sync_engine.connect() as conn:
        job = conn.execute(select(Job)).one()
    assert done.stdout.strip() == f"job {job.id}: inserted (queue fast)"
    assert (job.task, job.payload, job.queue, job.priority) == (
        "send_receipt",
        {"order_id": 5},
        "fast",
        -10,
    )
    assert job.run_at == dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
    assert (job.state, job.max_attempts) == ("scheduled", 4)


def test_enqueue_takes_the_tasks_defaults_with_tasks(
    cli: Runner, sync_engine: Engine, schema: str, tasks_module: dict[str, str | None]
) -> None:
    with_defaults = cli(
        "enqueue", "resize", "--tasks", "ops_tasks:registry", "--json", "--schema", schema,
        env=tasks_module,
    )  # fmt: skip
    overridden = cli(
        "enqueue", "resize", "--tasks", "ops_tasks:registry", "--queue", "bulk",
        "--max-attempts", "5", "--schema", schema, env=tasks_module,
    )  # fmt: skip
    from_retry = cli(
        "enqueue", "ping", "--tasks", "ops_tasks:registry", "--schema", schema, env=tasks_module
    )
    without = cli("enqueue", "resize", "--schema", schema)

    for done in (with_defaults, overridden, from_retry, without):
        assert done.code == 0, done.stderr
    shown = json.loads(with_defaults.stdout)
    assert {k: shown[k] for k in ("task", "queue", "priority", "max_attempts")} == {
        "task": "resize",
        "queue": "images",
        "priority": -3,
        "max_attempts": 2,
    }
    with sync_engine.connect() as conn:
        jobs = conn.execute(
            select(Job.queue, Job.priority, Job.max_attempts, Job.retry_policy).order_by(Job.id)
        ).all()
    assert [tuple(row[:3]) for row in jobs] == [
        ("images", -3, 2),  # the task's
        ("bulk", -3, 5),  # flags win, the rest is the task's
        ("bulk", 0, 4),  # max_attempts from the task's retry policy
        ("bulk", 0, 8),  # no --tasks: the library's defaults
    ]
    assert jobs[2].retry_policy["max_attempts"] == 4


def test_enqueue_refuses_a_task_the_registry_lacks(
    cli: Runner, sync_engine: Engine, schema: str, tasks_module: dict[str, str | None]
) -> None:
    done = cli(
        "enqueue", "nope", "--tasks", "ops_tasks:registry", "--schema", schema, env=tasks_module
    )

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "task: 'nope' is not registered" in done.stderr
    assert _count(sync_engine, Job) == 0


def test_enqueue_warns_about_a_queue_no_worker_serves(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    with sync_engine.begin() as conn:
        conn.execute(
            insert(workers).values(id="w1", hostname="h", pid=1, queues={"fast": 10, "bulk": 5})
        )

    served = cli("enqueue", "t", "--queue", "fast", "--schema", schema)
    unserved = cli("enqueue", "t", "--queue", "nosuchqueue", "--schema", schema)

    assert served.code == unserved.code == 0
    assert served.stderr == ""
    assert unserved.stderr_lines == [
        "backfill_sa enqueue: warning: no worker serves queue 'nosuchqueue' "
        "(registered workers serve bulk, fast); the job waits until one does"
    ]
    assert _count(sync_engine, Job) == 2


def test_enqueue_rejects_bad_job_and_writes_nothing(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    done = cli("enqueue", "t", "--priority", "40000", "--schema", schema)

    assert done.code == 2
    assert len(done.stderr_lines) == 1, done.stderr
    assert "priority" in done.stderr
    assert _count(sync_engine, Job) == 0


# ---------------------------------------------------------------- dlq: reading


def test_dlq_list_filters_text_and_json(cli: Runner, sync_engine: Engine, schema: str) -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    charge = _dead_letter(sync_engine, "charge", failed_at=old)
    email = _dead_letter(sync_engine, "email", queue="fast", reason="permanent_error")

    listed = cli("dlq", "list", "--json", "--schema", schema)
    assert listed.code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["id"] for row in rows] == [email, charge]  # newest first
    assert {row["error"] for row in rows} == {"RuntimeError: boom"}
    assert rows[0]["payload"] == {"n": 1}

    only = cli("dlq", "list", "--task", "email", "--schema", schema)
    assert only.code == 0
    assert only.stdout.count("\n") == 1
    assert f"id={email}" in only.stdout
    for flags, expected in [
        (["--queue", "fast"], email),
        (["--reason", "max_attempts_exceeded"], charge),
        (["--failed-before", "2021-01-01T00:00:00Z"], charge),
        (["--failed-after", "2021-01-01T00:00:00Z"], email),
        (["--limit", "1", "--offset", "1"], charge),
    ]:
        done = cli("dlq", "list", "--json", *flags, "--schema", schema)
        assert done.code == 0, (flags, done.stderr)
        assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [expected]

    nothing = cli("dlq", "list", "--task", "nobody", "--schema", schema)
    assert nothing.code == 1
    assert nothing.stdout == ""
    assert nothing.stderr_lines == [
        "backfill_sa dlq list: error: no dead-letter entry matches (entries with task=nobody)"
    ]


def test_dlq_show_and_stats(cli: Runner, sync_engine: Engine, schema: str) -> None:
    first = _dead_letter(sync_engine, "charge")
    _dead_letter(sync_engine, "charge")
    _dead_letter(sync_engine, "email", reason="permanent_error")

    shown = cli("dlq", "show", str(first), "--schema", schema)
    shown_json = cli("dlq", "show", str(first), "--json", "--schema", schema)
    missing = cli("dlq", "show", "999999", "--schema", schema)
    stats = cli("dlq", "stats", "--schema", schema)
    stats_json = cli("dlq", "stats", "--json", "--schema", schema)

    assert shown.code == shown_json.code == stats.code == stats_json.code == 0
    assert "failure_reason       max_attempts_exceeded" in shown.stdout
    assert 'payload              {"n": 1}' in shown.stdout
    assert "traceback:\nTrace\n  x" in shown.stdout
    entry = json.loads(shown_json.stdout)
    assert (entry["id"], entry["task"], entry["traceback"]) == (first, "charge", "Trace\n  x")
    assert missing.code == 1
    assert missing.stderr_lines == [
        "backfill_sa dlq show: error: no dead-letter entry has id 999999"
    ]
    assert stats.stdout.splitlines()[0] == "3 dead-letter entries"
    assert "      2  task=charge  queue=bulk  reason=max_attempts_exceeded" in stats.stdout
    summary = json.loads(stats_json.stdout)
    assert summary["total"] == 3
    assert [(g["task"], g["entries"]) for g in summary["groups"]] == [("charge", 2), ("email", 1)]


# ---------------------------------------------------------------- dlq: changing


def test_dlq_requeue_and_delete_by_id(cli: Runner, sync_engine: Engine, schema: str) -> None:
    kept = _dead_letter(sync_engine, "charge")
    dropped = _dead_letter(sync_engine, "email")

    requeued = cli("dlq", "requeue", str(kept), "999999", "--schema", schema)
    assert requeued.code == 1  # 999999 does not exist; the other one is done
    with sync_engine.connect() as conn:
        job = conn.execute(select(Job)).one()
    assert requeued.stdout.strip() == f"requeued entry {kept} as job {job.id}"
    assert requeued.stderr_lines == [
        "backfill_sa dlq requeue: error: no dead-letter entry has id 999999"
    ]
    assert (job.task, job.payload, job.state) == ("charge", {"n": 1}, "available")

    extra = _dead_letter(sync_engine, "email")
    partly = cli("dlq", "delete", str(extra), "999998", "--schema", schema)
    assert partly.code == 1
    assert partly.stdout.strip() == "deleted 1 entries"
    assert partly.stderr_lines == [
        "backfill_sa dlq delete: error: no dead-letter entry has id 999998"
    ]
    deleted = cli("dlq", "delete", str(dropped), "--schema", schema)
    assert deleted.code == 0, deleted.stderr
    assert deleted.stdout.strip() == "deleted 1 entries"
    twice = cli("dlq", "delete", str(dropped), "--schema", schema)
    assert twice.code == 1
    assert twice.stdout == ""
    assert f"no dead-letter entry has id {dropped}" in twice.stderr
    assert _count(sync_engine, DeadLetterJob) == 0


def test_dlq_requeue_by_filter_dry_run_confirmation_and_yes(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    ids = [_dead_letter(sync_engine, "charge") for _ in range(3)]
    other = _dead_letter(sync_engine, "email")

    dry = cli("dlq", "requeue", "--task", "charge", "--dry-run", "--schema", schema)
    assert dry.code == 0, dry.stderr
    assert dry.stdout.strip() == (
        "would requeue 3 dead-letter entries with task=charge; nothing changed"
    )
    assert _count(sync_engine, Job) == 0

    unconfirmed = cli("dlq", "requeue", "--task", "charge", "--schema", schema)  # no terminal
    assert unconfirmed.code == 2
    assert unconfirmed.stderr_lines == [
        "backfill_sa dlq requeue: error: --yes: needed to requeue 3 dead-letter entries "
        "with task=charge without a terminal to confirm on"
    ]
    assert _count(sync_engine, Job) == 0

    done = cli(
        "dlq", "requeue", "--task", "charge", "--to-queue", "retry", "--yes", "--schema", schema
    )
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "requeued 3 entries"
    with sync_engine.connect() as conn:
        queues = conn.scalars(select(Job.queue)).all()
        left = conn.scalars(select(DeadLetterJob.id)).all()
    assert queues == ["retry"] * 3
    assert left == [other]
    assert set(ids).isdisjoint(left)


def test_dlq_delete_by_filter_and_nothing_matched(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    for _ in range(2):
        _dead_letter(sync_engine, "email", reason="permanent_error")
    kept = _dead_letter(sync_engine, "email")

    done = cli("dlq", "delete", "--reason", "permanent_error", "-y", "--schema", schema)
    again = cli("dlq", "delete", "--reason", "permanent_error", "-y", "--schema", schema)

    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "deleted 2 entries"
    assert again.code == 1
    assert "no dead-letter entry matches (entries with failure_reason=permanent_error)" in (
        again.stderr
    )
    with sync_engine.connect() as conn:
        assert conn.scalars(select(DeadLetterJob.id)).all() == [kept]


def test_dlq_purge_older_than(cli: Runner, sync_engine: Engine, schema: str) -> None:
    old = [
        _dead_letter(sync_engine, "t", failed_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
        for _ in range(2)
    ]
    recent = _dead_letter(sync_engine, "t")

    dry = cli("dlq", "purge", "--older-than", "30d", "--dry-run", "--schema", schema)
    done = cli("dlq", "purge", "--older-than", "30d", "--yes", "--schema", schema)

    assert dry.code == 0, dry.stderr
    assert dry.stdout.startswith("would delete 2 dead-letter entries with failed_before=")
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "purged 2 entries"
    with sync_engine.connect() as conn:
        assert conn.scalars(select(DeadLetterJob.id)).all() == [recent]
    assert set(old).isdisjoint([recent])


def test_dlq_bulk_requeue_over_many_entries_in_chunks(
    cli: Runner, sync_engine: Engine, schema: str
) -> None:
    first = _dead_letter(sync_engine, "bulk_task")
    table = DeadLetterJob.__table__
    with sync_engine.begin() as conn:  # 1,200 more: three chunks of 500
        row = conn.execute(select(table).where(table.c.id == first)).mappings().one()
        skipped = ("id", "failed_at", "requeued_count", "last_requeued_at")
        values = {key: value for key, value in row.items() if key not in skipped}
        conn.execute(insert(table), [values] * 1200)

    done = cli("dlq", "requeue", "--task", "bulk_task", "--yes", "--schema", schema)

    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "requeued 1201 entries"
    assert _count(sync_engine, Job) == 1201
    assert _count(sync_engine, DeadLetterJob) == 0


def test_on_a_terminal_it_asks_and_draws_a_progress_bar(
    database_url: str, sync_engine: Engine, schema: str
) -> None:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    import threading

    from tests.acceptance.conftest import REPO, base_env

    for _ in range(3):
        _dead_letter(sync_engine, "tty_task")
    controller, terminal = pty.openpty()
    # A terminal 100 columns wide (a fresh pty is 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    seen = bytearray()
    asked = threading.Event()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's last holder went away
                return
            if not chunk:
                return
            seen.extend(chunk)
            if b"[y/N]" in seen:
                asked.set()

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    command = ["dlq", "delete", "--task", "tty_task", "--schema", schema]
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill_sa", *command],
        cwd=REPO,
        env=base_env(database_url),
        stdin=terminal,
        stderr=terminal,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert asked.wait(timeout=60), bytes(seen)
        os.write(controller, b"y\n")
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)

    text = bytes(seen).decode(errors="replace")
    assert "delete 3 dead-letter entries with task=tty_task? [y/N]" in text
    assert proc.returncode == 0, text
    assert out.strip() == "deleted 3 entries"
    assert "deleted: 100%" in text  # tqdm's bar, drawn on the terminal only
    assert "3/3" in text
    assert _count(sync_engine, DeadLetterJob) == 0
