"""Running a coroutine to completion from sync code, wherever that code runs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["run_blocking"]

T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion and return its result.

    In a fresh event loop; in a thread of its own when this thread already runs one
    (sync code called from async code, e.g. a sync enqueue in an async handler).

    Raises:
        Exception: whatever the coroutine raises.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-drain") as pool:
        return pool.submit(asyncio.run, coroutine).result()
