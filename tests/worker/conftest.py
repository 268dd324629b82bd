"""Worker fixtures: configs for the test's schema, registries, row readers, subprocesses.

Every helper reads the real database through the test's own ``schema``; nothing is
mocked. Waiting is done with events, burst runs (``run_once``) or, for other
processes only, by polling the database with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec, enqueue_many
from backfill_sa.tasks import TaskRegistry
from backfill_sa.worker.db import Database

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def make_config(database_url: str, schema: str, **overrides: Any) -> WorkerConfig:
    """Return a WorkerConfig for ``schema`` with test-friendly defaults.

    One queue ``bulk`` of concurrency 5, a 50 ms poll and a 2 s shutdown timeout
    unless ``overrides`` say otherwise.

    Raises:
        ConfigurationError: an override breaks a WorkerConfig rule.
    """
    values: dict[str, Any] = {
        "database_url": database_url,
        "schema": schema,
        "queues": {"bulk": 5},
        "poll_interval": timedelta(milliseconds=50),
        "shutdown_timeout": timedelta(seconds=2),
    }
    values.update(overrides)
    return WorkerConfig(**values)


@pytest.fixture
def config(database_url: str, schema: str) -> Callable[..., WorkerConfig]:
    """``config(**overrides)``: :func:`make_config` bound to this test's schema."""

    def build(**overrides: Any) -> WorkerConfig:
        url = overrides.pop("database_url", database_url)
        return make_config(url, schema, **overrides)

    return build


@pytest.fixture
def registry() -> TaskRegistry:
    """A fresh, empty task registry (never shared between tests)."""
    return TaskRegistry()


@pytest.fixture
def registry_factory() -> Callable[..., TaskRegistry]:
    """``registry_factory(name=handler, ...)``: a registry with those handlers."""

    def build(**handlers: Callable[..., Any]) -> TaskRegistry:
        reg = TaskRegistry()
        for name, handler in handlers.items():
            reg.register(name, handler)
        return reg

    return build


@pytest.fixture
async def db(database_url: str, schema: str) -> AsyncIterator[Database]:
    """The worker runtime's own Database object on this test's schema."""
    database = Database(database_url, schema=schema, pool_size=2)
    yield database
    await database.dispose()


# -- writing and reading rows --------------------------------------------------


def add_jobs(engine: Engine, specs: Sequence[JobSpec]) -> list[int]:
    """Enqueue ``specs`` in one committed transaction; return their ids in order."""
    with Session(engine) as session, session.begin():
        return [r.id for r in enqueue_many(session, specs)]


def add(engine: Engine, task: str, payload: Any = None, **options: Any) -> int:
    """Enqueue one job (committed) and return its id."""
    return add_jobs(engine, [JobSpec(task, payload, **options)])[0]


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Run ``sql`` (``{s}`` is replaced by the quoted schema) and return dict rows."""
    schema = engine.get_execution_options()["schema_translate_map"]["backfill"]
    with engine.connect() as conn:
        result = conn.execute(text(sql.replace("{s}", f'"{schema}"')), params)
        return [dict(r._mapping) for r in result]


def execute(engine: Engine, sql: str, **params: Any) -> int:
    """Run ``sql`` (``{s}`` is the quoted schema) in its own transaction; return rowcount."""
    schema = engine.get_execution_options()["schema_translate_map"]["backfill"]
    with engine.begin() as conn:
        return conn.execute(text(sql.replace("{s}", f'"{schema}"')), params).rowcount


def job(engine: Engine, job_id: int) -> dict[str, Any] | None:
    """The ``jobs`` row of ``job_id`` with ``run_at - updated_at`` and ``run_at - now()``."""
    found = rows(
        engine,
        "SELECT *, extract(epoch FROM run_at - updated_at) AS scheduled_after,"
        " extract(epoch FROM run_at - now()) AS due_in"
        " FROM {s}.jobs WHERE id = :id",
        id=job_id,
    )
    return found[0] if found else None


def dead_letters(engine: Engine) -> list[dict[str, Any]]:
    """Every dead-letter row, by original job id."""
    return rows(engine, "SELECT * FROM {s}.dead_letter_jobs ORDER BY original_job_id")


def count(engine: Engine, table: str, where: str = "true") -> int:
    """``count(*)`` of ``table`` in the test schema."""
    return int(rows(engine, f"SELECT count(*) AS n FROM {{s}}.{table} WHERE {where}")[0]["n"])


UNFINISHED = "state IN ('available', 'scheduled', 'running')"
"""Jobs that may still run (finished ones stay for their retention)."""


def unfinished(engine: Engine) -> int:
    """Jobs of the test schema that are waiting or running."""
    return count(engine, "jobs", UNFINISHED)


def state_of(engine: Engine, job_id: int) -> str | None:
    """The job's state, or None once its row is gone."""
    row = job(engine, job_id)
    return None if row is None else str(row["state"])


def make_due(engine: Engine, *job_ids: int) -> None:
    """Move ``run_at`` of the given jobs (all when none given) into the past."""
    where = "id = ANY(:ids)" if job_ids else "true"
    execute(
        engine,
        f"UPDATE {{s}}.jobs SET run_at = now() - interval '1 second' WHERE {where}",
        ids=list(job_ids),
    )


# -- waiting -------------------------------------------------------------------


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 10.0,
    what: str = "condition",
) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``timeout`` seconds.

    For conditions that have no event to wait on (another process's rows, a
    reconnect counter). Each check is ~10 ms apart.

    Raises:
        AssertionError: the condition did not hold in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def poll_db(
    check: Callable[[], bool], *, timeout: float = 30.0, what: str = "database state"
) -> None:
    """Poll the database (sync) until ``check()`` holds; fail after ``timeout`` seconds.

    Raises:
        AssertionError: the condition did not hold in time.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- subprocess workers --------------------------------------------------------


def create_result_tables(engine: Engine) -> None:
    """Create the tables the script handlers write: ``results`` (PK) and ``runs`` (log)."""
    execute(
        engine,
        "CREATE TABLE {s}.results (job_id bigint PRIMARY KEY, worker_id text NOT NULL);"
        "CREATE TABLE {s}.runs (job_id bigint NOT NULL, worker_id text NOT NULL,"
        " attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )


def script_env() -> dict[str, str]:
    """Environment for a script subprocess: the repo on the path, no worker variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "BACKFILL_SCHEMA",
            "FAST_QUEUE_CONCURRENCY",
            "BULK_QUEUE_CONCURRENCY",
            "POLL_INTERVAL_MS",
            "SHUTDOWN_TIMEOUT_SECS",
        )
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_script(name: str, *args: str) -> subprocess.Popen[str]:
    """Start ``tests/worker/scripts/<name>`` with ``args``; stdin/stdout are pipes."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / name), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
        cwd=REPO,
    )


def read_json_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Read the next stdout line of ``proc`` as JSON (fails with its stderr if it died).

    Raises:
        AssertionError: the process closed stdout or wrote something else.
    """
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"script exited with {proc.returncode}: {err}")
    loaded: dict[str, Any] = json.loads(line)
    return loaded


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """A list to put script processes in; any still alive at teardown is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
