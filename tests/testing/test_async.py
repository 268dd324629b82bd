"""The async fixtures and flavours: AsyncSession joined to the test's transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from backfill_sa.enqueue import enqueue_async, enqueue_batch_async
from backfill_sa.tasks import TaskRegistry
from backfill_sa.testing import (
    DrainResult,
    assert_enqueued_async,
    drain_async,
    enqueued_jobs_async,
    perform,
    perform_async,
    refute_enqueued_async,
)
from tests.testing.conftest import build_async_registry


@pytest.fixture
async def async_notes_table(backfill_async_connection: AsyncConnection) -> str:
    await backfill_async_connection.execute(text("CREATE TABLE test_notes (id serial, body text)"))
    return "test_notes"


@pytest.fixture
def backfill_registry(
    backfill_async_sessionmaker: async_sessionmaker[AsyncSession],
) -> TaskRegistry:
    return build_async_registry(backfill_async_sessionmaker)


async def _notes(session: AsyncSession) -> list[str]:
    return list(await session.scalars(text("SELECT body FROM test_notes ORDER BY id")))


@pytest.mark.usefixtures("async_notes_table")
async def test_enqueue_assert_and_drain_in_an_async_test(
    backfill_async_session: AsyncSession, backfill_registry: TaskRegistry
) -> None:
    await enqueue_async(backfill_async_session, "write_note", {"body": "a"}, queue="fast")
    await enqueue_batch_async(backfill_async_session, "write_note", [{"body": "b"}], queue="fast")

    await assert_enqueued_async(backfill_async_session, task="write_note", count=2)
    await refute_enqueued_async(backfill_async_session, task="write_note", payload={"body": "c"})
    assert len(await enqueued_jobs_async(backfill_async_session, queue="fast")) == 2

    result = await drain_async(backfill_async_session, backfill_registry)

    assert result == DrainResult(succeeded=2)
    assert await _notes(backfill_async_session) == ["a", "b"]
    await refute_enqueued_async(backfill_async_session)


@pytest.mark.usefixtures("async_notes_table")
@pytest.mark.backfill_mode("inline")
async def test_inline_mode_in_an_async_test(backfill_async_session: AsyncSession) -> None:
    await enqueue_async(backfill_async_session, "write_note", {"body": "now"})

    assert await _notes(backfill_async_session) == ["now"]
    await refute_enqueued_async(backfill_async_session)


async def test_assert_enqueued_async_fails_with_the_listing(
    backfill_async_session: AsyncSession,
) -> None:
    await enqueue_async(backfill_async_session, "other", {"n": 1})

    with pytest.raises(AssertionError, match=r"(?s)found 0.*task='other'"):
        await assert_enqueued_async(backfill_async_session, task="write_note")


async def test_perform_async() -> None:
    registry = TaskRegistry()

    @registry.task("double")
    async def double(payload: dict[str, int], ctx: object) -> int:
        return payload["n"] * 2

    assert (await perform_async(registry, "double", {"n": 2})).succeeded


async def test_the_sync_flavour_works_inside_a_running_loop() -> None:
    registry = TaskRegistry()

    @registry.task("hello")
    def hello(payload: dict[str, str], ctx: object) -> None:
        assert payload == {"to": "ada"}

    assert perform(registry, "hello", {"to": "ada"}).succeeded
