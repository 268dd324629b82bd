import asyncio
import os

from sqlalchemy import create_engine

from backfill_sa import JobSpec
from backfill_sa.client import BackfillClient, SyncBackfillClient
from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import enqueue_async
from backfill_sa.migrations import upgrade


async def produce(url: str) -> None:
    async with BackfillClient(url) as client:  # owns its engine, disposed on exit
        result = await client.enqueue("send_email", {"to": "a@example.com"}, queue="fast")
        await client.enqueue_emergency("page_oncall", {"incident": 7})
        await client.enqueue_many([JobSpec("resize", {"id": 1}), JobSpec("resize", {"id": 2})])
        await client.enqueue_batch("reindex", [{"page": n} for n in range(1_000)])

        async with client.transaction() as session:  # jobs with your own rows
            await enqueue_async(session, "send_receipt", {"order_id": 42})
        print(f"job {result.id}: {result.outcome.value}")


def look_after(url: str) -> None:
    engine = create_engine(sync_url(url))
    with SyncBackfillClient(engine) as client:  # borrowed: the engine stays yours
        client.enqueue_fast("send_email", {"to": "b@example.com"}, job_key="welcome-b")
        for entry in client.list_dead_letters(task="send_email", limit=20):
            print(entry.id, entry.last_error)
        print(f"{client.count_dead_letters()} dead letter(s)")
    engine.dispose()


if __name__ == "__main__":
    url = os.environ["DATABASE_URL"]  # any postgresql:// URL
    upgrade(create_engine(sync_url(url)))  # create or upgrade the tables
    asyncio.run(produce(url))
    look_after(url)
