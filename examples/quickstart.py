import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import async_url
from backfill_sa.embedded import resolve_database_url
from backfill_sa.enqueue import enqueue_async
from backfill_sa.migrations import upgrade
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner

registry = TaskRegistry()  # yours: the library keeps no global registry


@registry.task("send_welcome", queue="fast")
async def send_welcome(payload: dict[str, str], ctx: JobContext) -> None:
    print(f"job {ctx.job_id} (attempt {ctx.attempt}): welcome mail to {payload['to']}")


async def main() -> None:
    url = resolve_database_url()  # DATABASE_URL; when unset, the embedded PostgreSQL
    engine = create_async_engine(async_url(url))
    await upgrade(engine)  # create or upgrade backfill_sa's tables (a no-op when current)
    async with AsyncSession(engine) as session, session.begin():
        # session.add(User(...))  <- your rows, same transaction: both commit or neither
        await enqueue_async(session, "send_welcome", {"to": "ada@example.com"}, registry=registry)
    await engine.dispose()
    worker = WorkerRunner(WorkerConfig.from_env(database_url=url), registry)
    result = await worker.run(burst=True)  # run what is due, then return
    print(f"{result.succeeded} job(s) succeeded")


asyncio.run(main())
