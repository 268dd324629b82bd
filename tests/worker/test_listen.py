"""LISTEN/NOTIFY: an idle worker picks new work up at once, not at the next poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from backfill_sa.config import WorkerConfig
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import add, unfinished, wait_for


async def test_idle_worker_wakes_on_notify_not_on_the_poll(
    sync_engine: Engine, registry: TaskRegistry, config: Callable[..., WorkerConfig]
) -> None:
    picked: dict[str, asyncio.Event] = {"first": asyncio.Event(), "second": asyncio.Event()}

    @registry.task("ping")
    async def ping(payload: Any, ctx: JobContext) -> None:
        picked[payload["name"]].set()

    runner = WorkerRunner(config(poll_interval=timedelta(seconds=30)), registry)
    handle = runner.start()
    try:
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            what="the LISTEN connection",
        )
        # The first job may ride on the wake-up the listener gives itself on connecting.
        add(sync_engine, "ping", {"name": "first"})
        await asyncio.wait_for(picked["first"].wait(), timeout=5)
        # The fetcher has gone back to waiting (30 s poll): only a NOTIFY wakes it now.
        began = time.monotonic()
        add(sync_engine, "ping", {"name": "second"})
        await asyncio.wait_for(picked["second"].wait(), timeout=5)
        latency = time.monotonic() - began
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=10)

    assert latency < 5
    assert result.succeeded == 2
    assert unfinished(sync_engine) == 0
