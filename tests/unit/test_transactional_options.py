"""Transactional task options: validation, and the worker's sync sessions needing psycopg."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from backfill_sa.errors import ConfigurationError
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker.transactional import TransactionalSessions

URL = "postgresql://nobody@127.0.0.1:1/none"


def test_transactional_must_be_a_bool() -> None:
    registry = TaskRegistry()
    with pytest.raises(ConfigurationError, match="transactional"):
        registry.register("t", lambda p, c: None, transactional="yes")


def test_session_factories_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="sync_session_factory"):
        TaskRegistry(sync_session_factory="not callable")  # type: ignore[arg-type]


def test_the_registry_says_whether_it_has_a_transactional_task() -> None:
    registry = TaskRegistry()

    @registry.task("plain")
    async def plain(payload: Any, ctx: JobContext) -> None: ...

    assert not registry.has_transactional

    @registry.task("tx", transactional=True)
    async def tx(payload: Any, ctx: JobContext) -> None: ...

    assert registry.has_transactional


def test_a_sync_transactional_task_without_psycopg_names_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = TaskRegistry()

    @registry.task("tx", transactional=True)
    def tx(payload: Any, ctx: JobContext) -> None: ...

    real = importlib.util.find_spec

    def without_psycopg(name: str, *args: Any) -> Any:
        return None if name == "psycopg" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_psycopg)
    with pytest.raises(ConfigurationError, match="psycopg"):
        TransactionalSessions(
            registry, database_url=URL, schema="backfill", pooled=False, pool_size=2
        )


async def test_async_only_tasks_make_no_sync_engine_and_need_no_psycopg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = TaskRegistry()

    @registry.task("tx", transactional=True)
    async def tx(payload: Any, ctx: JobContext) -> None: ...

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "psycopg" else real(name, *a),
    )
    sessions = TransactionalSessions(
        registry, database_url=URL, schema="backfill", pooled=True, pool_size=2
    )
    await sessions.dispose()
