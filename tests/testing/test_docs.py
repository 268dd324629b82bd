"""docs/testing.md's worked example runs as a user's test suite, plugin and all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
FILE_BLOCK = re.compile(r"```python\n# file: (\S+)\n(.*?)```", flags=re.S)


def _files() -> dict[str, str]:
    return dict(FILE_BLOCK.findall(DOC.read_text(encoding="utf-8")))


def test_the_worked_example_passes_in_a_fresh_directory(tmp_path: Path, database_url: str) -> None:
    files = _files()
    assert set(files) == {"orders.py", "conftest.py", "test_orders.py", "test_orders_async.py"}
    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
        encoding="utf-8",
    )
    env = {**os.environ, "BACKFILL_TEST_DATABASE_URL": database_url}

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout, done.stdout


def test_the_plugin_can_be_disabled(tmp_path: Path) -> None:
    (tmp_path / "test_off.py").write_text(
        "def test_no_fixture(request):\n"
        "    assert 'backfill_session' not in request.fixturenames\n"
        "    import pytest\n"
        "    with pytest.raises(pytest.FixtureLookupError):\n"
        "        request.getfixturevalue('backfill_session')\n",
        encoding="utf-8",
    )

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:backfill_sa"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr


INTEGRATIONS = DOC.parent / "integrations.md"
EXCERPT = re.compile(r"```python\n# (examples/\S+)\n(.*?)```", flags=re.S)


def test_every_integrations_snippet_is_an_excerpt_of_a_tested_example() -> None:
    root = DOC.parents[1]
    text = INTEGRATIONS.read_text(encoding="utf-8")
    excerpts = EXCERPT.findall(text)

    assert len(excerpts) == text.count("```python"), "a python block names no example file"
    assert {path.split("/")[1] for path, _ in excerpts} == {
        "fastapi_app",
        "flask_app",
        "plain_script",
    }
    for path, body in excerpts:
        source = (root / path).read_text(encoding="utf-8")
        assert body in source, f"docs/integrations.md: this excerpt is not in {path}:\n{body}"


def test_inline_mode_without_a_registry_says_what_to_define(
    tmp_path: Path, database_url: str
) -> None:
    (tmp_path / "test_inline.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.backfill_mode('inline')\n"
        "def test_it(backfill_session):\n"
        "    pass\n",
        encoding="utf-8",
    )
    env = {**os.environ, "BACKFILL_TEST_DATABASE_URL": database_url}

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "define a fixture named backfill_registry" in done.stdout, done.stdout
