"""Log records that join traces, the JSON formatter, and the queue snapshot's gauges."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from backfill_sa.telemetry import QueueSnapshot, Telemetry
from backfill_sa.telemetry.logs import JOB_FIELDS, JsonFormatter, TraceContextFilter


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.telemetry_logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_inside_a_job_span_carry_its_trace_and_span_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = captured
    telemetry = Telemetry(tracer_provider=TracerProvider())
    log.info("before")
    with telemetry.job_span(job_id=9, task="t", queue="q", attempt=3) as job:
        log.info("inside", extra={"job_id": 9, "task": "t", "queue": "q", "attempt": 3})
    outside, inside = lines(stream)
    context = job.span.get_span_context()
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert {k: inside[k] for k in JOB_FIELDS} == {
        "job_id": 9,
        "task": "t",
        "queue": "q",
        "attempt": 3,
    }
    assert (inside["level"], inside["logger"], inside["message"]) == (
        "INFO",
        "tests.telemetry_logs",
        "inside",
    )


def test_the_filter_sets_empty_ids_outside_a_span_so_format_strings_work() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert TraceContextFilter().filter(record) is True
    formatted = logging.Formatter("%(trace_id)s|%(span_id)s|%(message)s").format(record)
    assert formatted == "||hello"


def test_json_formatter_writes_exceptions_and_unserialisable_values(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = captured
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed", extra={"when": object})
    (record,) = lines(stream)
    assert "ValueError: bad" in str(record["exception"])
    assert record["when"] == str(object)


def test_snapshot_rows_become_gauges() -> None:
    rows = [
        {"kind": "jobs", "queue": "bulk", "state": "available", "n": 4, "oldest_s": 12.5},
        {"kind": "jobs", "queue": "bulk", "state": "running", "n": 1, "oldest_s": None},
        {"kind": "jobs", "queue": "fast", "state": "scheduled", "n": 2, "oldest_s": None},
        # clock skew between run_at and now(): never negative
        {"kind": "jobs", "queue": "slow", "state": "available", "n": 1, "oldest_s": -0.2},
        {"kind": "dlq", "queue": "bulk", "state": None, "n": 3, "oldest_s": None},
        {"kind": "workers", "queue": None, "state": None, "n": 2, "oldest_s": None},
    ]
    snapshot = QueueSnapshot.from_rows(rows)
    assert snapshot == QueueSnapshot(
        {("bulk", "available"): 4, ("bulk", "running"): 1, ("fast", "scheduled"): 2,
         ("slow", "available"): 1},
        {"bulk": 12.5, "fast": 0.0, "slow": 0.0},
        {"bulk": 3},
        2,
    )  # fmt: skip

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(meter_provider=provider)
    nothing_yet: list[QueueSnapshot | None] = [None]
    telemetry.watch_queues(lambda: nothing_yet[0])
    unwatch = telemetry.watch_queues(lambda: snapshot)

    def gauges() -> dict[str, dict[frozenset[tuple[str, object]], float]]:
        data = reader.get_metrics_data()
        found: dict[str, dict[frozenset[tuple[str, object]], float]] = {}
        for r in data.resource_metrics if data else ():
            for s in r.scope_metrics:
                for m in s.metrics:
                    found[m.name] = {
                        frozenset((p.attributes or {}).items()): p.value  # type: ignore[union-attr]
                        for p in m.data.data_points
                    }
        return found

    seen = gauges()
    assert seen["backfill.queue.jobs"][frozenset({("queue", "bulk"), ("state", "available")})] == 4
    assert seen["backfill.queue.oldest_available_age"][frozenset({("queue", "bulk")})] == 12.5
    assert seen["backfill.dlq.jobs"] == {frozenset({("queue", "bulk")}): 3}
    assert seen["backfill.workers.live"] == {frozenset(): 2}
    unwatch()
    assert "backfill.workers.live" not in gauges()  # no source holds a snapshot
    provider.shutdown()
