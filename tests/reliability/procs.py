"""Worker processes of the reliability tests (``scripts/rel_worker.py``) and their run logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tests.worker.conftest import REPO, script_env

__all__ = ["Run", "WorkerProc", "ended_once", "named", "read_runs", "started_together"]

SCRIPT = Path(__file__).resolve().parent / "scripts" / "rel_worker.py"


def named(url: str, application_name: str) -> str:
    """``url`` with an ``application_name``, to find its sessions on the server."""
    return (
        make_url(url)
        .update_query_dict({"application_name": application_name})
        .render_as_string(hide_password=False)
    )


@dataclass(frozen=True)
class Run:
    """One handler run from a run log: job id, attempt, worker, ``start`` or ``end``."""

    job_id: int
    attempt: int
    worker: str
    event: str


@dataclass
class WorkerProc:
    """One ``rel_worker.py`` process.

    Attributes:
        worker_id: its worker id (also its ``application_name``).
        runs: the file its handler appends to.
        proc: the process (stdin/stdout are pipes).
    """

    worker_id: str
    runs: Path
    proc: subprocess.Popen[str]
    result: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(
        cls, *, url: str, schema: str, worker_id: str, runs_dir: Path, extra: Iterable[str] = ()
    ) -> WorkerProc:
        """Start a worker on ``schema`` named ``worker_id``; ``extra`` are more script options.

        Raises:
            OSError: the process could not be started.
        """
        runs = runs_dir / f"{worker_id}.runs"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                *("--url", named(url, worker_id), "--schema", schema),
                *("--worker-id", worker_id, "--runs", str(runs), *extra),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=script_env(),
            cwd=REPO,
        )
        return cls(worker_id, runs, proc)

    def read_line(self) -> dict[str, Any]:
        """The next JSON line of its stdout.

        Raises:
            AssertionError: it closed stdout (its stderr is quoted).
        """
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"{self.worker_id} exited with {self.proc.returncode}: {err}")
        loaded: dict[str, Any] = json.loads(line)
        return loaded

    def go(self) -> None:
        """Let a ``--wait-go`` worker start running."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """Read its final counts and wait for a clean exit; return the counts.

        Raises:
            AssertionError: it died or exited with a non-zero status.
        """
        self.result = self.read_line()
        assert self.proc.wait(timeout=timeout) == 0, self.proc.stderr
        return self.result

    def kill(self) -> None:
        """SIGKILL it if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def started_together(workers: list[WorkerProc]) -> Iterator[float]:
    """Wait until every ``--wait-go`` worker is ready, start them all, yield the start time.

    Every worker still running when the block ends is killed.
    """
    try:
        for worker in workers:
            assert worker.read_line() == {"ready": True}
        started = time.monotonic()
        for worker in workers:
            worker.go()
        yield started
    finally:
        for worker in workers:
            worker.kill()


def read_runs(paths: Iterable[Path]) -> list[Run]:
    """Every line of the given run logs (missing files count as empty)."""
    found: list[Run] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            job_id, attempt, worker, event = line.split()
            found.append(Run(int(job_id), int(attempt), worker, event))
    return found


def ended_once(runs: Iterable[Run]) -> Counter[int]:
    """How many handler runs of each job ended."""
    return Counter(r.job_id for r in runs if r.event == "end")
