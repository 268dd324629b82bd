"""Worker processes under test: start with their output in a log file, stop them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType

from benchmarks.adapters import WorkerSpec

__all__ = ["WorkerError", "WorkerGroup"]


class WorkerError(RuntimeError):
    """A worker process exited early or made no progress; the message quotes its log."""


class WorkerGroup:
    """Some identical worker processes, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, spec: WorkerSpec, count: int, log_dir: Path, tag: str) -> None:
        """Describe ``count`` workers of ``spec``; logs go to ``log_dir/tag-<i>.log``."""
        self.spec = spec
        self.count = count
        self.logs = [log_dir / f"{tag}-{i}.log" for i in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> WorkerGroup:
        """Start the processes.

        Raises:
            OSError: a process cannot be started.
        """
        env = {**os.environ, **self.spec.env}
        for log in self.logs:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as out:
                self.processes.append(
                    subprocess.Popen(self.spec.argv, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every process: SIGTERM, up to 10 s grace, then SIGKILL."""
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self.processes]

    def check_alive(self) -> None:
        """Raise if any worker has exited.

        Raises:
            WorkerError: a worker exited; the message quotes the end of its log.
        """
        for process, log in zip(self.processes, self.logs, strict=True):
            code = process.poll()
            if code is not None:
                raise WorkerError(
                    f"worker exited with code {code}: {' '.join(self.spec.argv)}\n{tail(log)}"
                )

    def stop(self, grace: float = 10.0) -> None:
        """Stop the workers; SIGKILL any that outlive ``grace`` seconds after SIGTERM."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self) -> str:
        """The end of the first worker's log."""
        return tail(self.logs[0]) if self.logs else ""


def tail(path: Path, lines: int = 15) -> str:
    """Return the last ``lines`` lines of ``path`` ('' when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
