"""The toolkit's own tests use the plugin as a user would: a registry whose handlers
write through the test's transaction, and the ``backfill_*`` fixtures."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from backfill_sa.enqueue import enqueue
from backfill_sa.errors import PermanentError
from backfill_sa.retry import RetryPolicy
from backfill_sa.tasks import JobContext, TaskRegistry

FLAKY_FAILURES = 2
"""``flaky`` fails this many attempts, then succeeds."""


@pytest.fixture
def notes_table(backfill_connection: Connection) -> str:
    """A business table created inside the test's transaction (rolled back with it)."""
    backfill_connection.execute(text("CREATE TABLE test_notes (id serial, body text)"))
    return "test_notes"


def notes(session: Session) -> list[str]:
    """The bodies written to ``test_notes``, in order."""
    return list(session.scalars(text("SELECT body FROM test_notes ORDER BY id")))


def build_registry(maker: sessionmaker[Session]) -> TaskRegistry:
    """Handlers that write through sessions made by ``maker`` (the test's)."""
    registry = TaskRegistry()
    attempts: dict[int, int] = {}

    @registry.task("write_note", queue="fast")
    def write_note(payload: dict[str, Any], ctx: JobContext) -> None:
        with maker() as session, session.begin():
            session.execute(
                text("INSERT INTO test_notes (body) VALUES (:body)"), {"body": payload["body"]}
            )
            if payload.get("then"):
                enqueue(session, "write_note", {"body": payload["then"]}, queue="fast")

    @registry.task("flaky", retry=RetryPolicy(max_attempts=5))
    def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
        attempts[ctx.job_id] = ctx.attempt
        if ctx.attempt <= FLAKY_FAILURES:
            raise RuntimeError(f"flaky attempt {ctx.attempt}")

    @registry.task("add")
    def add(payload: dict[str, int], ctx: JobContext) -> dict[str, int]:
        return {"sum": payload["a"] + payload["b"]}

    @registry.task("refuse")
    def refuse(payload: dict[str, Any], ctx: JobContext) -> None:
        raise PermanentError("card declined")

    @registry.task("forever")
    def forever(payload: dict[str, Any], ctx: JobContext) -> None:
        with maker() as session, session.begin():
            enqueue(session, "forever", {})

    return registry


@pytest.fixture
def backfill_registry(backfill_sessionmaker: sessionmaker[Session]) -> TaskRegistry:
    """The plugin's hook: the application's registry, its handlers in the test's
    transaction."""
    return build_registry(backfill_sessionmaker)


def build_async_registry(maker: async_sessionmaker[AsyncSession]) -> TaskRegistry:
    """Async handlers writing through the test's AsyncSessions."""
    registry = TaskRegistry()

    @registry.task("write_note", queue="fast")
    async def write_note(payload: dict[str, Any], ctx: JobContext) -> None:
        async with maker() as session, session.begin():
            await session.execute(
                text("INSERT INTO test_notes (body) VALUES (:body)"), {"body": payload["body"]}
            )

    return registry
