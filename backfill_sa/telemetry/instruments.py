"""The meter's instruments, and whether a provider collects anything at all."""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic

from opentelemetry import metrics

from backfill_sa.telemetry.vocabulary import Outcome

__all__ = ["Collecting", "Instruments"]

_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
_GLOBAL_CHECK_INTERVAL_S = 1.0


class Instruments:
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
            Outcome.CANCELLED: counter("jobs.cancelled", "Running jobs stopped on request."),
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


class Collecting:
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
