"""A FastAPI notes service: notes and their jobs in one transaction, an optional
in-process worker, and the admin app under /admin behind the service's token.

Run it (``DATABASE_URL`` set, the ``fastapi`` and ``admin`` extras installed)::

    python -m examples.fastapi_app.app          # http://127.0.0.1:8000 ($PORT), worker included
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations
# at run time, and ``DbSession`` is local to create_app.
import os
import secrets
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

from backfill_sa.admin.auth import Principal
from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import enqueue_async
from backfill_sa.integrations.fastapi import mount_admin, session_dependency, worker_lifespan
from backfill_sa.tasks import TaskRegistry
from examples.fastapi_app.models import Note


class NoteIn(BaseModel):
    """A new note."""

    body: str


class NoteOut(BaseModel):
    """A note as the API shows it."""

    id: int
    body: str
    summary: str | None


def create_app(
    maker: async_sessionmaker[AsyncSession],
    *,
    admin_token: str,
    admin_engine: AsyncEngine | None = None,
    worker: tuple[WorkerConfig, TaskRegistry] | None = None,
) -> FastAPI:
    """Build the service.

    Args:
        maker: where request sessions come from.
        admin_token: the bearer token of the service's operators.
        admin_engine: mount the admin app under /admin, on this engine.
        worker: run a worker in this process (config and registry).
    """
    lifespan = worker_lifespan(*worker) if worker is not None else None
    app = FastAPI(lifespan=lifespan)
    DbSession = Annotated[AsyncSession, session_dependency(maker)]

    def is_operator(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {admin_token}".encode())

    @app.post("/notes", status_code=201)
    async def create_note(note: NoteIn, session: DbSession) -> NoteOut:
        row = Note(body=note.body)
        session.add(row)
        await session.flush()
        await enqueue_async(session, "summarize_note", {"note_id": row.id}, queue="fast")
        if "forbidden" in note.body:  # a late failure: the note and its job roll back
            raise HTTPException(status_code=422, detail="forbidden word")
        return NoteOut(id=row.id, body=row.body, summary=row.summary)

    @app.get("/notes/{note_id}")
    async def read_note(note_id: int, session: DbSession) -> NoteOut:
        row = await session.get(Note, note_id)
        if row is None:
            raise HTTPException(status_code=404)
        return NoteOut(id=row.id, body=row.body, summary=row.summary)

    def operator(request: Request) -> Principal | None:
        return Principal("operator") if is_operator(request) else None

    async def operator_only(request: Request) -> None:
        if not is_operator(request):
            raise HTTPException(status_code=401, detail="operators only")

    @app.post("/notes/{note_id}/resummarize", status_code=202)
    async def resummarize(
        note_id: int, session: DbSession, _: Annotated[None, Depends(operator_only)]
    ) -> dict[str, int]:
        job = await enqueue_async(session, "summarize_note", {"note_id": note_id}, queue="fast")
        return {"job_id": job.id}

    if admin_engine is not None:
        mount_admin(app, admin_engine, auth=operator)
    return app


def main() -> None:  # pragma: no cover - runs a server until interrupted
    """Serve the example on 127.0.0.1:8000 with its worker, tables created first."""
    import asyncio

    import uvicorn
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    from backfill_sa.dburl import async_url, sync_url
    from backfill_sa.migrations import upgrade
    from examples.fastapi_app.models import Base
    from examples.fastapi_app.tasks import build_registry

    url = os.environ["DATABASE_URL"]
    setup = create_engine(sync_url(url))
    upgrade(setup)
    with setup.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS notes_app")
        Base.metadata.create_all(conn)
    setup.dispose()
    engine = create_async_engine(async_url(url))
    maker = async_sessionmaker(engine, expire_on_commit=False)
    registry = build_registry(maker)
    app = create_app(
        maker,
        admin_token=os.environ.get("ADMIN_TOKEN", "change-me"),
        admin_engine=engine,
        worker=(WorkerConfig(database_url=url, queues={"fast": 5}), registry),
    )
    asyncio.run(
        uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
        ).serve()
    )


if __name__ == "__main__":
    main()
