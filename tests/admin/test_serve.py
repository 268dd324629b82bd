"""serve(): the admin app over HTTP in a real uvicorn process, and its start-up checks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys

import httpx
import pytest

from backfill_sa.admin import serve
from backfill_sa.errors import ConfigurationError
from tests.admin.conftest import Rows

_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from backfill_sa.admin import serve
serve(
    sys.argv[1],
    schema=sys.argv[2],
    port=int(sys.argv[3]),
    read_only=True,
    on_ready=lambda url: print("ready at", url, file=sys.stderr),
)
"""


def test_serve_refuses_an_unmigrated_schema(database_url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        serve(database_url, schema="t_admin_not_migrated", port=0)
    assert info.value.field == "schema"
    assert "python -m backfill_sa migrate --schema t_admin_not_migrated" in info.value.rule


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"port": 70000}, "port"), ({"schema": "A"}, "schema")]
)
def test_serve_refuses_bad_settings(
    database_url: str, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        serve(database_url, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_serve_reports_a_taken_port(database_url: str, schema: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = int(taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            serve(database_url, schema=schema, port=port)


async def test_serve_answers_http_until_interrupted(
    database_url: str, schema: str, rows: Rows
) -> None:
    await rows.add_job(queue="served")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SCRIPT,
        database_url,
        schema,
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    try:
        log = b""
        while (found := re.search(rb"ready at http://127\.0\.0\.1:(\d+)/", log)) is None:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
            assert line, f"server exited early: {log.decode()}"
            log += line
        port = int(found[1])
        # The log line says the same, for operators.
        assert f"admin: serving http://127.0.0.1:{port}/".encode() in log
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            overview = await http.get("/api/overview")
            refused = await http.post("/api/queues/served/pause")
            page = await http.get("/")
        assert overview.status_code == 200
        assert overview.json()["schema"] == schema
        assert [q["name"] for q in overview.json()["queues"]] == ["served"]
        assert refused.status_code == 403  # served read-only
        assert page.status_code == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=30)
    assert await rows.queue("served") is None
