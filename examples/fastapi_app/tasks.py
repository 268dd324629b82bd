"""The notes service's jobs. The registry is built around a sessionmaker (no globals),
so tests hand it one joined to their transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill_sa.tasks import JobContext, TaskRegistry
from examples.fastapi_app.models import Note

SUMMARY_WORDS = 3


async def summarize(maker: async_sessionmaker[AsyncSession], note_id: int) -> None:
    """Write a note's summary: its first few words."""
    async with maker() as session, session.begin():
        note = await session.get(Note, note_id)
        if note is not None:
            note.summary = " ".join(note.body.split()[:SUMMARY_WORDS])


def build_registry(maker: async_sessionmaker[AsyncSession]) -> TaskRegistry:
    """The application's tasks, writing through sessions from ``maker``."""
    registry = TaskRegistry()

    @registry.task("summarize_note", queue="fast")
    async def summarize_note(payload: dict[str, int], ctx: JobContext) -> None:
        await summarize(maker, payload["note_id"])

    return registry
