"""Rows written straight into ``jobs`` by another version of an application.

Whatever such a row holds (a task this worker does not know, a payload the task's
``parse`` hook rejects, a malformed ``retry_policy`` or ``metadata``), the worker
puts it in the dead-letter queue with a reason and an error, and goes on running
the good jobs around it: one burst run drains everything, and the worker ends
normally.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from backfill_sa.config import WorkerConfig
from backfill_sa.errors import RetryableError
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import count, dead_letters

GOOD_POLICY = {
    "max_attempts": 3,
    "initial_delay_ms": 1,
    "max_delay_ms": 1,
    "multiplier": 1.0,
    "jitter": 0.0,
}

# (task, payload, retry_policy, metadata, expected dead-letter reason)
FOREIGN: list[tuple[str, Any, Any, Any, str]] = [
    ("nobody_knows_me", {}, {}, {}, "unknown_task"),
    ("strict", "not an object", {}, {}, "invalid_payload"),
    ("strict", [1, 2], {}, {}, "invalid_payload"),
    ("fails", {}, {"max_attempts": "many"}, {}, "invalid_job"),
    ("fails", {}, {"bogus": True}, {}, "invalid_job"),
    ("fails", {}, "fast", {}, "invalid_job"),
    ("fails", {}, [1, 2, 3], {}, "invalid_job"),
    ("fails", {}, {**GOOD_POLICY, "multiplier": -1}, {}, "invalid_job"),
    ("ok", {}, {"bogus": True}, {}, "invalid_job"),
    ("ok", {}, {}, [1, 2], "invalid_job"),
    ("ok", {}, {}, "a string", "invalid_job"),
    ("ok", {}, {}, 42, "invalid_job"),
    ("fails", {}, {}, {"traceparent": 12345, "tracestate": ["x"]}, "max_attempts_exceeded"),
    ("fails", {}, {}, {"backfill": "not an object"}, "max_attempts_exceeded"),
    ("fails", {}, {}, {"backfill": {"requeued_count": "seven"}}, "max_attempts_exceeded"),
    ("fails", {}, {}, {"backfill": {"last_requeued_at": "yesterday"}}, "max_attempts_exceeded"),
    ("fails", {}, {}, {"backfill": {"last_requeued_at": "2024-13-45"}}, "max_attempts_exceeded"),
    ("fails", {}, {}, {"backfill": {"requeued_count": 1e40}}, "max_attempts_exceeded"),
]


def _insert(engine: Engine, task: str, payload: Any, policy: Any, metadata: Any) -> int:
    """Write one row as plain SQL would (committed), bypassing every check of enqueue."""
    schema = engine.get_execution_options()["schema_translate_map"]["backfill"]
    with engine.begin() as conn:
        new_id = conn.execute(
            text(
                f'INSERT INTO "{schema}".jobs'
                " (task, queue, payload, retry_policy, metadata, max_attempts)"
                " VALUES (:task, 'bulk', CAST(:payload AS jsonb), CAST(:policy AS jsonb),"
                " CAST(:metadata AS jsonb), 1) RETURNING id"
            ),
            {
                "task": task,
                "payload": json.dumps(payload),
                "policy": json.dumps(policy),
                "metadata": json.dumps(metadata),
            },
        ).scalar_one()
    return int(new_id)


def _registry(ran: list[int]) -> TaskRegistry:
    registry = TaskRegistry()

    def parse(payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise TypeError("payload must be an object")
        return payload

    @registry.task("strict", parse=parse)
    async def strict(payload: dict[str, Any], ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    @registry.task("fails")
    async def fails(payload: Any, ctx: JobContext) -> None:
        raise RetryableError("always")

    @registry.task("ok")
    async def ok(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    return registry


@pytest.mark.parametrize(("task", "payload", "policy", "metadata", "reason"), FOREIGN)
async def test_a_foreign_row_is_dead_lettered_with_a_reason(
    *,
    sync_engine: Engine,
    config: Callable[..., WorkerConfig],
    task: str,
    payload: Any,
    policy: Any,
    metadata: Any,
    reason: str,
) -> None:
    ran: list[int] = []
    good_before = _insert(sync_engine, "ok", {}, {}, {})
    bad = _insert(sync_engine, task, payload, policy, metadata)
    good_after = _insert(sync_engine, "ok", {}, {}, {})

    result = await asyncio.wait_for(WorkerRunner(config(), _registry(ran)).run_once(), 30)

    assert sorted(ran) == [good_before, good_after]
    assert count(sync_engine, "jobs") == 0
    [entry] = dead_letters(sync_engine)
    assert (entry["original_job_id"], entry["failure_reason"]) == (bad, reason)
    assert entry["last_error"]["message"]
    assert (entry["requeued_count"], entry["last_requeued_at"]) == (0, None)  # garbage ignored
    assert (result.succeeded, result.dead_lettered) == (2, 1)
