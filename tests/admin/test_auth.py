"""Authentication of the admin app: tokens, the login cookie, your own callable, the audit log."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from backfill_sa.admin import Principal, TokenAuth, create_app, insecure_no_auth
from backfill_sa.admin.endpoints import ENDPOINTS
from backfill_sa.errors import ConfigurationError
from tests.admin.conftest import AUTH, RO_TOKEN, TOKEN, Rows, client_for

ROUTES = [(e.method, e.path) for e in ENDPOINTS] + [("GET", "/openapi.json")]
MUTATIONS = [(e.method, e.path) for e in ENDPOINTS if e.mutates]


def _url(path: str, job_id: int, entry_id: int) -> str:
    url = path.replace("{name}", "fast")
    return url.replace("/jobs/{id}", f"/jobs/{job_id}").replace("{id}", str(entry_id))


async def _state(rows: Rows) -> tuple[list[int], list[int], object]:
    return (
        [j["id"] for j in await rows.jobs()],
        await rows.dead_letter_ids(),
        await rows.queue("fast"),
    )


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_a_missing_or_wrong_token(
    async_engine: AsyncEngine, rows: Rows, method: str, path: str
) -> None:
    job_id, entry_id = await rows.add_job(queue="fast"), await rows.add_dead_letter()
    before = await _state(rows)
    app = create_app(async_engine, auth=AUTH)
    for token in (None, "x" * 30, TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        async with client_for(app, token=token) as http:
            response = await http.request(
                method, _url(path, job_id, entry_id), json={"ids": [entry_id]}
            )
        assert response.status_code == 401, token
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == 'Bearer realm="backfill_sa admin"'
    async with client_for(app, token=None) as http:
        basic = await http.request(method, _url(path, job_id, entry_id), auth=("ops", TOKEN))
    assert basic.status_code == 401
    assert await _state(rows) == before


@pytest.mark.parametrize(("method", "path"), MUTATIONS)
async def test_a_read_only_token_changes_nothing(
    async_engine: AsyncEngine, rows: Rows, method: str, path: str
) -> None:
    job_id, entry_id = await rows.add_job(queue="fast"), await rows.add_dead_letter()
    before = await _state(rows)
    async with client_for(create_app(async_engine, auth=AUTH), token=RO_TOKEN) as http:
        response = await http.request(
            method, _url(path, job_id, entry_id), json={"ids": [entry_id]}
        )
        overview = await http.get("/api/overview")
    assert response.status_code == 403
    assert response.json() == {"error": "read_only", "message": "viewer may not change anything"}
    assert await _state(rows) == before
    assert overview.status_code == 200
    assert (overview.json()["user"], overview.json()["read_only"]) == ("viewer", True)


async def test_the_login_page_sets_a_strict_http_only_cookie(
    async_engine: AsyncEngine, rows: Rows
) -> None:
    await rows.add_job(queue="fast")
    async with client_for(create_app(async_engine, auth=AUTH), token=None) as http:
        to_login = await http.get("/")
        page = await http.get("/login")
        wrong = await http.post("/login", data={"token": "not-the-token-at-all"})
        cross = await http.post(
            "/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert "set-cookie" not in wrong.headers
        assert "set-cookie" not in cross.headers
        signed_in = await http.post("/login", data={"token": TOKEN})
        dashboard = await http.get("/")
        pause = await http.post("/api/queues/fast/pause", headers={"Origin": "http://admin.test"})
        signed_out = await http.post("/logout")
        after = await http.get("/api/overview")
    assert (to_login.status_code, to_login.headers["location"]) == (303, "/login")
    assert page.status_code == 200
    assert '<input id="token" name="token" type="password"' in page.text
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert wrong.status_code == 401
    assert "That token is not valid." in wrong.text
    assert cross.status_code == 403
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("backfill_admin_token=")
    assert {"httponly", "samesite=strict", "path=/"} <= {
        part.strip().lower() for part in cookie.split(";")
    }
    assert dashboard.status_code == 200
    assert "<title>backfill_sa admin</title>" in dashboard.text
    assert pause.status_code == 200
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/login")
    assert after.status_code == 401


async def test_the_cookie_path_follows_the_mount_prefix(async_engine: AsyncEngine) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops/admin", app=create_app(async_engine, auth=AUTH))])
    async with client_for(outer, token=None) as http:
        redirect = await http.get("/ops/admin/")
        signed_in = await http.post("/ops/admin/login", data={"token": TOKEN})
        dashboard = await http.get("/ops/admin/")
    assert redirect.headers["location"] == "/ops/admin/login"
    assert signed_in.headers["location"] == "/ops/admin/"
    assert "Path=/ops/admin/" in signed_in.headers["set-cookie"]
    assert dashboard.status_code == 200


async def test_your_own_authenticator_decides(async_engine: AsyncEngine, rows: Rows) -> None:
    await rows.add_job(queue="fast")
    users = {"alice": Principal("alice"), "bob": Principal("bob", read_only=True)}

    async def by_header(request: Request) -> Principal | None:
        return users.get(request.headers.get("x-user", ""))

    app = create_app(async_engine, auth=by_header)
    async with client_for(app, token=None) as http:
        nobody = await http.get("/api/overview")
        page = await http.get("/")
        login = await http.get("/login")
        bob = await http.post("/api/queues/fast/pause", headers={"X-User": "bob"})
        alice = await http.post("/api/queues/fast/pause", headers={"X-User": "alice"})
        overview = await http.get("/api/overview", headers={"X-User": "alice"})
    assert nobody.status_code == 401
    assert "www-authenticate" not in nobody.headers
    assert page.status_code == 401  # no login page of ours: the application signs people in
    assert login.status_code == 404
    assert bob.status_code == 403
    assert alice.status_code == 200
    assert (overview.json()["user"], overview.json()["auth"]) == ("alice", "app")


async def test_a_sync_authenticator_and_a_bad_return_value(async_engine: AsyncEngine) -> None:
    app = create_app(async_engine, auth=lambda request: Principal("sync"))
    async with client_for(app, token=None) as http:
        assert (await http.get("/api/overview")).json()["user"] == "sync"
    broken = create_app(async_engine, auth=lambda request: "admin")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return a Principal or None"):
        async with client_for(broken, token=None) as http:
            await http.get("/api/overview")


async def test_insecure_no_auth_lets_everybody_in(async_engine: AsyncEngine) -> None:
    async with client_for(create_app(async_engine, auth=insecure_no_auth()), token=None) as http:
        overview = await http.get("/api/overview")
        document = (await http.get("/openapi.json")).json()
    assert (overview.json()["user"], overview.json()["auth"]) == ("anonymous", "none")
    assert "security" not in document


def test_token_rules() -> None:
    with pytest.raises(ConfigurationError) as empty:
        TokenAuth({})
    assert empty.value.field == "tokens"
    for bad in ("short", " " + TOKEN, "a token with spaces in it"):
        with pytest.raises(ConfigurationError, match="at least 16 characters"):
            TokenAuth({bad: Principal("x")})
    assert AUTH.check(TOKEN) == Principal("ops")
    assert AUTH.check(RO_TOKEN) == Principal("viewer", read_only=True)
    assert AUTH.check(TOKEN[:-1]) is None
    assert AUTH.check("") is None
    assert TokenAuth.from_env({}) is None
    with pytest.raises(ConfigurationError) as info:
        create_app(None, auth=None)  # type: ignore[arg-type]
    assert info.value.field == "auth"


async def test_every_change_is_audited(
    client: httpx.AsyncClient, rows: Rows, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backfill_sa.admin.audit")
    job_id = await rows.add_job(queue="fast")
    a, b = await rows.add_dead_letter(task="a"), await rows.add_dead_letter(task="a")
    c = await rows.add_dead_letter(task="c")
    await client.post("/api/queues/fast/pause")
    await client.post("/api/queues/fast/resume")
    await client.post(f"/api/jobs/{job_id}/cancel")
    await client.post("/api/dlq/requeue", json={"task": "a", "dry_run": True})
    await client.post("/api/dlq/requeue", json={"ids": [a]})
    await client.post("/api/dlq/delete", json={"task": "a"})
    await client.post(f"/api/dlq/{c}/requeue")
    await client.get("/api/overview")  # reads are not audited
    records = [r for r in caplog.records if r.name == "backfill_sa.admin.audit"]
    seen = [
        (
            getattr(r, "admin_user", None),
            getattr(r, "admin_action", None),
            getattr(r, "admin_count", None),
            getattr(r, "admin_dry_run", None),
        )
        for r in records
    ]
    assert seen == [
        ("ops", "queue.pause", 1, False),
        ("ops", "queue.resume", 1, False),
        ("ops", "job.cancel", 1, False),
        ("ops", "dlq.requeue", 2, True),
        ("ops", "dlq.requeue", 1, False),
        ("ops", "dlq.delete", 1, False),
        ("ops", "dlq.requeue", 1, False),
    ]
    assert records[3].getMessage() == (
        "admin audit: ops dlq.requeue task='a': 2 (dry run, nothing changed)"
    )
    assert getattr(records[4], "admin_ids", None) == [a]
    assert re.fullmatch(r"admin audit: ops dlq\.delete task='a': 1", records[5].getMessage())
    assert await rows.dead_letter_ids() == []
    assert b not in await rows.dead_letter_ids()


async def test_refused_logins_are_logged(
    async_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backfill_sa.admin.audit")
    async with client_for(create_app(async_engine, auth=AUTH), token=None) as http:
        await http.post("/login", data={"token": "wrong-token-wrong-token"})
        await http.post("/login", data={"token": RO_TOKEN})
    messages = [r.getMessage() for r in caplog.records if r.name == "backfill_sa.admin.audit"]
    assert messages == [
        "admin audit: refused login from 127.0.0.1 (wrong token)",
        "admin audit: viewer signed in from 127.0.0.1",
    ]
    assert caplog.records[0].levelno == logging.WARNING
