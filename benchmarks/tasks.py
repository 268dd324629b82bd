"""backfill_sa's benchmark tasks: ``noop`` (does nothing) and ``latency`` (records pickup).

Loaded by the worker under test (``--tasks benchmarks.tasks:registry``); imports only
what a real application's task module would. ``transactional_registry`` holds
``noop_tx``, the transactional no-op of W3tx: a registry of its own, so that the
other workloads' workers stay free of SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from backfill_sa.tasks import JobContext, TaskRegistry
from benchmarks import otel, probe

__all__ = ["registry", "transactional_registry"]

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

transactional_registry = TaskRegistry()


async def noop_tx(payload: Any, ctx: JobContext) -> None:
    """Do nothing, in a transaction that also completes the job (W3tx)."""


transactional_registry.register("noop_tx", noop_tx, transactional=True)
