"""The notes service's own table, in schema ``notes_app``."""

from __future__ import annotations

from sqlalchemy import MetaData, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The application's models (backfill_sa's tables are on their own MetaData)."""

    metadata = MetaData(schema="notes_app")


class Note(Base):
    """A note; a job fills in its summary after the request that created it."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text, default=None)
