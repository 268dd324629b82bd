"""``--otel sdk``: run the benchmarks with the OpenTelemetry SDK installed globally.

backfill_sa uses the API's global providers when it is given no ``Telemetry``, as in
the benchmarks; installing SDK providers there makes the same runs pay for metrics
(an in-memory reader: aggregation, no export) and spans (a batch processor feeding
an exporter that drops them: creation and processing, no I/O). The benchmark
process installs them itself; the worker subprocesses see :data:`ENV` and install
them when they load ``benchmarks.tasks``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["ENV", "MODES", "install_from_env", "select"]

ENV = "BACKFILL_BENCH_OTEL"
"""Environment variable naming the mode for this process and its workers."""

MODES = ("none", "sdk")


def select(mode: str) -> None:
    """Use ``mode`` in this process and in the workers it starts.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"--otel: {mode!r} is not one of {', '.join(MODES)}")
    os.environ[ENV] = mode
    install_from_env()


def install_from_env() -> None:
    """Install the SDK's providers globally when :data:`ENV` says ``sdk``.

    The SDK is imported only then: without ``--otel sdk`` a worker loads none of it.
    """
    if os.environ.get(ENV) != "sdk":
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        """Accepts spans and drops them."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(tracer_provider)
