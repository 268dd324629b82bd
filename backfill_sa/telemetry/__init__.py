"""OpenTelemetry metrics and spans for enqueue and the worker (API only, no-op by default).

backfill_sa depends on ``opentelemetry-api`` alone. Without an SDK every call here is
a cheap no-op; install ``opentelemetry-sdk`` and an exporter, set up providers, and
the same calls produce metrics and traces. Nothing is global: a :class:`Telemetry`
object is created by the application (or the worker) and passed to what needs it.

Trace context crosses the database inside the job's ``metadata``: enqueue stores
:meth:`Telemetry.inject_context` (``traceparent``, ``tracestate``) and the worker's
``process {queue}`` span continues that trace. Every metric and span is listed in
``docs/telemetry.md``; :mod:`backfill_sa.telemetry.logs` has the logging filter that
puts trace ids on log records and the JSON formatter the CLI uses.

Example::

    telemetry = Telemetry(meter_provider=my_meter_provider, tracer_provider=my_tracer_provider)
    with telemetry.enqueue_span("send_email", "bulk") as span:
        metadata = {**telemetry.inject_context(), "tenant": "acme"}
        ...  # insert the job with this metadata
        span.set_job_id(job_id)
    telemetry.record_enqueue("send_email", "bulk", "inserted")
"""

from __future__ import annotations

from backfill_sa.telemetry.core import Telemetry, default_telemetry
from backfill_sa.telemetry.gauges import QueueSnapshot
from backfill_sa.telemetry.spans import EnqueueSpan, JobSpan, current_trace_carrier
from backfill_sa.telemetry.vocabulary import (
    INSTRUMENTATION_NAME,
    ClaimedJob,
    EnqueueKey,
    Outcome,
    OutcomeKey,
)

__all__ = [
    "INSTRUMENTATION_NAME",
    "ClaimedJob",
    "EnqueueKey",
    "EnqueueSpan",
    "JobSpan",
    "Outcome",
    "OutcomeKey",
    "QueueSnapshot",
    "Telemetry",
    "current_trace_carrier",
    "default_telemetry",
]
