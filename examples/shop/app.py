"""Place orders with their jobs in one transaction each, then run a worker in burst mode.

Run it from the repository root (``DATABASE_URL`` set, or the embedded server)::

    python -m examples.shop.app                # enqueue, then run the worker
    python -m examples.shop.app --enqueue-only # leave the jobs for `backfill_sa worker`
"""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateSchema

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import sync_url
from backfill_sa.embedded import resolve_database_url
from backfill_sa.migrations import upgrade
from backfill_sa.tasks import TaskRegistry
from backfill_sa.worker import WorkerRunner
from examples.shop.models import SCHEMA, Base, Order
from examples.shop.tasks import make_registry


class PaymentDeclined(Exception):
    """The card was declined: the order and its jobs must not exist."""


def place_order(engine: Engine, registry: TaskRegistry, email: str, total_cents: int) -> int:
    """Insert an order and enqueue its jobs in the same transaction; return the order id."""
    with Session(engine) as session, session.begin():
        order = Order(email=email, total_cents=total_cents)
        session.add(order)
        session.flush()  # assigns order.id
        registry["confirm_order"].enqueue(session, {"order_id": order.id})
        registry["send_receipt"].enqueue(session, {"order_id": order.id, "email": email})
        if total_cents > 100_000:
            raise PaymentDeclined(email)  # rolls back the order AND its jobs
        return order.id


def main(argv: list[str]) -> int:
    """Set up, place two orders (one declined), and run the worker unless told not to."""
    url = resolve_database_url(os.environ)
    engine = create_engine(sync_url(url))
    upgrade(engine)  # backfill_sa's tables, at start-up; a no-op when up to date
    with engine.begin() as connection:
        connection.execute(CreateSchema(SCHEMA, if_not_exists=True))
        Base.metadata.create_all(connection)
    registry = make_registry(url)

    order_id = place_order(engine, registry, "ada@example.com", 4_200)
    print(f"order {order_id} placed; its jobs commit with it")
    try:
        place_order(engine, registry, "bob@example.com", 999_999)
    except PaymentDeclined:
        print("order for bob@example.com declined: rolled back with its jobs")

    if "--enqueue-only" not in argv:
        result = asyncio.run(
            WorkerRunner(WorkerConfig.from_env(database_url=url), registry).run(burst=True)
        )
        print(f"worker: {result.succeeded} succeeded, {result.dead_lettered} dead-lettered")
        with Session(engine) as session:
            for order in session.scalars(select(Order).order_by(Order.id)):
                print(f"order {order.id} ({order.email}): {order.status}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
