"""Telemetry of real runs: enqueue and worker instruments, traces and logs, with the SDK.

Every test hands its own providers (in-memory reader and span exporter) to a
``Telemetry`` and passes it in: nothing here touches the API's global providers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec, enqueue, enqueue_batch, enqueue_many
from backfill_sa.errors import PermanentError, RetryableError, Snooze
from backfill_sa.jobs import CancelOutcome, cancel_job_async
from backfill_sa.retry import RetryPolicy
from backfill_sa.statements.worker_sql import job_claim_batch, worker_heartbeat
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.telemetry import Telemetry
from backfill_sa.telemetry.logs import TraceContextFilter
from backfill_sa.telemetry.vocabulary import DB_OPERATIONS
from backfill_sa.worker import WorkerRunner
from backfill_sa.worker.completer import Completer
from backfill_sa.worker.db import Database
from backfill_sa.worker.listener import Listener
from backfill_sa.worker.outcomes import Outcome, OutcomeKind
from tests.worker.conftest import add, execute, make_due, wait_for
from tests.worker.proxy import FaultyProxy

Attrs = frozenset[tuple[str, Any]]


def attrs(**values: Any) -> Attrs:
    return frozenset(values.items())


@dataclass
class Sdk:
    telemetry: Telemetry
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider

    def metrics(self) -> dict[str, dict[Attrs, Any]]:
        """Every metric's data points, keyed by attribute set."""
        data = self.reader.get_metrics_data()
        found: dict[str, dict[Attrs, Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = {
                        frozenset((p.attributes or {}).items()): p for p in metric.data.data_points
                    }
        return found

    def values(self, name: str) -> dict[Attrs, Any]:
        return {k: p.value for k, p in self.metrics().get(name, {}).items()}

    def counts(self, name: str) -> dict[Attrs, int]:
        """Histogram observation counts per attribute set."""
        return {k: p.count for k, p in self.metrics().get(name, {}).items()}

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is kind]


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        propagator=TraceContextTextMapPropagator(),
    )
    yield Sdk(telemetry, reader, exporter, tracer_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


# A retry waits an hour: it never comes due during the burst run that scheduled it.
LATER = RetryPolicy(initial_delay=timedelta(hours=1), max_delay=timedelta(hours=1))


def outcome_registry(snoozed: set[int]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("ok")
    async def ok(payload: Any, ctx: JobContext) -> None:
        return None

    @registry.task("flaky", retry=LATER)
    async def flaky(payload: Any, ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RetryableError("try again")

    @registry.task("snoozy")
    async def snoozy(payload: Any, ctx: JobContext) -> None:
        if ctx.job_id not in snoozed:
            snoozed.add(ctx.job_id)
            raise Snooze(timedelta(0))

    @registry.task("broken")
    async def broken(payload: Any, ctx: JobContext) -> None:
        raise PermanentError("never")

    return registry


# Values a metric attribute may take in these tests: names, not ids or payloads.
BOUNDED = {
    "task": {"ok", "flaky", "snoozy", "broken", "ghostly", "doomed", "peek", "forever"},
    "queue": {"bulk"},
    "outcome": {
        "inserted",
        "replaced",
        "unchanged",
        "succeeded",
        "retried",
        "snoozed",
        "dead_lettered",
        "cancelled",
        "error",
    },
    "reason": {
        "permanent_error",
        "max_attempts_exceeded",
        "unknown_task",
        "invalid_payload",
        "invalid_job",
    },
    "state": {"available", "scheduled", "running"},
    "operation": set(DB_OPERATIONS),
    "connection": {"pool", "listen"},
}


def assert_bounded(sdk: Sdk) -> None:
    for name, points in sdk.metrics().items():
        for attributes in points:
            for key, value in attributes:
                assert value in BOUNDED.get(key, set()), f"{name}: {key}={value!r}"


async def test_every_outcome_is_counted_and_traced_from_the_request(
    sync_engine: Engine, config: Callable[..., WorkerConfig], sdk: Sdk
) -> None:
    t = sdk.telemetry
    request_tracer = sdk.tracer_provider.get_tracer("web")
    with (
        request_tracer.start_as_current_span("POST /orders") as request,
        Session(sync_engine) as session,
        session.begin(),
    ):
        enqueue(session, "ok", {"n": 1}, telemetry=t)
        enqueue(session, "ok", {"n": 2}, job_key="k", telemetry=t)
        enqueue(session, "ok", {"n": 3}, job_key="k", telemetry=t)  # replaced
        enqueue(session, "ok", {"n": 4}, job_key="k", job_key_mode="unsafe_dedupe", telemetry=t)
        enqueue_many(session, [JobSpec("flaky", {}), JobSpec("snoozy", {})], telemetry=t)
        enqueue_batch(session, "broken", [{"card": "4242"}], telemetry=t)
    snoozed: set[int] = set()
    runner = WorkerRunner(config(), outcome_registry(snoozed), telemetry=t)

    first = await runner.run_once()
    make_due(sync_engine)  # the flaky job's retry
    second = await runner.run_once()

    assert (first.succeeded, first.retried, first.snoozed, first.dead_lettered) == (3, 1, 1, 1)
    assert (second.succeeded, second.retried) == (1, 0)
    assert sdk.values("backfill.jobs.enqueued") == {
        attrs(task="ok", queue="bulk", outcome="inserted"): 2,
        attrs(task="ok", queue="bulk", outcome="replaced"): 1,
        attrs(task="ok", queue="bulk", outcome="unchanged"): 1,
        attrs(task="flaky", queue="bulk", outcome="inserted"): 1,
        attrs(task="snoozy", queue="bulk", outcome="inserted"): 1,
        attrs(task="broken", queue="bulk", outcome="inserted"): 1,
    }
    assert sdk.values("backfill.jobs.claimed") == {
        attrs(task="ok", queue="bulk"): 2,
        attrs(task="flaky", queue="bulk"): 2,
        attrs(task="snoozy", queue="bulk"): 2,
        attrs(task="broken", queue="bulk"): 1,
    }
    assert sdk.values("backfill.jobs.succeeded") == {
        attrs(task="ok", queue="bulk"): 2,
        attrs(task="flaky", queue="bulk"): 1,
        attrs(task="snoozy", queue="bulk"): 1,
    }
    assert sdk.values("backfill.jobs.retried") == {attrs(task="flaky", queue="bulk"): 1}
    assert sdk.values("backfill.jobs.snoozed") == {attrs(task="snoozy", queue="bulk"): 1}
    assert sdk.values("backfill.jobs.dead_lettered") == {
        attrs(task="broken", queue="bulk", reason="permanent_error"): 1
    }
    assert sdk.counts("backfill.job.duration") == {
        attrs(task="ok", queue="bulk", outcome="succeeded"): 2,
        attrs(task="flaky", queue="bulk", outcome="retried"): 1,
        attrs(task="flaky", queue="bulk", outcome="succeeded"): 1,
        attrs(task="snoozy", queue="bulk", outcome="snoozed"): 1,
        attrs(task="snoozy", queue="bulk", outcome="succeeded"): 1,
        attrs(task="broken", queue="bulk", outcome="dead_lettered"): 1,
    }
    assert sum(sdk.counts("backfill.job.pickup_latency").values()) == 7
    operations = {dict(k)["operation"] for k in sdk.counts("backfill.db.operation.duration")}
    assert {"claim", "retry", "dead_letter", "heartbeat", "promote", "leader", "snapshot"} <= (
        operations
    )
    assert "backfill.db.transient_errors" not in sdk.metrics()
    assert_bounded(sdk)

    # One trace: the request, a producer span per enqueue call, every attempt.
    producers = sdk.spans(SpanKind.PRODUCER)
    assert [s.name for s in producers] == ["send bulk"] * 6
    trace_id = request.get_span_context().trace_id
    assert all(s.context is not None and s.context.trace_id == trace_id for s in producers)
    assert all(s.parent is not None for s in producers)
    assert {s.parent.span_id for s in producers if s.parent} == {request.get_span_context().span_id}
    batch = [s for s in producers if "messaging.batch.message_count" in (s.attributes or {})]
    assert [(s.attributes or {})["messaging.batch.message_count"] for s in batch] == [2, 1]
    consumers = sdk.spans(SpanKind.CONSUMER)
    assert len(consumers) == 7
    producer_ids = {s.context.span_id for s in producers if s.context}
    for attempt in consumers:
        assert attempt.name == "process bulk"
        assert attempt.context is not None
        assert attempt.context.trace_id == trace_id
        assert attempt.parent is not None
        assert attempt.parent.span_id in producer_ids


async def test_rescued_jobs_are_counted(
    sync_engine: Engine, config: Callable[..., WorkerConfig], db: Database, sdk: Sdk
) -> None:
    """A ghost worker's two claims: one is rescued, the other was the job's last
    attempt and goes to the DLQ, counted as dead-lettered (max_attempts_exceeded)."""
    again = add(sync_engine, "ghostly")
    last = add(sync_engine, "doomed", max_attempts=1)
    await db.execute(
        worker_heartbeat, {"worker_id": "ghost", "hostname": "h", "pid": 1, "queues": {}}
    )
    claimed = await db.execute(
        job_claim_batch, {"claim_queue": "bulk", "worker_id": "ghost", "limit": 2}
    )
    assert sorted(r["id"] for r in claimed) == [again, last]
    execute(
        sync_engine,
        "UPDATE {s}.workers SET last_heartbeat_at = now() - interval '1 hour' WHERE id = 'ghost'",
    )
    registry = TaskRegistry()
    registry.register("ghostly", lambda payload, ctx: None)

    result = await WorkerRunner(config(), registry, telemetry=sdk.telemetry).run_once()

    assert (result.rescued, result.succeeded) == (1, 1)
    assert sdk.values("backfill.jobs.rescued") == {attrs(task="ghostly", queue="bulk"): 1}
    assert sdk.values("backfill.jobs.dead_lettered") == {
        attrs(task="doomed", queue="bulk", reason="max_attempts_exceeded"): 1
    }
    operations = {dict(k)["operation"] for k in sdk.counts("backfill.db.operation.duration")}
    assert "rescue" in operations
    assert_bounded(sdk)


async def test_gauges_report_the_leaders_snapshot_and_running_jobs(
    sync_engine: Engine, config: Callable[..., WorkerConfig], sdk: Sdk
) -> None:
    """Seen from inside a handler: the snapshot the leader took at start-up, and the
    job running now."""
    add(sync_engine, "peek")
    for _ in range(2):
        add(sync_engine, "later", run_at=_in_an_hour())
    execute(
        sync_engine,
        "INSERT INTO {s}.dead_letter_jobs (original_job_id, task, queue, payload, priority,"
        " max_attempts, failure_reason, failure_count, original_created_at, original_run_at)"
        " VALUES (1, 'gone', 'bulk', '{}', 0, 1, 'permanent_error', 1, now(), now())",
    )
    seen: dict[str, dict[Attrs, Any]] = {}
    registry = TaskRegistry()

    @registry.task("peek")
    async def peek(payload: Any, ctx: JobContext) -> None:
        gauges = ("backfill.queue", "backfill.dlq", "backfill.workers", "backfill.jobs.running")
        seen.update({n: sdk.values(n) for n in sdk.metrics() if n.startswith(gauges)})

    result = await WorkerRunner(config(), registry, telemetry=sdk.telemetry).run_once()

    assert result.succeeded == 1
    assert seen["backfill.queue.jobs"] == {
        attrs(queue="bulk", state="available"): 1,
        attrs(queue="bulk", state="scheduled"): 2,
    }
    (age,) = seen["backfill.queue.oldest_available_age"].values()
    assert age >= 0
    assert seen["backfill.dlq.jobs"] == {attrs(queue="bulk"): 1}
    assert seen["backfill.workers.live"] == {frozenset(): 1}
    assert seen["backfill.jobs.running"] == {attrs(queue="bulk"): 1}
    # After the run the worker reports nothing any more.
    assert "backfill.queue.jobs" not in sdk.metrics()


def _in_an_hour() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + timedelta(hours=1)


async def test_completions_are_timed_as_complete(database_url: str, schema: str, sdk: Sdk) -> None:
    timed = Database(database_url, schema=schema, pool_size=1, telemetry=sdk.telemetry)
    try:
        completer = Completer(timed)
        completer.add(Outcome(OutcomeKind.SUCCEEDED, 999, 1, "ok", "bulk"))
        await completer.flush()
    finally:
        await timed.dispose()
    assert completer.result.refused == 1  # no such claim: fenced, nothing changed
    assert sdk.counts("backfill.db.operation.duration") == {attrs(operation="complete"): 1}


async def test_transient_errors_and_pool_reconnects_are_counted(
    database_url: str, schema: str, sdk: Sdk
) -> None:
    proxy = FaultyProxy(database_url)
    url = await proxy.start()
    db = Database(url, schema=schema, pool_size=1, telemetry=sdk.telemetry)
    params = {"worker_id": "w", "hostname": "h", "pid": 1, "queues": {}}
    try:
        await db.execute(worker_heartbeat, params)
        proxy.go_down()
        # The pool notices the lost connection now or on this call: either way the
        # call fails once, with a connection error.
        with pytest.raises((OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
            await db.execute(worker_heartbeat, params, retry=False)
        proxy.down = False
        await db.execute(worker_heartbeat, params)
    finally:
        await db.dispose()
        await proxy.close()
    assert sdk.values("backfill.db.transient_errors") == {attrs(operation="heartbeat"): 1}
    assert sdk.values("backfill.db.reconnects") == {attrs(connection="pool"): 1}
    assert sdk.counts("backfill.db.operation.duration") == {attrs(operation="heartbeat"): 3}


async def test_listen_failures_and_reconnects_are_counted(database_url: str, sdk: Sdk) -> None:
    proxy = FaultyProxy(database_url)
    url = await proxy.start()
    listener = Listener(url, "backfill_test_channel", lambda queue: None, telemetry=sdk.telemetry)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(listener.run(stop))
    try:
        await asyncio.wait_for(listener.connected.wait(), timeout=10)
        proxy.go_down()
        await wait_for(lambda: proxy.refused >= 1, what="a refused reconnection")
        proxy.down = False
        await wait_for(lambda: listener.connections_made == 2, what="the LISTEN reconnection")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await proxy.close()
    failures = sdk.values("backfill.db.transient_errors")
    assert set(failures) == {attrs(operation="listen")}
    assert failures[attrs(operation="listen")] >= 1
    assert sdk.values("backfill.db.reconnects") == {attrs(connection="listen"): 1}


async def test_sync_handler_logs_carry_job_fields_and_the_jobs_trace(
    sync_engine: Engine, config: Callable[..., WorkerConfig], sdk: Sdk
) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(TraceContextFilter())
    job_logger = logging.getLogger("backfill_sa.job")
    job_logger.addHandler(handler)
    previous = job_logger.level
    job_logger.setLevel(logging.INFO)
    registry = TaskRegistry()

    def threaded(payload: Any, ctx: JobContext) -> None:  # a sync handler: thread pool
        ctx.logger.info("working on %s", payload["order"])
        if ctx.attempt == 1:
            raise RetryableError("first attempt fails")

    registry.register("threaded", threaded, retry=LATER)
    job_id = add(sync_engine, "threaded", {"order": 7})
    try:
        await WorkerRunner(config(), registry, telemetry=sdk.telemetry).run_once()
    finally:
        job_logger.removeHandler(handler)
        job_logger.setLevel(previous)

    (attempt,) = sdk.spans(SpanKind.CONSUMER)
    assert attempt.context is not None
    fields = [
        (r.getMessage().split(":")[0], r.job_id, r.task, r.queue, r.attempt)  # type: ignore[attr-defined]
        for r in records
    ]
    assert fields == [
        ("working on 7", job_id, "threaded", "bulk", 1),
        (f"job {job_id} (threaded) attempt 1 failed", job_id, "threaded", "bulk", 1),
    ]
    for record in records:
        assert record.trace_id == format(attempt.context.trace_id, "032x")  # type: ignore[attr-defined]
        assert record.span_id == format(attempt.context.span_id, "016x")  # type: ignore[attr-defined]


async def test_only_the_leader_reports_the_queue_gauges(
    sync_engine: Engine, config: Callable[..., WorkerConfig], sdk: Sdk
) -> None:
    """Another worker holds the maintenance role: this one takes no snapshot, so two
    workers never report the same queue twice; it still reports its running jobs.
    ``snapshot_queues()`` takes one on demand all the same."""
    execute(
        sync_engine,
        "INSERT INTO {s}.leader (name, worker_id, expires_at)"
        " VALUES ('maintenance', 'other', now() + interval '1 hour')",
    )
    add(sync_engine, "peek")
    seen: dict[str, dict[Attrs, Any]] = {}
    on_demand: list[int] = []
    registry = TaskRegistry()
    runner = WorkerRunner(config(), registry, telemetry=sdk.telemetry)

    @registry.task("peek")
    async def peek(payload: Any, ctx: JobContext) -> None:
        seen.update(sdk.metrics())
        snapshot = await runner.snapshot_queues()
        on_demand.append(snapshot.jobs[("bulk", "running")])

    result = await runner.run_once()

    assert result.succeeded == 1
    assert "backfill.queue.jobs" not in seen
    assert "backfill.workers.live" not in seen
    assert set(seen["backfill.jobs.running"]) == {attrs(queue="bulk")}
    assert on_demand == [1]
    with pytest.raises(RuntimeError, match="not running"):
        await runner.snapshot_queues()


async def test_a_cancelled_running_job_is_counted_and_its_span_says_so(
    sync_engine: Engine,
    async_engine: AsyncEngine,
    config: Callable[..., WorkerConfig],
    sdk: Sdk,
) -> None:
    started = asyncio.Event()
    registry = TaskRegistry()

    @registry.task("forever")
    async def forever(payload: Any, ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    job_id = add(sync_engine, "forever")
    runner = WorkerRunner(config(), registry, telemetry=sdk.telemetry)
    handle = runner.start()
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            what="the LISTEN connection",
        )
        async with AsyncSession(async_engine) as session, session.begin():
            asked = await cancel_job_async(session, job_id)
        assert asked.outcome is CancelOutcome.REQUESTED
        await wait_for(lambda: runner.result.cancelled == 1, what="the cancelled outcome")
    finally:
        await asyncio.wait_for(handle.stop(), timeout=20)

    assert sdk.values("backfill.jobs.cancelled") == {attrs(task="forever", queue="bulk"): 1}
    assert sdk.counts("backfill.job.duration") == {
        attrs(task="forever", queue="bulk", outcome="cancelled"): 1
    }
    operations = {dict(k)["operation"] for k in sdk.counts("backfill.db.operation.duration")}
    assert "cancel" in operations
    (attempt,) = sdk.spans(SpanKind.CONSUMER)
    assert (attempt.attributes or {})["backfill.job.outcome"] == "cancelled"
    assert_bounded(sdk)
