"""Enqueue's producer spans and ``backfill.jobs.enqueued`` counts, sync and async."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import (
    JobSpec,
    enqueue,
    enqueue_async,
    enqueue_batch_async,
    enqueue_many_async,
)
from backfill_sa.models import Job
from backfill_sa.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[2]


class Sdk:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(
            meter_provider=self.meter_provider, tracer_provider=self.tracer_provider
        )

    def enqueued(self) -> dict[tuple[str, str, str], int]:
        data = self.reader.get_metrics_data()
        found: dict[tuple[str, str, str], int] = {}
        for r in data.resource_metrics if data else ():
            for s in r.scope_metrics:
                for m in s.metrics:
                    if m.name == "backfill.jobs.enqueued":
                        for p in m.data.data_points:
                            a = dict(p.attributes or {})
                            found[(str(a["task"]), str(a["queue"]), str(a["outcome"]))] = int(
                                p.value  # type: ignore[union-attr]
                            )
        return found


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    found = Sdk()
    yield found
    found.meter_provider.shutdown()
    found.tracer_provider.shutdown()


async def test_async_enqueue_calls_are_one_span_each_and_counted(
    async_engine: AsyncEngine, sdk: Sdk
) -> None:
    t = sdk.telemetry
    async with AsyncSession(async_engine) as session, session.begin():
        one = await enqueue_async(session, "mail", {"to": "ada"}, queue="fast", telemetry=t)
        await enqueue_many_async(
            session, [JobSpec("mail", {}, "fast"), JobSpec("sms", {}, "bulk")], telemetry=t
        )
        await enqueue_batch_async(session, "sms", [{}, {}, {}], telemetry=t)
        metadata = (await session.scalars(select(Job.meta).where(Job.id == one.id))).one()

    assert sdk.enqueued() == {
        ("mail", "fast", "inserted"): 2,
        ("sms", "bulk", "inserted"): 4,
    }
    single, many, batch = sdk.exporter.get_finished_spans()
    assert (single.name, many.name, batch.name) == ("send fast", "send", "send bulk")
    assert {s.kind for s in (single, many, batch)} == {SpanKind.PRODUCER}
    assert dict(single.attributes or {})["messaging.message.id"] == str(one.id)
    many_attributes = dict(many.attributes or {})
    assert many_attributes["messaging.batch.message_count"] == 2
    assert "messaging.destination.name" not in many_attributes  # two queues
    assert dict(batch.attributes or {})["messaging.batch.message_count"] == 3
    assert single.context is not None
    # The job stores the producer span's context: the worker's span continues it.
    assert metadata["traceparent"].split("-")[2] == f"{single.context.span_id:016x}"


def test_a_failed_enqueue_is_an_error_span_and_not_counted(database_url: str, sdk: Sdk) -> None:
    missing = create_engine(
        sync_url(database_url),
        execution_options={"schema_translate_map": {"backfill": "no_such_schema"}},
    )
    try:
        with Session(missing) as session, pytest.raises(DBAPIError):
            enqueue(session, "mail", {}, telemetry=sdk.telemetry)
    finally:
        missing.dispose()

    (span,) = sdk.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert sdk.enqueued() == {}


def test_without_an_sdk_nothing_is_recorded_and_the_job_is_written(sync_engine: Engine) -> None:
    quiet = Telemetry(meter_provider=NoOpMeterProvider(), tracer_provider=NoOpTracerProvider())
    with Session(sync_engine) as session, session.begin():
        result = enqueue(session, "mail", {"n": 1}, metadata={"tag": "x"}, telemetry=quiet)
    with Session(sync_engine) as session:
        assert session.scalars(select(Job.meta).where(Job.id == result.id)).one() == {"tag": "x"}


_GLOBAL_SCRIPT = """
import json, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import enqueue, enqueue_batch

url, schema = sys.argv[1], sys.argv[2]
translate = {"schema_translate_map": {"backfill": schema}}
engine = create_engine(sync_url(url), execution_options=translate)
reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with Session(engine) as session, session.begin():
    enqueue(session, "mail", {}, queue="fast")
    enqueue_batch(session, "sms", [{}, {}])
points = {
    p.attributes["task"]: p.value
    for r in reader.get_metrics_data().resource_metrics
    for s in r.scope_metrics for m in s.metrics if m.name == "backfill.jobs.enqueued"
    for p in m.data.data_points
}
print(json.dumps({"counts": points, "spans": [s.name for s in exporter.get_finished_spans()]}))
"""


def test_enqueue_without_telemetry_reports_to_the_global_providers(
    database_url: str, schema: str
) -> None:
    """The issue's check: global SDK providers, no ``telemetry=`` (in a subprocess:
    the API's globals can be set once per process)."""
    done = subprocess.run(
        [sys.executable, "-c", _GLOBAL_SCRIPT, database_url, schema],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["counts"] == {"mail": 1, "sms": 2}
    assert seen["spans"] == ["send fast", "send bulk"]
