import asyncio
import os

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import enqueue
from backfill_sa.migrations import upgrade
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner

registry = TaskRegistry()  # yours: the library keeps no global registry


@registry.task("send_welcome", queue="fast")
async def send_welcome(payload: dict[str, str], ctx: JobContext) -> None:
    print(f"job {ctx.job_id} (attempt {ctx.attempt}): welcome mail to {payload['to']}")


engine = create_engine(sync_url(os.environ["DATABASE_URL"]))  # any postgresql:// URL
upgrade(engine)  # create or upgrade backfill_sa's tables (a no-op when current)
with Session(engine) as session, session.begin():
    # session.add(User(...))  <- your rows, same transaction: both commit or neither
    enqueue(session, "send_welcome", {"to": "ada@example.com"}, queue="fast")

result = asyncio.run(WorkerRunner(WorkerConfig.from_env(), registry).run(burst=True))
print(f"{result.succeeded} job(s) succeeded")
