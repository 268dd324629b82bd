"""Admin app fixtures: the app on the test's schema, an HTTP client, and row helpers.

The client talks to the ASGI app in-process (httpx's ASGITransport) on the test's
own event loop, so the app shares the ``async_engine`` fixture; the helpers write and
read the real tables of the test's schema.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backfill_sa.admin import Principal, TokenAuth, create_app
from backfill_sa.models import DeadLetterJob, FailureReason, Job, Queue, Worker

UTC = dt.timezone.utc
BASE_URL = "http://admin.test"
TOKEN = "test-admin-token-0123456789"
RO_TOKEN = "test-viewer-token-0123456789"
AUTH = TokenAuth({TOKEN: Principal("ops"), RO_TOKEN: Principal("viewer", read_only=True)})
"""The test apps' tokens: ``ops`` may change things, ``viewer`` may only look."""

jobs: Table = Job.__table__
dead_letters: Table = DeadLetterJob.__table__
queues: Table = Queue.__table__
workers: Table = Worker.__table__


class Rows:
    """Writes and reads rows of the test's schema, each call in its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add_job(self, **values: Any) -> int:
        """Insert a job (task ``t``, queue ``bulk``, state available unless given)."""
        values = {"task": "t", "queue": "bulk", "payload": {"n": 1}, **values}
        if "meta" in values:
            values["metadata"] = values.pop("meta")
        async with self.engine.begin() as conn:
            return int(
                (await conn.execute(insert(jobs).values(values).returning(jobs.c.id))).scalar_one()
            )

    async def add_dead_letter(self, **values: Any) -> int:
        """Insert a dead-letter entry (task ``send_email``, queue ``bulk`` unless given)."""
        moment = dt.datetime(2026, 1, 1, tzinfo=UTC)
        defaults: dict[str, Any] = {
            "original_job_id": 1000,
            "task": "send_email",
            "queue": "bulk",
            "payload": {"to": "a@example.com"},
            "priority": 0,
            "max_attempts": 8,
            "failure_reason": FailureReason.MAX_ATTEMPTS_EXCEEDED.value,
            "failure_count": 8,
            "last_error": {"type": "ValueError", "message": "boom", "traceback": "Traceback..."},
            "metadata": {"tag": "x"},
            "original_created_at": moment,
            "original_run_at": moment,
        }
        async with self.engine.begin() as conn:
            stmt = insert(dead_letters).values({**defaults, **values}).returning(dead_letters.c.id)
            return int((await conn.execute(stmt)).scalar_one())

    async def add_worker(self, worker_id: str, *, silent_for: dt.timedelta, **values: Any) -> None:
        """Register a worker whose last heartbeat was ``silent_for`` ago (database clock)."""
        defaults: dict[str, Any] = {"hostname": "host-a", "pid": 4242, "queues": {"bulk": 5}}
        row = {**defaults, **values, "id": worker_id, "last_heartbeat_at": func.now() - silent_for}
        async with self.engine.begin() as conn:
            await conn.execute(insert(workers).values(row))

    async def add_queue(self, name: str, **values: Any) -> None:
        """Insert a queue settings row."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(queues).values(name=name, **values))

    async def job(self, job_id: int) -> dict[str, Any] | None:
        """The job row with this id, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().first()
        return dict(row) if row is not None else None

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job row, by id."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(jobs).order_by(jobs.c.id))
            return [dict(row) for row in result.mappings()]

    async def dead_letter_ids(self) -> list[int]:
        """Ids of every dead-letter entry, ascending."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(dead_letters.c.id).order_by(dead_letters.c.id))
            return list(result.scalars())

    async def queue(self, name: str) -> dict[str, Any] | None:
        """The queue settings row, or None."""
        async with self.engine.connect() as conn:
            stmt = select(queues).where(queues.c.name == name)
            row = (await conn.execute(stmt)).mappings().first()
        return dict(row) if row is not None else None

    async def clear_jobs(self) -> None:
        """Delete every job."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(jobs))

    async def clear_jobs_except(self, keep: int) -> None:
        """Delete every job but the one with id ``keep``."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(jobs).where(jobs.c.id != keep))


@pytest.fixture
def rows(async_engine: AsyncEngine) -> Rows:
    """Row helpers on the test's schema."""
    return Rows(async_engine)


def client_for(app: Any, token: str | None = TOKEN) -> httpx.AsyncClient:
    """An httpx client that calls ``app`` in-process, with ``token`` as bearer (if any)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers
    )


@pytest.fixture
async def client(async_engine: AsyncEngine, schema: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the admin app on the test's schema, as ``ops`` (read-write)."""
    async with client_for(create_app(async_engine, auth=AUTH, schema=schema)) as http:
        yield http


@pytest.fixture
async def ro_client(async_engine: AsyncEngine, schema: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the admin app in read-only mode (as ``ops``, who could otherwise write)."""
    app = create_app(async_engine, auth=AUTH, schema=schema, read_only=True)
    async with client_for(app) as http:
        yield http


def assert_invalid(response: httpx.Response, field: str, rule_part: str) -> None:
    """The response is a 400 naming ``field``, with ``rule_part`` in its rule."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid"
    assert body["field"] == field
    assert rule_part in body["rule"], body
    assert body["message"] == f"{field}: {body['rule']}"


_SCRIPT = """
import logging, sys
logging.basicConfig(level=sys.argv[6], stream=sys.stderr)
from backfill_sa.admin import serve
serve(
    sys.argv[1],
    schema=sys.argv[2],
    port=int(sys.argv[3]),
    read_only=sys.argv[4] == "ro",
    insecure=sys.argv[5] == "insecure",
    on_ready=lambda url: print("ready at", url, file=sys.stderr),
)
"""


def admin_env(**extra: str) -> dict[str, str]:
    """The environment without BACKFILL_ADMIN_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_ADMIN_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@asynccontextmanager
async def served_admin(
    database_url: str,
    schema: str,
    *,
    env: Mapping[str, str],
    read_only: bool = False,
    insecure: bool = False,
    log_level: str = "INFO",
) -> AsyncIterator[tuple[str, bytes]]:
    """Run serve() in a subprocess on a free port; yield its base URL and start-up log.

    ``log_level`` WARNING keeps uvicorn's access log quiet, for long sessions.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SCRIPT,
        database_url,
        schema,
        "0",
        "ro" if read_only else "rw",
        "insecure" if insecure else "secure",
        log_level,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    assert process.stderr is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        log = b""
        while (found := re.search(rb"ready at (http://127\.0\.0\.1:\d+)/", log)) is None:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
            assert line, f"server exited early: {log.decode()}"
            log += line
        # Keep reading: a full pipe would block the server's access log, and the server.
        drain = asyncio.create_task(process.stderr.read())
        yield found[1].decode(), log
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=30)
        if drain is not None:
            await drain
