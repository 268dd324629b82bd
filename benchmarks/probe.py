"""Pickup-latency probe shared by every library's handler: one appended line per job.

A handler calls :func:`record` first thing with the payload's ``t0`` (taken just before
the enqueue call) and ``label``; the line ``label t0 t_start`` goes to the file named by
``BENCH_LATENCY_FILE``. One ``O_APPEND`` write per job is atomic for lines this short,
so several worker processes may share the file, and it costs a few microseconds: the
same for every library. Imports only the standard library, to keep workers small.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

__all__ = ["LATENCY_FILE_ENV", "record", "record_raw"]

LATENCY_FILE_ENV = "BENCH_LATENCY_FILE"


def record(payload: Mapping[str, object]) -> None:
    """Append ``label t0 now`` for a latency job, if a latency file is configured.

    Args:
        payload: the job's payload; needs ``t0`` (epoch seconds) and ``label``.

    Raises:
        OSError: the latency file cannot be written.
    """
    started = time.time()
    t0 = payload.get("t0")
    if not isinstance(t0, float):
        return
    record_raw(str(payload.get("label", "-")), t0, started)


def record_raw(label: str, t0: float, started: float) -> None:
    """Append one ``label t0 started`` line to the latency file (no-op when unset).

    Raises:
        OSError: the latency file cannot be written.
    """
    path = os.environ.get(LATENCY_FILE_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{label} {t0:.6f} {started:.6f}\n".encode())
    finally:
        os.close(fd)
