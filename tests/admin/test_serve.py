"""serve() and ``python -m backfill_sa admin``: a real uvicorn process, and its start-up rules.

The server will not start without authentication: a token from the environment, or
``--insecure``, which warns on every start and is refused on a non-loopback address.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from backfill_sa.admin import insecure_no_auth, serve
from backfill_sa.admin.server import INSECURE_WARNING, is_loopback, resolve_auth
from backfill_sa.errors import ConfigurationError
from tests.admin.conftest import AUTH, RO_TOKEN, TOKEN, Rows, served_admin
from tests.admin.conftest import admin_env as _env

_NO_TOKENS = {"BACKFILL_ADMIN_TOKEN": "", "BACKFILL_ADMIN_READONLY_TOKEN": ""}


def test_serve_refuses_an_unmigrated_schema(database_url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        serve(database_url, schema="t_admin_not_migrated", port=0, auth=AUTH)
    assert info.value.field == "schema"
    assert "python -m backfill_sa migrate upgrade --schema t_admin_not_migrated" in info.value.rule


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"port": 70000}, "port"), ({"schema": "A"}, "schema")]
)
def test_serve_refuses_bad_settings(
    database_url: str, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        serve(database_url, auth=AUTH, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_serve_reports_a_taken_port(database_url: str, schema: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = int(taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            serve(database_url, schema=schema, port=port, auth=AUTH)


def test_no_authentication_is_refused(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _NO_TOKENS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as info:
        serve(database_url, schema=schema, port=0)
    assert info.value.field == "BACKFILL_ADMIN_TOKEN"
    assert "--insecure" in info.value.rule


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_insecure_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_auth(None, host=host, insecure=True, environ={})
    assert info.value.field == "host"
    assert "loopback" in info.value.rule


def test_resolve_auth_rules() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert resolve_auth(None, host="::1", insecure=True, environ={}) is not None
    with pytest.raises(ConfigurationError) as info:
        resolve_auth(insecure_no_auth(), host="127.0.0.1", insecure=True)
    assert info.value.field == "insecure"
    from_env = resolve_auth(
        None, host="0.0.0.0", insecure=False, environ={"BACKFILL_ADMIN_TOKEN": TOKEN}
    )
    assert from_env is not None
    with pytest.raises(ConfigurationError) as short:
        resolve_auth(
            None, host="127.0.0.1", insecure=False, environ={"BACKFILL_ADMIN_TOKEN": "short"}
        )
    assert short.value.field == "BACKFILL_ADMIN_TOKEN"
    with pytest.raises(ConfigurationError) as same:
        resolve_auth(
            None,
            host="127.0.0.1",
            insecure=False,
            environ={"BACKFILL_ADMIN_TOKEN": TOKEN, "BACKFILL_ADMIN_READONLY_TOKEN": TOKEN},
        )
    assert same.value.field == "BACKFILL_ADMIN_READONLY_TOKEN"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ((), "BACKFILL_ADMIN_TOKEN: is not set"),
        (("--host", "0.0.0.0"), "BACKFILL_ADMIN_TOKEN: is not set"),
        (("--insecure", "--host", "0.0.0.0"), "host: '0.0.0.0' is not a loopback address"),
    ],
)
def test_cli_refuses_to_start_without_auth(
    database_url: str, schema: str, flags: tuple[str, ...], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backfill_sa", "admin", "--schema", schema, *flags],
        env=_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


async def test_served_with_tokens(database_url: str, schema: str, rows: Rows) -> None:
    await rows.add_job(queue="served")
    env = _env(BACKFILL_ADMIN_TOKEN=TOKEN, BACKFILL_ADMIN_READONLY_TOKEN=RO_TOKEN)
    async with (
        served_admin(database_url, schema, env=env, read_only=False, insecure=False) as (url, log),
        httpx.AsyncClient(base_url=url) as http,
    ):
        port = url.rsplit(":", 1)[1]
        assert f"admin: serving http://127.0.0.1:{port}/".encode() in log
        assert INSECURE_WARNING.encode() not in log
        anonymous = await http.get("/api/overview")
        wrong = await http.get("/api/overview", headers={"Authorization": "Bearer " + "x" * 30})
        overview = await http.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
        viewer = {"Authorization": f"Bearer {RO_TOKEN}"}
        viewer_pause = await http.post("/api/queues/served/pause", headers=viewer)
        page = await http.get("/")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert overview.status_code == 200
    assert overview.json()["schema"] == schema
    assert overview.json()["user"] == "admin"
    assert [q["name"] for q in overview.json()["queues"]] == ["served"]
    assert viewer_pause.status_code == 403
    assert viewer_pause.json()["error"] == "read_only"
    assert page.status_code == 303  # to the login page
    assert page.headers["location"] == "/login"
    assert await rows.queue("served") is None


async def test_served_insecure_warns_on_start(database_url: str, schema: str, rows: Rows) -> None:
    await rows.add_job(queue="served")
    env = _env(BACKFILL_ADMIN_TOKEN=TOKEN)  # --insecure switches the tokens off
    async with (
        served_admin(database_url, schema, env=env, read_only=True, insecure=True) as (url, log),
        httpx.AsyncClient(base_url=url) as http,
    ):
        overview = await http.get("/api/overview")
        refused = await http.post("/api/queues/served/pause")
    assert INSECURE_WARNING.encode() in log
    assert overview.status_code == 200
    assert overview.json()["user"] == "anonymous"
    assert overview.json()["auth"] == "none"
    assert refused.status_code == 403  # served read-only
    assert await rows.queue("served") is None
