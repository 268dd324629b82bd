"""Acceptance fixtures: the real CLI in a subprocess, against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from backfill_sa.dburl import parse_url

REPO = Path(__file__).resolve().parents[2]
_ENV_DROPPED = (
    "BACKFILL_SCHEMA",
    "FAST_QUEUE_CONCURRENCY",
    "BULK_QUEUE_CONCURRENCY",
    "POLL_INTERVAL_MS",
    "SHUTDOWN_TIMEOUT_SECS",
)


@dataclass(frozen=True)
class Completed:
    """A finished command: exit code and output."""

    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        """Non-empty lines written to stderr."""
        return [line for line in self.stderr.splitlines() if line.strip()]


Runner = Callable[..., Completed]


def run_command(
    args: list[str], *, env: dict[str, str], timeout: float = 120.0, cwd: Path = REPO
) -> Completed:
    """Run ``python ARGS`` in ``cwd`` with exactly ``env``; return what happened."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Completed(done.returncode, done.stdout, done.stderr)


def base_env(database_url: str | None) -> dict[str, str]:
    """The test process's environment without backfill settings, with ``database_url``."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


@pytest.fixture
def cli(database_url: str) -> Runner:
    """Run ``python -m backfill_sa ARGS`` against the test database.

    Keyword ``env`` adds variables (a value of None removes one); ``timeout`` in seconds.
    """

    def run(
        *args: str, env: dict[str, str | None] | None = None, timeout: float = 120.0
    ) -> Completed:
        merged = base_env(database_url)
        for key, value in (env or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return run_command(["-m", "backfill_sa", *args], env=merged, timeout=timeout)

    return run


@pytest.fixture
def unique_schema(admin_engine: Engine) -> Iterator[str]:
    """A schema name nobody uses; dropped after the test whatever the CLI made of it."""
    name = f"acc_{uuid.uuid4().hex[:12]}"
    yield name
    with admin_engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture
def fresh_database(database_url: str, admin_engine: Engine) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test.

    For programs (the examples) that use the default ``backfill`` schema and schemas
    of their own, so that they cannot collide with other tests.
    """
    name = f"bf_acc_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = parse_url(database_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_of(url: str) -> str:
    """The database name in ``url``."""
    return str(make_url(url).database)
