"""backfill_sa's benchmark tasks: ``noop`` (does nothing) and ``latency`` (records pickup).

Loaded by the worker under test (``--tasks benchmarks.tasks:registry``); imports only
what a real application's task module would.
"""

from __future__ import annotations

from typing import Any

from backfill_sa.tasks import JobContext, TaskRegistry
from benchmarks import otel, probe

__all__ = ["registry"]

registry = TaskRegistry()


async def noop(payload: Any, ctx: JobContext) -> None:
    """Do nothing: the drain workloads measure the queue, not the handler."""


async def latency(payload: Any, ctx: JobContext) -> None:
    """Record when the handler started, for the pickup-latency workloads.

    Raises:
        OSError: the latency file cannot be written.
    """
    probe.record(payload)


registry.register("noop", noop)
registry.register("latency", latency)
otel.install_from_env()  # --otel sdk: the worker pays for the SDK as the producer does
