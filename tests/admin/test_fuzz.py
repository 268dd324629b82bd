"""Schemathesis against the live admin server and a real database: no 5xx, answers as documented.

The server runs in a subprocess (uvicorn on a free loopback port) over a schema seeded
with jobs, dead letters, a worker and a queue; schemathesis loads ``/openapi.json``
with the admin token and runs every operation and method through its examples,
coverage, fuzzing and stateful phases with every check (authentication enforced,
schema-valid input accepted, invalid input refused with 4xx, undeclared methods 405,
answers matching their schema). The number of examples is bounded and the seed fixed,
so the run is repeatable and takes about a minute.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sys
from pathlib import Path

import pytest

from backfill_sa.admin.endpoints import ENDPOINTS
from tests.admin.conftest import TOKEN, Rows, admin_env, served_admin

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
pytestmark = pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")


async def _seed(rows: Rows) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    for n in range(8):
        await rows.add_job(queue=f"q{n % 3}", job_key=f"k{n}" if n % 2 else None)
        await rows.add_dead_letter(task=f"t{n % 2}", job_key=f"k{n}" if n % 4 == 1 else None)
    await rows.add_job(queue="q0", state="running", locked_by="w1", locked_at=now)
    await rows.add_job(last_error={"type": "E", "message": "m"}, attempts=1)
    await rows.add_worker("w1", silent_for=dt.timedelta(seconds=1))
    await rows.add_queue("q1", paused=True, concurrency=2)


async def test_schemathesis_finds_nothing(database_url: str, schema: str, rows: Rows) -> None:
    assert SCHEMATHESIS is not None
    await _seed(rows)
    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / "schemathesis-junit.xml"
    env = admin_env(BACKFILL_ADMIN_TOKEN=TOKEN)
    async with served_admin(database_url, schema, env=env, log_level="WARNING") as (url, _):
        process = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "all",
            "--max-examples",
            "12",
            "--seed",
            "20261203",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=540)
    text = out.decode(errors="replace")
    (ARTIFACTS / "schemathesis.txt").write_text(text)
    summary = text[text.find("SUMMARY") :]
    assert process.returncode == 0, summary or text[-3000:]
    n = len(ENDPOINTS)
    assert f"Selected: {n}/{n}" in summary
    assert f"Tested: {n}" in summary
    assert " passed" in summary
