"""docs/worker.md: its Python snippets run against the test's schema, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.worker.conftest import unfinished

DOC = Path(__file__).resolve().parents[2] / "docs" / "worker.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_snippets() -> None:
    assert len(_snippets()) >= 1


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_snippet_runs(
    index: int,
    database_url: str,
    schema: str,
    sync_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BACKFILL_SCHEMA", schema)
    code = compile(_snippets()[index], f"{DOC}:snippet{index}", "exec")

    exec(code, {"__name__": f"worker_doc_{index}"})

    assert unfinished(sync_engine) == 0
