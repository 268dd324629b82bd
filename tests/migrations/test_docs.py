"""The migration docs say what the tests exercise, so the snippets cannot rot."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from backfill_sa.migrations import VERSION_LOCATION
from backfill_sa.models import JobState
from tests.migrations.test_sample_app import LOCATION_STYLES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_python_snippets_parse() -> None:
    text = (DOCS / "migrations.md").read_text()
    blocks = _blocks(text, "python")
    assert len(blocks) >= 4
    for block in blocks:
        # Snippets may await at top level, as in an async application's start-up.
        compile(block, "docs/migrations.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_ini_snippet_is_the_tested_configuration() -> None:
    (ini,) = _blocks((DOCS / "migrations.md").read_text(), "ini")
    locations, separator = LOCATION_STYLES["package_path"]
    assert f"version_locations = {locations}\n" in ini
    assert f"path_separator = {separator}\n" in ini


def test_toml_snippet_is_the_tested_configuration() -> None:
    (toml,) = _blocks((DOCS / "migrations.md").read_text(), "toml")
    locations, _ = LOCATION_STYLES["pyproject_toml"]
    assert f"version_locations = [{locations}]\n" in toml
    assert VERSION_LOCATION in toml


def test_state_diagram_covers_every_state_and_trigger() -> None:
    (diagram,) = _blocks((DOCS / "state_machine.md").read_text(), "mermaid")
    for state in JobState:
        assert f"{state.value} -->" in diagram
        assert f"--> {state.value}" in diagram
    for trigger in (
        "claim",
        "promote",
        "success",
        "retry",
        "snooze",
        "rescue",
        "requeue",
        "cancel_job",
        "retry_job",
        "prune",
    ):
        assert trigger in diagram
    assert "running --> dead_letter" in diagram
    for transition in (
        "running --> completed",
        "running --> cancelled",
        "available --> cancelled",
        "scheduled --> cancelled",
        "completed --> pruned",
        "cancelled --> pruned",
    ):
        assert transition in diagram
