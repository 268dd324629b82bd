"""OpenTelemetry metrics and spans for enqueue and the worker (API only, no-op by default).

backfill_sa depends on ``opentelemetry-api`` alone. Without an SDK every call here is
a cheap no-op; install ``opentelemetry-sdk`` and an exporter, set up providers, and
the same calls produce metrics and traces. Nothing is global: a :class:`Telemetry`
object is created by the application (or the worker) and passed to what needs it.

Trace context crosses the database inside the job's ``metadata``: enqueue stores
:meth:`Telemetry.inject_context` (``traceparent``, ``tracestate``) and the worker's
``backfill.job`` span continues that trace. Every metric and span is listed in
``docs/telemetry.md``.

Example::

    telemetry = Telemetry(meter_provider=my_meter_provider, tracer_provider=my_tracer_provider)
    with telemetry.enqueue_span("send_email", "bulk") as span:
        metadata = {**telemetry.inject_context(), "tenant": "acme"}
        ...  # insert the job with this metadata
        span.set_job_id(job_id)
    telemetry.record_enqueued({("send_email", "bulk"): 1})
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from time import monotonic, perf_counter
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

__all__ = [
    "current_trace_carrier",
    "INSTRUMENTATION_NAME",
    "ClaimedJob",
    "EnqueueSpan",
    "JobSpan",
    "Outcome",
    "OutcomeKey",
    "Telemetry",
]

INSTRUMENTATION_NAME = "backfill_sa"
"""Name of the meter and the tracer (the instrumentation scope)."""

MESSAGING_SYSTEM = "backfill_sa"

_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
_ATTRIBUTE_CACHE_LIMIT = 4096
_GLOBAL_CHECK_INTERVAL_S = 1.0


class Outcome(str, enum.Enum):
    """How one attempt of a job ended."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    SNOOZED = "snoozed"
    DEAD_LETTERED = "dead_lettered"


class OutcomeKey(NamedTuple):
    """Key of :meth:`Telemetry.record_outcomes` counts: one per attribute set.

    ``reason`` is the dead-letter :class:`~backfill_sa.models.FailureReason` value
    and only used with :attr:`Outcome.DEAD_LETTERED`.
    """

    outcome: Outcome
    task: str
    queue: str
    reason: str | None = None


class ClaimedJob(Protocol):
    """What :meth:`Telemetry.record_claimed` reads of a claimed job: a row indexed by
    column name (``task``, ``queue``, ``run_at``, ``created_at``)."""

    def __getitem__(self, key: str) -> Any: ...


class _MetadataGetter(Getter[Mapping[str, object]]):
    """Reads propagation fields from job metadata; non-string values are ignored."""

    def get(self, carrier: Mapping[str, object], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, object]) -> list[str]:
        return [k for k, v in carrier.items() if isinstance(v, str)]


_GETTER = _MetadataGetter()


class _Instruments:
    """The meter's instruments, created once per :class:`Telemetry`."""

    def __init__(self, meter: metrics.Meter) -> None:
        def counter(name: str, description: str) -> metrics.Counter:
            return meter.create_counter(f"backfill.{name}", unit="{job}", description=description)

        self.enqueued = counter("jobs.enqueued", "Jobs inserted by enqueue (before commit).")
        self.claimed = counter("jobs.claimed", "Jobs claimed by a worker.")
        self.rescued = counter("jobs.rescued", "Jobs taken back from dead or stale workers.")
        self.outcomes = {
            Outcome.SUCCEEDED: counter("jobs.succeeded", "Jobs completed successfully."),
            Outcome.RETRIED: counter("jobs.retried", "Failed attempts scheduled for retry."),
            Outcome.SNOOZED: counter("jobs.snoozed", "Attempts that snoozed the job."),
            Outcome.DEAD_LETTERED: counter("jobs.dead_lettered", "Jobs moved to the DLQ."),
        }
        self.duration = _histogram(
            meter, "backfill.job.duration", "Time a handler ran, per attempt."
        )
        self.pickup_latency = _histogram(
            meter,
            "backfill.job.pickup_latency",
            "Time from when a job became due (run_at, or enqueue if later) to its claim.",
        )


def _histogram(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    try:
        return meter.create_histogram(
            name,
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
    except TypeError:  # opentelemetry-api < 1.23 has no bucket advice
        return meter.create_histogram(name, unit="s", description=description)


class _Collecting:
    """Whether a provider collects anything (is neither no-op nor the unset proxy).

    A proxy provider stands for the API's global one before an SDK installs itself;
    the global is looked up again at most once a second, since the lookup costs about
    as much as a span.
    """

    __slots__ = ("_awaited", "_get_global", "_next_check", "_on")

    def __init__(
        self,
        provider: object,
        noop_type: type,
        proxy_type: type,
        get_global: Callable[[], object],
    ) -> None:
        self._on = not isinstance(provider, (noop_type, proxy_type))
        self._awaited = provider if isinstance(provider, proxy_type) else None
        self._get_global = get_global
        self._next_check = 0.0

    def on(self) -> bool:
        if self._on:
            return True
        if self._awaited is None:
            return False
        now = monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + _GLOBAL_CHECK_INTERVAL_S
        if self._get_global() is self._awaited:
            return False
        self._on = True  # a global provider can be set only once
        return True


class Telemetry:
    """Metrics and spans of one application, from providers it is given.

    Args:
        meter_provider: where instruments come from; default the API's global
            provider (a no-op proxy until an SDK installs one).
        tracer_provider: where spans come from; default the API's global provider.
        propagator: how trace context is written into and read from job metadata;
            default the API's global text-map propagator (W3C ``traceparent`` and
            ``tracestate``, plus ``baggage``, unless ``OTEL_PROPAGATORS`` says otherwise).
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        meters = meter_provider or metrics.get_meter_provider()
        meter = meters.get_meter(INSTRUMENTATION_NAME)
        # Per-job metric work (pickup latencies, outcome counts, durations) and spans
        # are skipped while nothing collects them: a no-op provider, or the API's proxy
        # before an SDK is installed globally (looked for again at most once a second).
        self._metering = _Collecting(
            meters, metrics.NoOpMeterProvider, _ProxyMeterProvider, metrics.get_meter_provider
        )
        tracers = tracer_provider or trace.get_tracer_provider()
        self._tracer = tracers.get_tracer(INSTRUMENTATION_NAME)
        self._tracing = _Collecting(
            tracers, NoOpTracerProvider, ProxyTracerProvider, trace.get_tracer_provider
        )
        self._propagator = propagator or propagate.get_global_textmap()
        self._fields = frozenset(self._propagator.fields)
        self._instruments = _Instruments(meter)
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self._running_sources: list[Callable[[], Mapping[str, int]]] = []
        meter.create_observable_up_down_counter(
            "backfill.jobs.running",
            callbacks=[self._observe_running],
            unit="{job}",
            description="Jobs running now in this process, per queue.",
        )

    # -- trace context ------------------------------------------------------------------

    def inject_context(self) -> dict[str, str]:
        """Return the current trace context as strings to store in a job's metadata.

        Typically ``{"traceparent": ..., "tracestate": ...}``; empty when there is no
        active span (for instance without an SDK). Call it inside
        :meth:`enqueue_span` so the job's span continues from the enqueue span.
        """
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    def extract_context(self, metadata: Mapping[str, object] | None) -> Context | None:
        """Return the trace context stored in a job's metadata, or None if it has none."""
        if not metadata or self._fields.isdisjoint(metadata):
            return None
        return self._propagator.extract(metadata, context=Context(), getter=_GETTER)

    # -- spans --------------------------------------------------------------------------

    def enqueue_span(self, task: str | None, queue: str | None, *, count: int = 1) -> EnqueueSpan:
        """Return a context manager for a ``backfill.enqueue`` span (kind PRODUCER).

        The span is current inside the block, so :meth:`inject_context` links the job
        to it. For a batch of mixed tasks or queues pass ``None`` and the job count.
        """
        if not self.tracing:
            return EnqueueSpan(None, {})
        attributes: dict[str, str | int] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
            attributes["backfill.job.queue"] = queue
        if task is not None:
            attributes["backfill.job.task"] = task
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        return EnqueueSpan(self._tracer, attributes)

    def job_span(
        self,
        *,
        job_id: int,
        task: str,
        queue: str,
        attempt: int,
        metadata: Mapping[str, object] | None = None,
    ) -> JobSpan:
        """Return a context manager around one attempt of a job (span ``backfill.job``).

        The span (kind CONSUMER) continues the trace found in ``metadata`` and is
        current inside the block. On exit it records ``backfill.job.duration`` with
        the outcome set by :meth:`JobSpan.set_outcome` (default ``succeeded``, or
        ``error`` if an exception leaves the block).

        Args:
            job_id: the job's id.
            task: the job's task name.
            queue: the job's queue.
            attempt: this attempt's number, from 1.
            metadata: the job's metadata, holding the trace context from enqueue.
        """
        if not self.tracing and not self.metering:
            return _IDLE_JOB_SPAN
        return JobSpan(
            self, job_id=job_id, task=task, queue=queue, attempt=attempt, metadata=metadata
        )

    # -- metrics ------------------------------------------------------------------------

    def record_enqueued(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Count enqueued jobs, given as ``{(task, queue): n}``."""
        add = self._instruments.enqueued.add
        for (task, queue), n in counts.items():
            add(n, self._task_queue(task, queue))

    def record_claimed(self, jobs: Iterable[ClaimedJob], *, claimed_at: dt.datetime) -> None:
        """Count a batch of claimed jobs and record each one's pickup latency.

        Pickup latency is ``claimed_at - max(run_at, created_at)`` in seconds, never
        below zero. Pass ``claimed_at`` from the database clock (the claim's ``now()``)
        so that application and database clocks cannot skew it.
        """
        if not self.metering:
            return
        counts: dict[tuple[str, str], int] = {}
        record = self._instruments.pickup_latency.record
        for job in jobs:
            key = (job["task"], job["queue"])
            counts[key] = counts.get(key, 0) + 1
            due = max(job["run_at"], job["created_at"])
            record(max((claimed_at - due).total_seconds(), 0.0), self._task_queue(*key))
        add = self._instruments.claimed.add
        for (task, queue), n in counts.items():
            add(n, self._task_queue(task, queue))

    def record_outcomes(self, counts: Mapping[OutcomeKey, int]) -> None:
        """Count finished attempts of a batch, given as ``{OutcomeKey(...): n}``.

        A :class:`collections.Counter` of :class:`OutcomeKey` built while completing a
        batch is the intended argument: one instrument call per distinct key.
        """
        outcomes = self._instruments.outcomes
        for key, n in counts.items():
            if key.outcome is Outcome.DEAD_LETTERED:
                attributes = self._cached("dl", key.task, key.queue, key.reason or "")
            else:
                attributes = self._task_queue(key.task, key.queue)
            outcomes[key.outcome].add(n, attributes)

    def record_rescued(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Count jobs taken back from dead or stale workers, as ``{(task, queue): n}``."""
        add = self._instruments.rescued.add
        for (task, queue), n in counts.items():
            add(n, self._task_queue(task, queue))

    def watch_running(self, source: Callable[[], Mapping[str, int]]) -> Callable[[], None]:
        """Report ``source()`` (running jobs per queue) as ``backfill.jobs.running``.

        ``source`` is called by the SDK's metric reader, possibly from another
        thread, at each collection: it must be cheap and must not block. Several
        sources (several workers in one process) are summed per queue.

        Returns:
            A function that stops reporting this source.
        """
        self._running_sources.append(source)

        def unwatch() -> None:
            if source in self._running_sources:
                self._running_sources.remove(source)

        return unwatch

    @property
    def tracing(self) -> bool:
        """Whether spans are created: False with a no-op provider or no SDK installed.

        With the API's default (proxy) provider, an SDK installed later with
        ``trace.set_tracer_provider`` is noticed within a second.
        """
        return self._tracing.on()

    @property
    def metering(self) -> bool:
        """Whether metrics are collected: False with a no-op provider or no SDK installed.

        With the API's default (proxy) provider, an SDK installed later with
        ``metrics.set_meter_provider`` is noticed within a second.
        """
        return self._metering.on()

    # -- internals ----------------------------------------------------------------------

    def _observe_running(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        totals: dict[str, int] = {}
        for source in list(self._running_sources):
            for queue, n in source().items():
                totals[queue] = totals.get(queue, 0) + n
        return [metrics.Observation(n, {"queue": q}) for q, n in totals.items()]

    def _task_queue(self, task: str, queue: str) -> dict[str, str]:
        return self._cached("tq", task, queue)

    def _cached(self, kind: str, task: str, queue: str, extra: str = "") -> dict[str, str]:
        """Attribute dicts are built once per distinct set: most calls are a dict hit."""
        key = (kind, task, queue, extra)
        attributes = self._attributes.get(key)
        if attributes is None:
            if len(self._attributes) >= _ATTRIBUTE_CACHE_LIMIT:
                self._attributes.clear()
            attributes = {"task": task, "queue": queue}
            if kind == "dl":
                attributes["reason"] = extra
            elif kind == "dur":
                attributes["outcome"] = extra
            self._attributes[key] = attributes
        return attributes

    def _record_duration(self, task: str, queue: str, outcome: str, seconds: float) -> None:
        self._instruments.duration.record(seconds, self._cached("dur", task, queue, outcome))


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
    """Context manager of a ``backfill.enqueue`` span; see :meth:`Telemetry.enqueue_span`."""

    __slots__ = ("_attributes", "_tracer")

    def __init__(self, tracer: trace.Tracer | None, attributes: Mapping[str, str | int]) -> None:
        super().__init__()
        self._tracer = tracer
        self._attributes = attributes

    def __enter__(self) -> EnqueueSpan:
        if self._tracer is None:  # tracing is off
            return self
        # A producer span is a child of whatever is current in the caller.
        current = otel_context.get_current()
        self._start(self._tracer, "backfill.enqueue", SpanKind.PRODUCER, self._attributes, current)
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
            "messaging.destination.name": self._queue,
            "messaging.message.id": str(self._job_id),
            "backfill.job.id": self._job_id,
            "backfill.job.task": self._task,
            "backfill.job.queue": self._queue,
            "backfill.job.attempt": self._attempt,
        }
        parent = telemetry.extract_context(self._metadata)
        self._start(telemetry._tracer, "backfill.job", SpanKind.CONSUMER, attributes, parent)
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

    Enqueue stores it in the job's metadata so the worker's ``backfill.job`` span
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
