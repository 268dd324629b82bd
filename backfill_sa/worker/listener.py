"""LISTEN on one dedicated connection; wakes the fetchers of the queue named in a NOTIFY.

A lost connection is re-established with exponential backoff and jitter while the
fetchers keep polling, so no job waits longer than the poll interval meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import asyncpg

from backfill_sa.dburl import libpq_dsn

__all__ = ["Listener"]

logger = logging.getLogger(__name__)


class Listener:
    """Keeps a LISTEN connection open and calls ``on_notify(queue)`` per notification.

    Args:
        url: database URL (any accepted form).
        channel: the NOTIFY channel (see :func:`backfill_sa.notify.channel_for`).
        on_notify: called with the payload (a queue name) of every notification.
        max_backoff: longest pause between reconnection attempts, in seconds.
        also: more channels to listen to on the same connection, each with its own
            callback (called with the payload).
    """

    def __init__(
        self,
        url: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        max_backoff: float = 5.0,
        also: Mapping[str, Callable[[str], None]] = MappingProxyType({}),
    ) -> None:
        """Prepare the listener; :meth:`run` opens the connection."""
        self._dsn = libpq_dsn(url)
        self.channel = channel
        self._on_notify = on_notify
        self._max_backoff = max_backoff
        self._also = dict(also)
        self.connected = asyncio.Event()
        self.connections_made = 0

    def _callback(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, reconnecting whenever the connection drops."""
        delay = 0.05
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(self.channel, self._callback)
                for channel, callback in self._also.items():
                    await conn.add_listener(channel, functools.partial(_relay, callback))
                self.connections_made += 1
                self.connected.set()
                delay = 0.05
                # Wake everyone once: notifications sent while we were away are gone.
                self._on_notify("*")
                await self._watch(conn, lost, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN connection failed (%s); retrying in %.2fs", exc, delay)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), timeout=2)
                    except Exception:
                        conn.terminate()
            if stop.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.5, 1.5))
            delay = min(self._max_backoff, delay * 2)

    async def _watch(
        self, conn: asyncpg.Connection, lost: asyncio.Event, stop: asyncio.Event
    ) -> None:
        """Return when the connection is lost or ``stop`` is set; checks it every 5 s."""
        while not stop.is_set() and not lost.is_set():
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(lost.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set() or lost.is_set():
                return
            # A half-open TCP connection raises no event: probe it.
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=5.0)


def _relay(callback: Callable[[str], None], _conn: Any, _pid: int, _ch: str, payload: str) -> None:
    callback(payload)


def _set_event(event: asyncio.Event, _conn: object) -> None:
    event.set()
