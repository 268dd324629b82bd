"""The admin app as a whole: dashboard page, mounting, schema choice, errors, imports, docs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.routing import Mount

from backfill_sa.admin import create_app
from backfill_sa.dburl import async_url
from backfill_sa.errors import ConfigurationError
from tests.admin.conftest import AUTH, Rows, client_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "admin.md"


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


async def test_dashboard_page_and_its_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for table in ("queues", "workers", "dlq"):
        assert f'<tbody id="{table}">' in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing from a CDN
    assert "https://" not in page
    assert "innerHTML" not in page
    # The CSP allows exactly the inline script and style the page carries.
    (script,) = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL)
    csp = response.headers["content-security-policy"]
    assert f"script-src {_csp_hash(script)};" in csp
    assert f"style-src {_csp_hash(style)};" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    # It polls the API every 2 seconds, with URLs relative to where it is served.
    assert "setInterval(" in script
    assert "2000" in script
    assert 'base + "api/" + path' in script


async def test_mounted_under_a_prefix(async_engine: AsyncEngine, schema: str) -> None:
    outer = Starlette(routes=[Mount("/admin", app=create_app(async_engine, auth=AUTH))])
    async with client_for(outer) as http:
        page = await http.get("/admin/")
        assert page.status_code == 200
        assert "<title>backfill_sa admin</title>" in page.text
        overview = await http.get("/admin/api/overview")
        assert overview.status_code == 200
        assert overview.json()["schema"] == schema


async def test_schema_comes_from_the_argument_or_the_engine(
    database_url: str, schema: str, rows: Rows
) -> None:
    await rows.add_job(queue="mine")
    plain = create_async_engine(async_url(database_url))
    mapped_elsewhere = plain.execution_options(schema_translate_map={"backfill": "other"})
    try:
        for engine in (plain, mapped_elsewhere):
            async with client_for(create_app(engine, auth=AUTH, schema=schema)) as http:
                body = (await http.get("/api/overview")).json()
            assert body["schema"] == schema
            assert [q["name"] for q in body["queues"]] == ["mine"]
    finally:
        await plain.dispose()


async def test_no_schema_keeps_the_engines_mapping(
    async_engine: AsyncEngine, database_url: str, schema: str
) -> None:
    async with client_for(create_app(async_engine, auth=AUTH)) as http:
        assert (await http.get("/api/overview")).json()["schema"] == schema
    plain = create_async_engine(async_url(database_url))
    try:
        async with client_for(create_app(plain, auth=AUTH)) as http:
            response = await http.get("/api/overview")
        # The default schema may or may not be migrated in this database.
        if response.status_code == 200:
            assert response.json()["schema"] == "backfill"
        else:
            assert response.status_code == 503
            # Whichever of its tables the overview reads first is named, in "backfill".
            assert 'relation "backfill.' in response.json()["message"]
    finally:
        await plain.dispose()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schema": "Bad-Name"}, "schema"),
        ({"schema": ""}, "schema"),
        ({"worker_expiry": dt.timedelta(0)}, "worker_expiry"),
    ],
)
def test_bad_settings_are_refused(async_engine: AsyncEngine, kwargs: Any, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        create_app(async_engine, auth=AUTH, **kwargs)
    assert info.value.field == field


async def test_worker_expiry_decides_liveness(
    async_engine: AsyncEngine, schema: str, rows: Rows
) -> None:
    await rows.add_worker("w", silent_for=dt.timedelta(seconds=30))
    strict = create_app(
        async_engine, auth=AUTH, schema=schema, worker_expiry=dt.timedelta(seconds=10)
    )
    async with client_for(strict) as http:
        assert (await http.get("/api/workers")).json()["workers"][0]["alive"] is False
        assert (await http.get("/api/overview")).json()["workers"] == {"alive": 0, "total": 1}
    async with client_for(create_app(async_engine, auth=AUTH, schema=schema)) as http:
        assert (await http.get("/api/workers")).json()["workers"][0]["alive"] is True


async def test_database_errors_are_503(async_engine: AsyncEngine, admin_engine: Engine) -> None:
    empty = f"t_empty_{uuid.uuid4().hex[:8]}"  # a schema without our tables
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{empty}"'))
    try:
        async with client_for(create_app(async_engine, auth=AUTH, schema=empty)) as http:
            response = await http.get("/api/overview")
    finally:
        with admin_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{empty}"'))
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "database"
    assert f'relation "{empty}.' in body["message"]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


def test_import_backfill_sa_loads_no_web_framework() -> None:
    loaded = _modules_after("import backfill_sa")
    assert not {"starlette", "uvicorn", "httpx", "backfill_sa.admin"} & loaded


def test_admin_never_loads_the_worker() -> None:
    loaded = _modules_after("import backfill_sa.admin")
    assert "starlette" in loaded
    assert not any(name.startswith("backfill_sa.worker") for name in loaded)


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


def test_doc_snippets_compile() -> None:
    snippets = _snippets()
    assert len(snippets) >= 4
    for snippet in snippets:
        compile(snippet, str(DOCS), "exec")


def _snippet(marker: str) -> str:
    (snippet,) = [s for s in _snippets() if marker in s]
    return snippet


async def test_doc_token_mount_snippet_serves_the_api(
    async_engine: AsyncEngine, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    namespace: dict[str, Any] = {"engine": async_engine}
    exec(_snippet("TokenAuth({"), namespace)
    async with client_for(namespace["app"], token="change-me-to-a-long-secret") as http:
        overview = await http.get("/admin/api/overview")
    async with client_for(namespace["app"], token=None) as http:
        refused = await http.get("/admin/api/overview")
    assert overview.status_code == 200
    assert (overview.json()["schema"], overview.json()["user"]) == (schema, "ops")
    assert refused.status_code == 401


async def test_doc_fastapi_snippet_uses_the_apps_own_login(
    async_engine: AsyncEngine, rows: Rows
) -> None:
    await rows.add_job(queue="fast")
    namespace: dict[str, Any] = {"engine": async_engine}
    exec(_snippet("FastAPI()"), namespace)
    session = {"Cookie": "session=s3cr3t-session-id"}
    async with client_for(namespace["api"], token=None) as http:
        me = await http.get("/me", headers=session)
        anonymous = await http.get("/admin/api/overview")
        overview = await http.get("/admin/api/overview", headers=session)
        pause = await http.post("/admin/api/queues/fast/pause", headers=session)
        dashboard = await http.get("/admin/", headers=session)
        document = await http.get("/admin/openapi.json", headers=session)
    assert me.json() == {"name": "alice"}
    assert anonymous.status_code == 401
    assert (overview.json()["user"], overview.json()["auth"]) == ("alice", "app")
    assert pause.status_code == 200
    queue = await rows.queue("fast")
    assert queue is not None
    assert queue["paused"] is True
    assert dashboard.status_code == 200
    assert document.json()["servers"] == [{"url": "/admin"}]


async def test_doc_starlette_snippet_uses_the_apps_middleware(
    async_engine: AsyncEngine, rows: Rows
) -> None:
    await rows.add_job(queue="fast")
    namespace: dict[str, Any] = {"engine": async_engine}
    exec(_snippet("AuthenticationMiddleware"), namespace)
    session = {"Cookie": "session=s3cr3t-session-id"}
    async with client_for(namespace["site"], token=None) as http:
        anonymous = await http.post("/ops/admin/api/queues/fast/pause")
        overview = await http.get("/ops/admin/api/overview", headers=session)
        pause = await http.post("/ops/admin/api/queues/fast/pause", headers=session)
    assert anonymous.status_code == 401
    assert (overview.json()["user"], overview.json()["read_only"]) == ("bob", False)
    assert pause.status_code == 200
