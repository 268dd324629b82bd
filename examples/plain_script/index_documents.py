"""A plain script with the sync Session: add documents and their indexing jobs in one
transaction, then run a worker until nothing is due.

    DATABASE_URL=postgresql://localhost/app python -m examples.plain_script.index_documents
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import MetaData, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import enqueue_batch
from backfill_sa.migrations import upgrade
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner


class Base(DeclarativeBase):
    """The script's tables, in schema ``docs_app``."""

    metadata = MetaData(schema="docs_app")


class Document(Base):
    """A document waiting for (or done with) indexing."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    words: Mapped[int | None] = mapped_column(default=None)


def build_registry(maker: sessionmaker[Session]) -> TaskRegistry:
    """The script's one task: count a document's words (a stand-in for indexing)."""
    registry = TaskRegistry()

    @registry.task("index_document")
    def index_document(payload: dict[str, int], ctx: JobContext) -> None:
        with maker() as session, session.begin():
            document = session.get(Document, payload["document_id"])
            if document is not None:
                document.words = len(document.title.split())

    return registry


def add_documents(session: Session, titles: Sequence[str]) -> list[int]:
    """Add documents and one indexing job each, in ``session``'s transaction."""
    documents = [Document(title=title) for title in titles]
    session.add_all(documents)
    session.flush()
    enqueue_batch(session, "index_document", [{"document_id": d.id} for d in documents])
    return [d.id for d in documents]


def run(url: str, titles: Sequence[str], *, schemas: Mapping[str, str] | None = None) -> str:
    """Set up the tables, add ``titles`` with their jobs, run a worker in burst mode.

    Args:
        url: the database.
        titles: documents to add.
        schemas: schema translation (``backfill`` and ``docs_app`` to other names).
    """
    translate: dict[Any, Any] = dict(schemas or {})
    engine = create_engine(sync_url(url), execution_options={"schema_translate_map": translate})
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE SCHEMA IF NOT EXISTS {translate.get('docs_app', 'docs_app')}"
            )
            Base.metadata.create_all(conn)
        with Session(engine) as session, session.begin():
            add_documents(session, titles)
        config = WorkerConfig(
            database_url=url, schema=translate.get("backfill", "backfill"), queues={"bulk": 4}
        )
        registry = build_registry(sessionmaker(engine))
        result = asyncio.run(WorkerRunner(config, registry).run(burst=True))
        return f"{result.succeeded} document(s) indexed"
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(run(os.environ["DATABASE_URL"], ["a plain script", "with the sync Session"]))
