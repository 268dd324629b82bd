"""py-spy profile of our worker during a W3 drain, summarised as text.

A separate drain from the measured one (the sampler slows its target): py-spy
attaches once the drain is under way, records raw collapsed stacks until the worker
exits, and the summary lists the functions with the most samples on top of the stack
(self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "summarize_collapsed"]


class Profiler:
    """Runs ``py-spy record --format raw`` against one process."""

    def __init__(self, output: Path, rate: int = 250) -> None:
        """Write collapsed stacks to ``output``, sampling ``rate`` times a second.

        Raises:
            FileNotFoundError: py-spy is neither on PATH nor beside the interpreter.
        """
        beside = Path(sys.executable).parent / "py-spy"
        binary = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
        if binary is None:
            raise FileNotFoundError("py-spy: not on PATH (pip install py-spy)")
        self.binary = binary
        self.output = output
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    def attach(self, pids: list[int]) -> None:
        """Start sampling the first of ``pids``."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "record",
                "--format",
                "raw",
                "--rate",
                str(self.rate),
                "--output",
                str(self.output),
                "--pid",
                str(pids[0]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait(self, timeout: float = 60.0) -> str:
        """Wait for py-spy to write its output (after the worker exits); return its stderr.

        Raises:
            RuntimeError: py-spy was never attached.
        """
        if self.process is None:
            raise RuntimeError("profiler: attach() was not called")
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            _, err = self.process.communicate()
        return err.decode(errors="replace")


def _function(frame: str) -> str:
    # py-spy raw frames read "function (path/to/file.py:123)"; drop the line number.
    name, _, location = frame.partition(" (")
    path = location.rsplit(":", 1)[0]
    parts = path.split("/")
    # Two components, or three inside backfill_sa's subpackages (backfill_sa/telemetry/core.py).
    keep = 3 if len(parts) >= 3 and parts[-3] == "backfill_sa" else 2
    short = "/".join(parts[-keep:])
    return f"{name} ({short})"


def _file(function: str) -> str:
    return function.rpartition(" (")[2].rstrip(")")


def _percent(counter: Counter[str], total: int, top: int) -> list[str]:
    return [f"{100 * n / total:6.1f}%  {name}" for name, n in counter.most_common(top)]


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Summarise a collapsed-stack file in % of samples: the functions on top of the stack
    (self), anywhere in it (inclusive), our own functions and files (inclusive), and the
    share of samples inside the ``backfill_sa/telemetry/`` package.

    Raises:
        OSError: the file cannot be read.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    files: Counter[str] = Counter()
    telemetry = 0
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        mine = {f for f in frames if "backfill_sa" in _file(f) or "worker/" in _file(f)}
        for frame in mine:
            ours[frame] += count
        names = {_file(f) for f in mine}
        for name in names:
            files[name] += count
        if any(name.startswith("backfill_sa/telemetry/") for name in names):
            telemetry += count
    if total == 0:
        return "no samples\n"
    lines = [
        f"{total} samples (idle waits excluded)",
        f"telemetry (backfill_sa/telemetry/, inclusive): {100 * telemetry / total:.1f}%",
        "",
        f"top {top} by self time:",
        *_percent(own, total, top),
        "",
        f"top {top} by inclusive time:",
        *_percent(inclusive, total, top),
        "",
        f"backfill_sa functions by inclusive time (top {top}):",
        *_percent(ours, total, top),
        "",
        "backfill_sa files by inclusive time:",
        *_percent(files, total, top),
    ]
    return "\n".join(lines) + "\n"
