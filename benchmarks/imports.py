"""What the worker's imports cost: resident memory and time, module by module.

A fresh interpreter imports what ``python -m backfill_sa worker --tasks
benchmarks.tasks:registry`` loads before it runs (the CLI, the worker package, the
task module), then, one at a time, the heavy packages the worker does not load; each
step reports the growth of resident memory (``VmRSS``) and the time taken. The step
costs are cumulative: a package's cost excludes what earlier steps already loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence

__all__ = ["WORKER_IMPORTS", "measure_imports", "render_imports", "summary_line"]

WORKER_IMPORTS = (
    "asyncpg",
    "opentelemetry.trace",
    "opentelemetry.metrics",
    "tenacity",
    "backfill_sa",
    "backfill_sa.cli",
    "backfill_sa.worker",
    "benchmarks.tasks",
)
"""The worker's own imports, roughly in dependency order."""

NOT_LOADED = (
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "alembic",
    "psycopg",
)
"""Packages measured after the worker's set, to show what they would add."""

_CHILD = r"""
import importlib, json, sys, time

def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

steps = [{"module": "(interpreter)", "rss_mb": rss(), "added_mb": 0.0, "ms": 0.0}]
for name in sys.argv[1:]:
    if name == "--":
        loaded = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})
        steps.append({"module": "--", "loaded": loaded})
        continue
    before, start = rss(), time.perf_counter()
    try:
        importlib.import_module(name)
    except ImportError as exc:
        steps.append({"module": name, "error": str(exc)})
        continue
    after = rss()
    steps.append({"module": name, "rss_mb": after, "added_mb": after - before,
                  "ms": (time.perf_counter() - start) * 1000})
print(json.dumps(steps))
"""


def measure_imports() -> list[dict[str, object]]:
    """Import the worker's modules step by step in a fresh interpreter; return the steps.

    The step named ``--`` lists the top-level packages loaded by the worker's set.

    Raises:
        RuntimeError: the child interpreter failed.
    """
    argv = [sys.executable, "-c", _CHILD, *WORKER_IMPORTS, "--", *NOT_LOADED]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"import measurement failed: {done.stderr.strip()}")
    steps: list[dict[str, object]] = json.loads(done.stdout)
    return steps


def render_imports(steps: list[dict[str, object]]) -> str:
    """Render the steps as a small text table."""
    lines = [f"{'module':42} {'+MB':>6} {'ms':>7} {'RSS MB':>7}"]
    for step in steps:
        if step["module"] == "--":
            loaded = step["loaded"]
            names = " ".join(str(n) for n in loaded) if isinstance(loaded, list) else ""
            lines.append("-- worker set loaded; packages: " + names)
            lines.append("-- not loaded by the worker, for comparison:")
            continue
        if "error" in step:
            lines.append(f"{step['module']!s:42} not importable: {step['error']}")
            continue
        lines.append(
            f"{step['module']!s:42} {step['added_mb']:6.1f} {step['ms']:7.1f} {step['rss_mb']:7.1f}"
        )
    return "\n".join(lines) + "\n"


def summary_line(steps: Sequence[Mapping[str, object]]) -> str | None:
    """One line: the worker set's RSS and the steps that added 1 MB or more."""
    worker: list[Mapping[str, object]] = []
    for step in steps:
        if step.get("module") == "--":
            break
        worker.append(step)
    sized = [s for s in worker if isinstance(s.get("rss_mb"), (int, float))]
    if not sized:
        return None
    costs = [
        f"{s['module']} +{float(str(s['added_mb'])):.1f}"
        for s in sized
        if float(str(s.get("added_mb", 0.0))) >= 1.0
    ]
    total = float(str(sized[-1]["rss_mb"]))
    return f"worker imports: {total:.1f} MB RSS ({', '.join(costs)} MB)"
