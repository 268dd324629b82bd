"""Span handles: ``send {queue}`` (enqueue) and ``process {queue}`` (one job attempt)."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    SpanKind,
    Status,
    StatusCode,
)

from backfill_sa.telemetry.vocabulary import MESSAGING_SYSTEM, Outcome

if TYPE_CHECKING:
    from backfill_sa.telemetry.core import Telemetry

__all__ = ["EnqueueSpan", "JobSpan", "current_trace_carrier"]


class _CurrentSpan:
    """Starts a span, makes it current, ends it; shared by the two span handles."""

    __slots__ = ("_token", "span")

    def __init__(self) -> None:
        self.span: trace.Span = trace.INVALID_SPAN
        self._token: Token[Context] | None = None

    def _start(
        self,
        tracer: trace.Tracer,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, str | int],
        parent: Context | None,
    ) -> None:
        self.span = tracer.start_span(
            name,
            context=parent if parent is not None else Context(),
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        # A no-op tracer without a parent returns the invalid span: nothing to attach.
        if self.span.get_span_context().is_valid:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def _end(self, error: BaseException | None) -> None:
        span = self.span
        if error is not None and span.is_recording():
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


class EnqueueSpan(_CurrentSpan):
    """Context manager of a ``send {queue}`` span; see :meth:`Telemetry.enqueue_span`."""

    __slots__ = ("_attributes", "_name", "_tracer")

    def __init__(
        self, tracer: trace.Tracer | None, attributes: Mapping[str, str | int], name: str
    ) -> None:
        super().__init__()
        self._tracer = tracer
        self._attributes = attributes
        self._name = name

    def __enter__(self) -> EnqueueSpan:
        if self._tracer is None:  # tracing is off
            return self
        # A producer span is a child of whatever is current in the caller.
        current = otel_context.get_current()
        self._start(self._tracer, self._name, SpanKind.PRODUCER, self._attributes, current)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(exc)

    def set_job_id(self, job_id: int) -> None:
        """Record the id of the job inserted under this span."""
        if self.span.is_recording():
            self.span.set_attribute("messaging.message.id", str(job_id))
            self.span.set_attribute("backfill.job.id", job_id)


class JobSpan(_CurrentSpan):
    """Context manager of one job attempt; see :meth:`Telemetry.job_span`."""

    __slots__ = (
        "_attempt",
        "_job_id",
        "_metadata",
        "_outcome",
        "_queue",
        "_reason",
        "_started",
        "_task",
        "_telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        job_id: int,
        task: str,
        queue: str,
        attempt: int,
        metadata: Mapping[str, object] | None,
    ) -> None:
        super().__init__()
        self._telemetry = telemetry
        self._job_id = job_id
        self._task = task
        self._queue = queue
        self._attempt = attempt
        self._metadata = metadata
        self._outcome: str | None = None
        self._reason: str | None = None
        self._started = 0.0

    def __enter__(self) -> JobSpan:
        telemetry = self._telemetry
        if not telemetry.tracing:
            self._started = perf_counter()
            return self
        attributes: dict[str, str | int] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": self._queue,
            "messaging.message.id": str(self._job_id),
            "backfill.job.id": self._job_id,
            "backfill.job.task": self._task,
            "backfill.job.queue": self._queue,
            "backfill.job.attempt": self._attempt,
        }
        parent = telemetry.extract_context(self._metadata)
        name = f"process {self._queue}"
        self._start(telemetry._tracer, name, SpanKind.CONSUMER, attributes, parent)
        self._started = perf_counter()
        return self

    def set_outcome(
        self, outcome: Outcome, *, reason: str | None = None, error: BaseException | None = None
    ) -> None:
        """Say how the attempt ended; ``error`` is recorded on the span as an exception.

        Args:
            outcome: the attempt's outcome (also the duration's ``outcome`` attribute).
            reason: the failure reason of a dead-lettered job.
            error: the exception the handler raised, if any (not for a snooze).
        """
        self._outcome = outcome.value
        self._reason = reason
        span = self.span
        if span.is_recording():
            span.set_attribute("backfill.job.outcome", outcome.value)
            if reason is not None:
                span.set_attribute("backfill.job.failure_reason", reason)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = perf_counter() - self._started
        outcome = self._outcome or ("succeeded" if exc is None else "error")
        if self._outcome is None and self.span.is_recording():
            self.span.set_attribute("backfill.job.outcome", outcome)
        self._end(exc)
        self._telemetry._record_duration(self._task, self._queue, outcome, seconds)


def current_trace_carrier() -> dict[str, str]:
    """Return the active span's W3C trace context, or ``{}`` when no span is active.

    Enqueue stores it in the job's metadata so the worker's ``process`` span
    continues the caller's trace. Without an SDK no span is ever active and this
    costs well under a microsecond.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class _IdleJobSpan(JobSpan):
    """The job span while neither traces nor metrics are collected: does nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        """Create the shared idle span."""

    def __enter__(self) -> JobSpan:
        return self

    def set_outcome(
        self, outcome: Outcome, *, reason: str | None = None, error: BaseException | None = None
    ) -> None:
        """Ignore the outcome: nothing records it."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_IDLE_JOB_SPAN = _IdleJobSpan()
