"""What the harness measures: CPU seconds and peak RSS of processes, PostgreSQL's CPU.

PostgreSQL CPU is the CPU time of the backends connected to the library's own database
(the server may be busy with other work at the same time), except the harness's polling
backend, so watching the queue does not count as the queue's cost. Measurable only when
the server runs on this machine and its processes are visible; otherwise ``None``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "PostgresCpu",
    "busy_cpu_seconds",
    "own_cpu_seconds",
    "ProcessMeter",
    "Stopwatch",
    "percentile",
    "summarize_ms",
]


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the ``pct`` percentile (0-100) of ``values``, interpolating linearly.

    Raises:
        ValueError: ``values`` is empty or ``pct`` is outside 0-100.
    """
    if not values:
        raise ValueError("values: need at least one value for a percentile")
    if not 0 <= pct <= 100:
        raise ValueError("pct: must be between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """Summarise durations in seconds as count, mean, p50, p95, p99 and max in ms.

    Raises:
        ValueError: ``seconds`` is empty.
    """
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "mean_ms": sum(ms) / len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


@dataclass
class Stopwatch:
    """A ``perf_counter`` interval: ``start()`` then ``stop()``; ``seconds`` in between."""

    started: float = 0.0
    stopped: float = 0.0

    def start(self) -> None:
        """Start (or restart) the interval."""
        self.started = time.perf_counter()

    def stop(self) -> float:
        """End the interval and return its length in seconds."""
        self.stopped = time.perf_counter()
        return self.seconds

    @property
    def seconds(self) -> float:
        """Length of the interval in seconds."""
        return self.stopped - self.started


def _cpu_seconds(times: psutil._common.pcputimes) -> float:
    return float(times.user + times.system)


class ProcessMeter:
    """CPU seconds and peak RSS of one process (a worker under test)."""

    def __init__(self, pid: int) -> None:
        """Watch process ``pid``.

        Raises:
            psutil.NoSuchProcess: no such process.
        """
        self.pid = pid
        self._process = psutil.Process(pid)
        self._peak_rss = 0
        self._last_cpu = 0.0

    def cpu_seconds(self) -> float:
        """Return user + system CPU seconds used so far (the last value once it exited)."""
        with contextlib.suppress(psutil.Error):
            self._last_cpu = _cpu_seconds(self._process.cpu_times())
        return self._last_cpu

    def sample_rss(self) -> int:
        """Sample the resident set size now; return the peak seen so far in bytes."""
        with contextlib.suppress(psutil.Error):
            self._peak_rss = max(self._peak_rss, int(self._process.memory_info().rss))
        return self._peak_rss

    def peak_rss(self) -> int:
        """Return the peak RSS in bytes: the kernel's high-water mark where readable.

        Linux keeps ``VmHWM`` in ``/proc/<pid>/status``; elsewhere the sampled peak.
        """
        self.sample_rss()
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return max(self._peak_rss, int(line.split()[1]) * 1024)
        except OSError:
            pass
        return self._peak_rss


def busy_cpu_seconds() -> float:
    """Return the CPU seconds all processes of this machine have used (not idle, not iowait)."""
    times = psutil.cpu_times()
    total = float(sum(times))
    return total - float(times.idle) - float(getattr(times, "iowait", 0.0))


def own_cpu_seconds() -> float:
    """Return this (harness) process's user + system CPU seconds."""
    return _cpu_seconds(psutil.Process().cpu_times())


class PostgresCpu:
    """CPU seconds used by the backends of one database on a local PostgreSQL server.

    Backends are recognised by their process title (``postgres: [cluster: ]user database
    host state``). A backend's time is what was last read for it: one that exits between
    two readings loses what it used after the first (workers keep their connections, so
    a drain loses nothing). The
    server's background processes (WAL writer, checkpointer, autovacuum) are shared with
    whatever else the server runs, so they are left out.
    """

    def __init__(
        self, postmaster: psutil.Process, database: str, exclude: Iterable[int] = ()
    ) -> None:
        """Measure ``database``'s backends under ``postmaster``, leaving out ``exclude``."""
        self._postmaster = postmaster
        self._database = database
        self._exclude = frozenset(exclude)
        self._seen: dict[int, float] = {}

    @classmethod
    def attach(
        cls, backend_pid: int, database: str, exclude: Iterable[int] = ()
    ) -> PostgresCpu | None:
        """Find the server from one of its backends' pid (``pg_backend_pid()``).

        Returns None when the process is not visible here (a remote server, another
        container) or does not look like PostgreSQL.
        """
        try:
            backend = psutil.Process(backend_pid)
            parent = backend.parent()
            title = " ".join(backend.cmdline())
            if parent is None or database not in title.split():
                return None
            _cpu_seconds(parent.cpu_times())
        except psutil.Error:
            return None
        return cls(parent, database, exclude)

    def _ours(self, child: psutil.Process) -> bool:
        try:
            return self._database in " ".join(child.cmdline()).split()
        except psutil.Error:
            return False

    def seconds(self) -> float:
        """Return the CPU seconds the database's backends have used so far.

        A backend that exited keeps the time last read for it, so a reading never
        goes down.
        """
        for child in self._postmaster.children(recursive=False):
            if child.pid in self._exclude or not self._ours(child):
                continue
            try:
                self._seen[child.pid] = _cpu_seconds(child.cpu_times())
            except psutil.Error:
                continue
        return sum(self._seen.values())
