"""Telemetry with the OpenTelemetry SDK's in-memory reader and exporter."""

from __future__ import annotations

import collections
import datetime as dt
import re
import timeit
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from backfill_sa.telemetry import Outcome, OutcomeKey, Telemetry

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Claimed:
    task: str
    queue: str
    run_at: dt.datetime
    created_at: dt.datetime

    def __getitem__(self, key: str) -> object:
        """Rows from the worker's claim are read by column name."""
        return getattr(self, key)


@dataclass
class Sdk:
    telemetry: Telemetry
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """Data points of one metric, keyed by their attribute set."""
        data = self.reader.get_metrics_data()
        assert data is not None
        found: dict[frozenset[tuple[str, Any]], Any] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "backfill_sa"
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found[frozenset((point.attributes or {}).items())] = point
        return found

    def units(self) -> dict[str, str]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            m.name: m.unit or ""
            for r in data.resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
        }

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


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
    yield Sdk(telemetry, reader, exporter)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def attrs(**values: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(values.items())


def value(point: NumberDataPoint) -> float:
    return point.value


# -- metrics --------------------------------------------------------------------------------


def test_counters_carry_task_queue_and_reason(sdk: Sdk) -> None:
    t = sdk.telemetry
    t.record_enqueued({("email", "bulk"): 3, ("charge", "fast"): 1})
    t.record_enqueued({("email", "bulk"): 2})
    t.record_outcomes(
        collections.Counter(
            {
                OutcomeKey(Outcome.SUCCEEDED, "email", "bulk"): 4,
                OutcomeKey(Outcome.RETRIED, "email", "bulk"): 2,
                OutcomeKey(Outcome.SNOOZED, "charge", "fast"): 1,
                OutcomeKey(Outcome.DEAD_LETTERED, "email", "bulk", "permanent_error"): 1,
                OutcomeKey(Outcome.DEAD_LETTERED, "email", "bulk", "unknown_task"): 5,
            }
        )
    )
    t.record_rescued({("email", "bulk"): 7})

    email, charge = attrs(task="email", queue="bulk"), attrs(task="charge", queue="fast")
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.enqueued").items()} == {
        email: 5,
        charge: 1,
    }
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.succeeded").items()} == {email: 4}
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.retried").items()} == {email: 2}
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.snoozed").items()} == {charge: 1}
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.dead_lettered").items()} == {
        attrs(task="email", queue="bulk", reason="permanent_error"): 1,
        attrs(task="email", queue="bulk", reason="unknown_task"): 5,
    }
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.rescued").items()} == {email: 7}
    units = sdk.units()
    assert units["backfill.jobs.enqueued"] == "{job}"
    assert units["backfill.jobs.dead_lettered"] == "{job}"


def test_claimed_counts_and_pickup_latency(sdk: Sdk) -> None:
    claimed_at = T0 + dt.timedelta(seconds=10)
    jobs = [
        Claimed("email", "bulk", run_at=T0, created_at=T0),  # 10 s
        Claimed("email", "bulk", run_at=T0 + dt.timedelta(seconds=8), created_at=T0),  # 2 s
        # enqueued after its run_at: latency counts from enqueue (4 s)
        Claimed("charge", "fast", run_at=T0, created_at=T0 + dt.timedelta(seconds=6)),
        # claimed "before" run_at by clock noise: clamped to 0
        Claimed("charge", "fast", run_at=T0 + dt.timedelta(seconds=11), created_at=T0),
    ]
    sdk.telemetry.record_claimed(jobs, claimed_at=claimed_at)

    email, charge = attrs(task="email", queue="bulk"), attrs(task="charge", queue="fast")
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.claimed").items()} == {
        email: 2,
        charge: 2,
    }
    latency = sdk.points("backfill.job.pickup_latency")
    assert set(latency) == {email, charge}
    e: HistogramDataPoint = latency[email]
    c: HistogramDataPoint = latency[charge]
    assert (e.count, e.sum, e.min, e.max) == (2, 12.0, 2.0, 10.0)
    assert (c.count, c.sum, c.min, c.max) == (2, 4.0, 0.0, 4.0)
    assert sdk.units()["backfill.job.pickup_latency"] == "s"
    assert 0.001 in e.explicit_bounds
    assert 3600.0 in e.explicit_bounds


def test_running_gauge_sums_sources(sdk: Sdk) -> None:
    first = {"fast": 3, "bulk": 1}
    second = {"fast": 2}
    sdk.telemetry.watch_running(lambda: first)
    unwatch = sdk.telemetry.watch_running(lambda: second)
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.running").items()} == {
        attrs(queue="fast"): 5,
        attrs(queue="bulk"): 1,
    }
    unwatch()
    first["fast"] = 0
    assert {k: value(p) for k, p in sdk.points("backfill.jobs.running").items()} == {
        attrs(queue="fast"): 0,
        attrs(queue="bulk"): 1,
    }


# -- spans ----------------------------------------------------------------------------------


def test_job_span_attributes_and_duration(sdk: Sdk) -> None:
    t = sdk.telemetry
    with t.job_span(job_id=42, task="email", queue="bulk", attempt=2) as job:
        assert trace.get_current_span() is job.span
        job.set_outcome(Outcome.SUCCEEDED)
    (span,) = sdk.spans()
    assert span.name == "backfill.job"
    assert span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "messaging.system": "backfill_sa",
        "messaging.operation.type": "process",
        "messaging.destination.name": "bulk",
        "messaging.message.id": "42",
        "backfill.job.id": 42,
        "backfill.job.task": "email",
        "backfill.job.queue": "bulk",
        "backfill.job.attempt": 2,
        "backfill.job.outcome": "succeeded",
    }
    assert span.parent is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    (point,) = sdk.points("backfill.job.duration").items()
    assert point[0] == attrs(task="email", queue="bulk", outcome="succeeded")
    assert point[1].count == 1
    assert 0 <= point[1].sum < 5
    assert sdk.units()["backfill.job.duration"] == "s"


def test_job_span_failures(sdk: Sdk) -> None:
    t = sdk.telemetry
    error = ValueError("bad payload")
    with t.job_span(job_id=1, task="email", queue="bulk", attempt=8) as job:
        job.set_outcome(Outcome.DEAD_LETTERED, reason="max_attempts_exceeded", error=error)
    with (
        pytest.raises(RuntimeError),
        t.job_span(job_id=2, task="email", queue="bulk", attempt=1),
    ):
        raise RuntimeError("escaped")
    dead, escaped = sdk.spans()
    assert dead.attributes is not None
    assert dead.attributes["backfill.job.outcome"] == "dead_lettered"
    assert dead.attributes["backfill.job.failure_reason"] == "max_attempts_exceeded"
    assert dead.status.status_code is StatusCode.ERROR
    assert [e.name for e in dead.events] == ["exception"]
    assert dead.events[0].attributes is not None
    assert dead.events[0].attributes["exception.type"] == "ValueError"
    assert escaped.attributes is not None
    assert escaped.attributes["backfill.job.outcome"] == "error"
    assert escaped.status.status_code is StatusCode.ERROR
    assert set(sdk.points("backfill.job.duration")) == {
        attrs(task="email", queue="bulk", outcome="dead_lettered"),
        attrs(task="email", queue="bulk", outcome="error"),
    }


def test_context_injected_at_enqueue_is_continued_by_the_job(sdk: Sdk) -> None:
    t = sdk.telemetry
    with t.enqueue_span("email", "bulk") as enqueue:
        metadata: dict[str, object] = {"tenant": "acme", **t.inject_context()}
        enqueue.set_job_id(7)
    assert set(metadata) == {"tenant", "traceparent"}
    (producer,) = sdk.spans()
    assert producer.name == "backfill.enqueue"
    assert producer.kind is SpanKind.PRODUCER
    assert dict(producer.attributes or {}) == {
        "messaging.system": "backfill_sa",
        "messaging.operation.type": "send",
        "messaging.destination.name": "bulk",
        "messaging.message.id": "7",
        "backfill.job.id": 7,
        "backfill.job.task": "email",
        "backfill.job.queue": "bulk",
    }

    # Later, in the worker (no span current), possibly after a JSON round trip.
    extracted = t.extract_context(metadata)
    assert extracted is not None
    with t.job_span(job_id=7, task="email", queue="bulk", attempt=1, metadata=metadata):
        pass
    _, consumer = sdk.spans()
    assert producer.context is not None
    assert consumer.context is not None
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id


def test_enqueue_span_for_a_batch_is_a_child_of_the_callers_span(sdk: Sdk) -> None:
    t = sdk.telemetry
    tracer = TracerProvider().get_tracer("app")
    with (
        tracer.start_as_current_span("request") as request,
        t.enqueue_span(None, None, count=500),
    ):
        carrier = t.inject_context()
    (producer,) = sdk.spans()
    assert producer.attributes is not None
    assert producer.attributes["messaging.batch.message_count"] == 500
    assert "backfill.job.task" not in producer.attributes
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert producer.context is not None
    assert carrier["traceparent"].split("-")[2] == f"{producer.context.span_id:016x}"


def test_extract_ignores_metadata_without_trace_context(sdk: Sdk) -> None:
    t = sdk.telemetry
    assert t.extract_context(None) is None
    assert t.extract_context({"tenant": "acme"}) is None
    # A malformed value starts a new trace rather than failing the job.
    with t.job_span(job_id=1, task="x", queue="q", attempt=1, metadata={"traceparent": 5}):
        pass
    (span,) = sdk.spans()
    assert span.parent is None


# -- without an SDK --------------------------------------------------------------------------


def test_no_sdk_is_silent_and_cheap() -> None:
    """With no-op providers nothing is recorded and a job costs microseconds."""
    t = Telemetry(tracer_provider=NoOpTracerProvider())
    assert t.tracing is False
    with t.enqueue_span("email", "bulk") as enqueue:
        assert t.inject_context() == {}
        enqueue.set_job_id(1)
    metadata = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with t.job_span(job_id=1, task="t", queue="q", attempt=1, metadata=metadata) as job:
        assert trace.get_current_span() is trace.INVALID_SPAN
        job.set_outcome(Outcome.SUCCEEDED)

    key = OutcomeKey(Outcome.SUCCEEDED, "t", "q")

    def one_job() -> None:
        with t.job_span(job_id=1, task="t", queue="q", attempt=1, metadata=metadata) as span:
            span.set_outcome(Outcome.SUCCEEDED)
        t.record_outcomes({key: 1})

    per_job = min(timeit.repeat(one_job, number=2000, repeat=3)) / 2000
    assert per_job < 50e-6, f"{per_job * 1e6:.1f} us per job without an SDK"


def test_default_providers_are_the_api_globals() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider is installed in this process")
    assert Telemetry().tracing is False


def test_docs_snippets_run() -> None:
    """The ```python blocks of docs/telemetry.md run (each in a fresh namespace)."""
    doc = Path(__file__).parents[2] / "docs" / "telemetry.md"
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), flags=re.S | re.M)
    assert len(blocks) == 3
    for block in blocks:
        namespace: dict[str, Any] = {}
        exec(compile(block, str(doc), "exec"), namespace)
    assert namespace["outcomes"] == {OutcomeKey(Outcome.SUCCEEDED, "send_email", "bulk"): 1}
    assert namespace["running"] == {"bulk": 0}


def test_docs_list_every_instrument(sdk: Sdk) -> None:
    """Every metric the SDK sees appears in docs/telemetry.md."""
    sdk.telemetry.record_enqueued({("t", "q"): 1})
    sdk.telemetry.record_claimed([Claimed("t", "q", T0, T0)], claimed_at=T0)
    sdk.telemetry.record_rescued({("t", "q"): 1})
    sdk.telemetry.record_outcomes({OutcomeKey(o, "t", "q"): 1 for o in Outcome})
    sdk.telemetry.watch_running(lambda: {"q": 1})
    with sdk.telemetry.job_span(job_id=1, task="t", queue="q", attempt=1):
        pass
    names = set(sdk.units())
    assert len(names) == 11
    doc = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
    assert {n for n in names if f"`{n}`" not in doc} == set()


def test_nothing_collected_means_no_per_job_work() -> None:
    """Without an SDK (no-op providers) job spans are one shared idle object and
    claimed batches are not walked: the worker pays next to nothing."""
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    telemetry = Telemetry(meter_provider=NoOpMeterProvider(), tracer_provider=NoOpTracerProvider())
    assert not telemetry.metering
    assert not telemetry.tracing
    first = telemetry.job_span(job_id=1, task="t", queue="q", attempt=1)
    second = telemetry.job_span(job_id=2, task="t", queue="q", attempt=1)
    assert first is second
    with first as span:
        span.set_outcome(Outcome.SUCCEEDED)

    class Exploding:
        def __getitem__(self, key: str) -> object:
            raise AssertionError("a claimed row was read although nothing collects metrics")

    telemetry.record_claimed([Exploding()], claimed_at=T0)
