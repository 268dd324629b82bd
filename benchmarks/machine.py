"""The record of where numbers came from: machine, server, interpreter, drivers, commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil

from benchmarks.database import Server

__all__ = ["describe_machine", "package_version"]

_PACKAGES = (
    "backfill-sa",
    "sqlalchemy",
    "asyncpg",
    "psycopg",
    "psycopg-binary",
    "pgqueuer",
    "procrastinate",
    "uvloop",
    "psutil",
    "opentelemetry-api",
    "opentelemetry-sdk",
)


def package_version(name: str) -> str | None:
    """Return the installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def describe_machine(server: Server) -> dict[str, object]:
    """Describe this machine, the server and the software versions.

    Raises:
        psycopg.Error: the server cannot be queried.
    """
    memory = psutil.virtual_memory()
    return {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(memory.total / 1e9, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "postgresql": server.facts(),
        "packages": {name: package_version(name) for name in _PACKAGES},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
