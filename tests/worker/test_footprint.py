"""What a worker process loads: no SQLAlchemy, and the event loop it was asked for.

The worker's SQL is rendered ahead of time (``backfill_sa.statements.worker_sql``);
these run the CLI's ``worker --burst`` in a fresh interpreter against the test's schema
and check that the jobs ran, which packages were imported and which loop ran them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.worker.conftest import REPO, add, count, script_env, unfinished

_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    if sys.argv[3] == "hide-uvloop":
        sys.modules["uvloop"] = None  # as if the extra were not installed
    from backfill_sa import TaskRegistry
    from backfill_sa.cli import main

    registry = TaskRegistry()
    ran, loops = [], set()

    @registry.task("footprint")
    async def footprint(payload, ctx):
        ran.append(payload["n"])
        loops.add(type(asyncio.get_running_loop()).__module__.split(".")[0])

    code = main(["worker", "--tasks", "__main__:registry", "--burst", "--loop", sys.argv[2],
                 "--schema", sys.argv[1], "--queue", "bulk=2", "--log-level", "WARNING"])
    heavy = sorted(
        name for name in sys.modules
        if name.split(".")[0] in ("sqlalchemy", "alembic", "psycopg", "greenlet")
    )
    print(json.dumps({"code": code, "ran": sorted(ran), "heavy": heavy, "loops": sorted(loops)}))
    """
)


def _run_worker(schema: str, loop: str, hide_uvloop: bool = False) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, schema, loop, "hide-uvloop" if hide_uvloop else "-"],
        capture_output=True,
        text=True,
        env=script_env(),
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["stderr"] = done.stderr
    return report


def test_a_worker_process_runs_jobs_without_loading_sqlalchemy(
    sync_engine: Engine, schema: str
) -> None:
    for n in range(3):
        add(sync_engine, "footprint", {"n": n})
    report = _run_worker(schema, "auto")
    assert report["code"] == 0
    assert report["ran"] == [0, 1, 2]
    assert report["heavy"] == []
    assert unfinished(sync_engine) == 0


@pytest.mark.parametrize(
    ("loop", "hide_uvloop", "expected"),
    [
        ("auto", False, "uvloop"),
        ("uvloop", False, "uvloop"),
        ("asyncio", False, "asyncio"),
        ("auto", True, "asyncio"),
    ],
)
def test_the_worker_runs_on_the_event_loop_it_is_given(
    sync_engine: Engine, schema: str, loop: str, hide_uvloop: bool, expected: str
) -> None:
    add(sync_engine, "footprint", {"n": 7})
    report = _run_worker(schema, loop, hide_uvloop)
    assert (report["code"], report["ran"], report["loops"]) == (0, [7], [expected])
    assert unfinished(sync_engine) == 0


def test_forcing_uvloop_without_it_installed_fails_in_one_line(
    sync_engine: Engine, schema: str
) -> None:
    job_id = add(sync_engine, "footprint", {"n": 1})
    report = _run_worker(schema, "uvloop", hide_uvloop=True)
    assert report["code"] == 2
    assert report["ran"] == []
    assert "--loop uvloop: uvloop is not installed" in report["stderr"]
    assert count(sync_engine, "jobs", f"id = {job_id} AND state = 'available'") == 1
