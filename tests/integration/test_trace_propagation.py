"""A job's span continues the trace that was active when it was enqueued."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from backfill_sa import JobContext, TaskRegistry, Telemetry, WorkerConfig, enqueue
from backfill_sa.models import Job
from backfill_sa.worker import WorkerRunner


async def test_job_span_joins_the_enqueue_trace(
    sync_engine: Engine, database_url: str, schema: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with (
        tracer.start_as_current_span("http.request") as request_span,
        Session(sync_engine) as session,
        session.begin(),
    ):
        enqueue(session, "traced", {"n": 1})
    trace_id = request_span.get_span_context().trace_id

    with Session(sync_engine) as session:
        stored = session.scalars(select(Job.meta)).one()
    assert "traceparent" in stored

    seen: list[int] = []
    registry = TaskRegistry()

    @registry.task("traced")
    async def traced(payload: object, ctx: JobContext) -> None:
        seen.append(ctx.job_id)

    runner = WorkerRunner(
        WorkerConfig(database_url=database_url, schema=schema, queues={"bulk": 2}),
        registry,
        telemetry=Telemetry(tracer_provider=provider),
    )
    result = await runner.run_once()

    assert result.succeeded == 1
    assert len(seen) == 1
    job_spans = [s for s in exporter.get_finished_spans() if s.name == "process bulk"]
    assert len(job_spans) == 1
    assert job_spans[0].context.trace_id == trace_id
    assert job_spans[0].parent is not None
    assert job_spans[0].parent.span_id == request_span.get_span_context().span_id


def test_no_active_span_stores_no_trace_context(sync_engine: Engine) -> None:
    with Session(sync_engine) as session, session.begin():
        enqueue(session, "plain", {"n": 1}, metadata={"tag": "x"})
    with Session(sync_engine) as session:
        assert session.scalars(select(Job.meta)).one() == {"tag": "x"}
