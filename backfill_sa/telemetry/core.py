"""Telemetry: one application's metrics and spans, from the providers it is given."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
)

from backfill_sa.telemetry.gauges import QueueGauges, QueueSnapshot
from backfill_sa.telemetry.instruments import Collecting, Instruments
from backfill_sa.telemetry.spans import _IDLE_JOB_SPAN, EnqueueSpan, JobSpan
from backfill_sa.telemetry.vocabulary import (
    DB_OPERATIONS,
    INSTRUMENTATION_NAME,
    MESSAGING_SYSTEM,
    ClaimedJob,
    Outcome,
    OutcomeKey,
)

__all__ = ["Telemetry", "default_telemetry"]

_ATTRIBUTE_CACHE_LIMIT = 4096


class _MetadataGetter(Getter[Mapping[str, object]]):
    """Reads propagation fields from job metadata; non-string values are ignored."""

    def get(self, carrier: Mapping[str, object], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, object]) -> list[str]:
        return [k for k, v in carrier.items() if isinstance(v, str)]


_GETTER = _MetadataGetter()


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
        self._metering = Collecting(
            meters, metrics.NoOpMeterProvider, _ProxyMeterProvider, metrics.get_meter_provider
        )
        tracers = tracer_provider or trace.get_tracer_provider()
        self._tracer = tracers.get_tracer(INSTRUMENTATION_NAME)
        self._tracing = Collecting(
            tracers, NoOpTracerProvider, ProxyTracerProvider, trace.get_tracer_provider
        )
        self._propagator = propagator or propagate.get_global_textmap()
        self._fields = frozenset(self._propagator.fields)
        self._instruments = Instruments(meter)
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self._running_sources: list[Callable[[], Mapping[str, int]]] = []
        meter.create_observable_up_down_counter(
            "backfill.jobs.running",
            callbacks=[self._observe_running],
            unit="{job}",
            description="Jobs running now in this process, per queue.",
        )
        self._gauges = QueueGauges(meter)

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

    def trace_carrier(self) -> dict[str, str]:
        """Return :meth:`inject_context` when a span is current, else ``{}`` at once.

        What enqueue stores in a job's metadata: costs well under a microsecond
        when no span is active (no SDK, or no request span).
        """
        if not trace.get_current_span().get_span_context().is_valid:
            return {}
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    def extract_context(self, metadata: Mapping[str, object] | None) -> Context | None:
        """Return the trace context stored in a job's metadata, or None if it has none."""
        if not metadata or self._fields.isdisjoint(metadata):
            return None
        return self._propagator.extract(metadata, context=Context(), getter=_GETTER)

    # -- spans --------------------------------------------------------------------------

    def enqueue_span(
        self, task: str | None, queue: str | None, *, count: int = 1, batch: bool = False
    ) -> EnqueueSpan:
        """Return a context manager for a ``send {queue}`` span (kind PRODUCER).

        The span is current inside the block, so :meth:`inject_context` links the job
        to it. For a batch of mixed tasks or queues pass ``None`` and the job count;
        ``batch`` marks a batch call even when it holds one job.
        """
        if not self.tracing:
            return EnqueueSpan(None, {}, "")
        attributes: dict[str, str | int] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
            attributes["backfill.job.queue"] = queue
        if task is not None:
            attributes["backfill.job.task"] = task
        if count != 1 or batch:
            attributes["messaging.batch.message_count"] = count
        return EnqueueSpan(self._tracer, attributes, "send" if queue is None else f"send {queue}")

    def job_span(
        self,
        *,
        job_id: int,
        task: str,
        queue: str,
        attempt: int,
        metadata: Mapping[str, object] | None = None,
    ) -> JobSpan:
        """Return a context manager around one attempt of a job (span ``process {queue}``).

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

    def record_enqueued(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Count enqueued jobs, given as ``{EnqueueKey(task, queue, outcome): n}``.

        ``outcome`` is what the enqueue did: ``inserted``, ``replaced`` or ``unchanged``.
        """
        add = self._instruments.enqueued.add
        for (task, queue, outcome), n in counts.items():
            add(n, self._cached("enq", task, queue, outcome))

    def record_enqueue(self, task: str, queue: str, outcome: str) -> None:
        """Count one enqueued job (:meth:`record_enqueued` for a single call)."""
        self._instruments.enqueued.add(1, self._cached("enq", task, queue, outcome))

    # -- database operations --------------------------------------------------------

    def db_attributes(self, operation: str) -> dict[str, str]:
        """Return the attribute dict of a worker database operation (cache it).

        A name outside :data:`~backfill_sa.telemetry.vocabulary.DB_OPERATIONS`
        becomes ``other``, so the attribute's values stay a fixed, small set.
        """
        return {"operation": operation if operation in DB_OPERATIONS else "other"}

    def record_db_operation(self, attributes: Mapping[str, str], seconds: float) -> None:
        """Record the duration of one worker statement (``backfill.db.operation.duration``).

        Args:
            attributes: from :meth:`db_attributes`.
            seconds: how long the statement took, retries included.
        """
        self._instruments.db_duration.record(seconds, attributes)

    def record_transient_error(self, attributes: Mapping[str, str]) -> None:
        """Count one transient database error (``backfill.db.transient_errors``)."""
        self._instruments.db_transient_errors.add(1, attributes)

    def record_reconnect(self, connection: str) -> None:
        """Count a connection opened again after one was lost (``pool`` or ``listen``)."""
        self._instruments.db_reconnects.add(1, {"connection": connection})

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

    def watch_queues(self, source: Callable[[], QueueSnapshot | None]) -> Callable[[], None]:
        """Report ``source()`` as the queue gauges (``backfill.queue.jobs``, ...).

        ``source`` is called by the SDK's metric reader at each collection, possibly
        from another thread: it must return a snapshot already taken (or None when it
        has none), never query the database.

        Returns:
            A function that stops reporting this source.
        """
        sources = self._gauges.sources
        sources.append(source)

        def unwatch() -> None:
            if source in sources:
                sources.remove(source)

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
            elif kind in ("dur", "enq"):
                attributes["outcome"] = extra
            self._attributes[key] = attributes
        return attributes

    def _record_duration(self, task: str, queue: str, outcome: str, seconds: float) -> None:
        self._instruments.duration.record(seconds, self._cached("dur", task, queue, outcome))


@functools.cache
def default_telemetry() -> Telemetry:
    """Return the :class:`Telemetry` on the OpenTelemetry API's global providers.

    What enqueue and the worker use when they are given no ``telemetry``. It is made
    on first use and shared, because the SDK keeps one instrument per name and
    provider: a second ``Telemetry()`` on the same global provider would get the
    first one's instruments and lose its own gauge callbacks. It follows the API's
    globals (a provider installed later is picked up); pass your own
    :class:`Telemetry` to keep a setup apart from them.
    """
    return Telemetry()
