"""Injection strings in every name that reaches SQL: schema, queue, task, job_key.

Queue, task and job_key are data: they are bound as parameters everywhere (enqueue,
claim, NOTIFY payload, outcome writes, dead-lettering, DLQ filters and requeue) and
come back byte for byte. The schema is an identifier and cannot be bound: every
entry point refuses a name outside ``[a-z_][a-z0-9_]{0,62}`` before any SQL runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.dburl import sync_url
from backfill_sa.dlq import list_dead_letters, requeue_dead_letters
from backfill_sa.enqueue import enqueue
from backfill_sa.errors import ConfigurationError, PermanentError
from backfill_sa.migrations import upgrade
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import count, rows

NASTY = [
    "x'; DROP TABLE jobs; --",
    'q"; DROP SCHEMA public CASCADE; --',
    "Robert'); DELETE FROM jobs; --",
    "$1",
    "%s",
    "%(name)s",
    ":name",
    "\\'",
    "' OR '1'='1",
    "a\nb\tc",
    "\u202eevil",
    "名前",
]


@pytest.mark.parametrize("name", NASTY)
async def test_nasty_queue_task_and_job_key_round_trip_through_the_whole_life(
    name: str, sync_engine: Engine, config: Callable[..., WorkerConfig]
) -> None:
    with Session(sync_engine) as session, session.begin():
        ok_id = enqueue(session, name, {"then": "ok"}, queue=name, job_key=name).id
        dead_id = enqueue(session, name, {"then": "dead"}, queue=name, job_key=name + "-2").id
    stored = rows(sync_engine, "SELECT task, queue, job_key FROM {s}.jobs ORDER BY id")
    assert stored == [
        {"task": name, "queue": name, "job_key": name},
        {"task": name, "queue": name, "job_key": name + "-2"},
    ]

    seen: list[tuple[str, str]] = []
    registry = TaskRegistry()

    @registry.task(name)
    async def handler(payload: Any, ctx: JobContext) -> None:
        seen.append((ctx.task, ctx.queue))
        if payload["then"] == "dead":
            raise PermanentError("bury it")

    result = await WorkerRunner(config(queues={name: 2}), registry).run_once()
    assert (result.succeeded, result.dead_lettered) == (1, 1)
    assert seen == [(name, name), (name, name)]
    assert count(sync_engine, "jobs") == 0

    with Session(sync_engine) as session, session.begin():
        [entry] = list_dead_letters(session, task=name, queue=name)
        assert (entry.original_job_id, entry.task, entry.queue, entry.job_key) == (
            dead_id,
            name,
            name,
            name + "-2",
        )
        requeued = requeue_dead_letters(session, task=name, queue=name)
    assert len(requeued.requeued_ids) == 1
    assert rows(sync_engine, "SELECT task, queue, job_key FROM {s}.jobs") == [
        {"task": name, "queue": name, "job_key": name + "-2"}
    ]
    assert ok_id != dead_id
    # Every table is still there.
    tables = set(inspect(sync_engine).get_table_names(schema=_schema(sync_engine)))
    assert {"jobs", "dead_letter_jobs", "workers", "queues", "leader"} <= tables


def _schema(engine: Engine) -> str:
    return str(engine.get_execution_options()["schema_translate_map"]["backfill"])


@pytest.mark.parametrize("name", [*NASTY, "Upper", "has space", "x" * 64, ""])
def test_a_nasty_schema_name_is_refused_before_any_sql(
    name: str, database_url: str, admin_engine: Engine
) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        WorkerConfig(database_url=database_url, schema=name)
    with pytest.raises(ConfigurationError, match="schema"):
        upgrade(admin_engine, schema=name)
    plain = create_engine(sync_url(database_url))
    try:
        assert name not in inspect(plain).get_schema_names()
    finally:
        plain.dispose()
