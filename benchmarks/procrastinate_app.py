"""procrastinate's benchmark app: ``procrastinate --app benchmarks.procrastinate_app.app``.

Reads ``BENCH_DSN`` at import (procrastinate's CLI imports the app by path). The tasks
mirror :mod:`benchmarks.tasks`: ``noop`` and ``latency``, both in queue ``bench``.
"""

from __future__ import annotations

import os
import time

from procrastinate import App, PsycopgConnector

from benchmarks import probe

__all__ = ["app"]

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_DSN", "")))


@app.task(name="noop", queue="bench")
async def noop(**kwargs: object) -> None:
    """Do nothing."""


@app.task(name="latency", queue="bench")
async def latency(**kwargs: object) -> None:
    """Record when the handler started.

    Raises:
        OSError: the latency file cannot be written.
    """
    started = time.time()
    t0 = kwargs.get("t0")
    if isinstance(t0, float):
        probe.record_raw(str(kwargs.get("label", "-")), t0, started)
