"""The shop's background tasks, on a registry the application creates.

``make_registry`` is what the worker loads:
``python -m backfill_sa worker --tasks examples.shop.tasks:make_registry``.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from backfill_sa import FAST, PermanentError, Priority
from backfill_sa.dburl import sync_url
from backfill_sa.embedded import resolve_database_url
from backfill_sa.retry import FAST as FAST_RETRY
from backfill_sa.tasks import JobContext, TaskRegistry
from examples.shop.models import Order


def make_registry(database_url: str | None = None) -> TaskRegistry:
    """Return the shop's tasks, writing through an engine on ``database_url``.

    Args:
        database_url: default ``DATABASE_URL`` (or the embedded server).
    """
    engine = create_engine(sync_url(database_url or resolve_database_url(os.environ)))
    registry = TaskRegistry()

    # A plain ``def`` handler: the worker runs it in a thread.
    @registry.task("confirm_order", queue=FAST, priority=Priority.FAST_HIGH, retry=FAST_RETRY)
    def confirm_order(payload: dict[str, Any], ctx: JobContext) -> None:
        with Session(engine) as session, session.begin():
            order = session.get(Order, payload["order_id"])
            if order is None:
                raise PermanentError(f"order {payload['order_id']} does not exist")
            order.status = "confirmed"
        print(f"order {payload['order_id']} confirmed (attempt {ctx.attempt})", flush=True)

    # An ``async def`` handler runs on the worker's event loop.
    @registry.task("send_receipt")  # default queue "bulk", priority 0
    async def send_receipt(payload: dict[str, Any], ctx: JobContext) -> None:
        print(f"receipt for order {payload['order_id']} sent to {payload['email']}", flush=True)

    return registry
