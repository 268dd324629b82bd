"""The plain script's tests, with the plugin's sync fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from backfill_sa.dburl import sync_url
from backfill_sa.tasks import TaskRegistry
from backfill_sa.testing import DrainResult, assert_enqueued, drain, perform
from examples.plain_script.index_documents import (
    Base,
    Document,
    add_documents,
    build_registry,
    run,
)


@pytest.fixture(scope="session")
def docs_schema(backfill_database_url: str) -> Iterator[str]:
    name = f"docs_test_{uuid.uuid4().hex[:8]}"
    engine = create_engine(
        sync_url(backfill_database_url),
        execution_options={"schema_translate_map": {"docs_app": name}},
    )
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
        Base.metadata.create_all(conn)
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def backfill_schema_translate_map(backfill_schema: str, docs_schema: str) -> dict[str, str]:
    return {"backfill": backfill_schema, "docs_app": docs_schema}


@pytest.fixture
def backfill_registry(backfill_sessionmaker: sessionmaker[Session]) -> TaskRegistry:
    return build_registry(backfill_sessionmaker)


def test_documents_and_their_jobs_go_in_together_and_drain(
    backfill_session: Session, backfill_registry: TaskRegistry
) -> None:
    ids = add_documents(backfill_session, ["one two", "three"])

    for document_id in ids:
        assert_enqueued(
            backfill_session, task="index_document", payload={"document_id": document_id}
        )
    assert drain(backfill_session, backfill_registry) == DrainResult(succeeded=2)

    words = backfill_session.scalars(select(Document.words).order_by(Document.id)).all()
    assert words == [2, 1]


@pytest.mark.backfill_mode("inline")
def test_inline_mode_indexes_as_the_documents_are_added(backfill_session: Session) -> None:
    [document_id] = add_documents(backfill_session, ["indexed at once"])

    document = backfill_session.get(Document, document_id, populate_existing=True)
    assert document is not None
    assert document.words == 3


def test_perform_runs_the_handler_alone(backfill_registry: TaskRegistry) -> None:
    assert perform(backfill_registry, "index_document", {"document_id": -1}).succeeded


def test_the_script_runs_end_to_end(backfill_database_url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    schemas = {"backfill": f"script_bf_{suffix}", "docs_app": f"script_docs_{suffix}"}
    try:
        assert run(backfill_database_url, ["a b", "c"], schemas=schemas) == "2 document(s) indexed"
    finally:
        engine = create_engine(sync_url(backfill_database_url))
        with engine.begin() as conn:
            for name in schemas.values():
                conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        engine.dispose()
