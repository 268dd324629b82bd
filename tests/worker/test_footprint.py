"""What a worker process loads: the CLI worker runs jobs without importing SQLAlchemy.

The worker's SQL is rendered ahead of time (``backfill_sa.statements.worker_sql``);
this runs ``python -m backfill_sa worker --burst`` in a fresh interpreter against the
test's schema and checks both that the jobs ran and which packages were imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from sqlalchemy import Engine

from tests.worker.conftest import REPO, add, count, script_env

_WORKER = textwrap.dedent(
    """
    import json, sys
    from backfill_sa import TaskRegistry
    from backfill_sa.cli import main

    registry = TaskRegistry()
    ran = []

    @registry.task("footprint")
    async def footprint(payload, ctx):
        ran.append(payload["n"])

    code = main(["worker", "--tasks", "__main__:registry", "--burst",
                 "--schema", sys.argv[1], "--queue", "bulk=2", "--log-level", "WARNING"])
    heavy = sorted(
        name for name in sys.modules
        if name.split(".")[0] in ("sqlalchemy", "alembic", "psycopg", "greenlet")
    )
    print(json.dumps({"code": code, "ran": sorted(ran), "heavy": heavy}))
    """
)


def test_a_worker_process_runs_jobs_without_loading_sqlalchemy(
    sync_engine: Engine, schema: str
) -> None:
    engine = sync_engine
    for n in range(3):
        add(engine, "footprint", {"n": n})
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, schema],
        capture_output=True,
        text=True,
        env=script_env(),
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["ran"] == [0, 1, 2]
    assert report["heavy"] == []
    assert count(engine, "jobs") == 0
