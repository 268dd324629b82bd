"""Worker configuration: a frozen, validated dataclass and its environment reader."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from backfill_sa.errors import ConfigurationError
from backfill_sa.priority import BULK, FAST
from backfill_sa.schema_name import DEFAULT_SCHEMA, SCHEMA_NAME_PATTERN

__all__ = ["DEFAULT_RETENTION", "MIN_STALE_JOB_LOCK_TIMEOUT", "WorkerConfig"]

MIN_STALE_JOB_LOCK_TIMEOUT = timedelta(minutes=5)
_QUEUE_NAME_MAX = 100

DEFAULT_RETENTION = timedelta(hours=24)
"""How long finished jobs are kept by default (River's default)."""


def _default_queues() -> Mapping[str, int]:
    return MappingProxyType({FAST: 10, BULK: 5})


def _not_negative(name: str, value: timedelta) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ConfigurationError(name, "must be a timedelta of zero or more")


def _positive(name: str, value: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigurationError(name, "must be a timedelta above zero")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a :class:`~backfill_sa.worker.WorkerRunner` needs besides the tasks.

    Args:
        database_url: PostgreSQL URL (plain ``postgresql://`` or any SQLAlchemy form).
        schema: schema holding the tables (default ``backfill``).
        queues: queue name -> concurrency (jobs of that queue running at once in this
            process). Default ``{"fast": 10, "bulk": 5}``.
        poll_interval: fallback polling period when no NOTIFY arrives (200 ms).
        stale_lock_cleanup_interval: how often the leader rescues stale claims (60 s);
            ``None`` disables periodic cleanup (it still runs once at startup).
        stale_queue_lock_timeout: kept for compatibility with backfill's settings (5 min).
            backfill_sa takes no queue-level locks (concurrency is a per-process
            limit, and the maintenance leader's lease expires after
            ``heartbeat_expiry``), so there is nothing for it to clean; it is
            validated and otherwise unused.
        stale_job_lock_timeout: age after which any job claim is rescued even if its
            worker still heartbeats (30 min; at least 5 min).
        shutdown_timeout: how long running jobs may finish after a stop request (30 s).
        heartbeat_interval: how often the worker records it is alive (10 s).
        heartbeat_expiry: silence after which a worker counts as dead (60 s).
        batch_size: most jobs claimed per statement (defaults to the free slots, capped
            here; 100).
        worker_id: fixed worker id (default: random per run).
        listen_url: URL of a direct connection for LISTEN (``BACKFILL_LISTEN_URL``),
            for a ``database_url`` that goes through a pooler; default: none, LISTEN
            then uses ``database_url`` unless ``pooled``.
        pooled: ``database_url`` goes through a transaction-pooling proxy such as
            PgBouncer with ``pool_mode = transaction`` (``BACKFILL_POOLED=1``): the
            worker keeps no prepared statements across statements, and LISTEN runs on
            ``listen_url`` only; without one the worker polls every ``poll_interval``
            and logs one warning saying so.
        retention: how long finished jobs (``completed``, ``cancelled``) are kept
            before the maintenance leader prunes them (24 h); ``timedelta(0)`` deletes
            a succeeded job in the statement that completes it. A task's own
            ``retention`` wins, then ``queue_retention``.
        queue_retention: queue name -> retention for that queue's jobs.
        max_result_bytes: largest handler return value stored, as JSON UTF-8 bytes
            (64 KiB); a bigger or non-JSON value is recorded as the job's error.
        prune_batch_size: most finished jobs deleted per pruning statement (1000).

    Raises:
        ConfigurationError: a field breaks its rule; the message names it.
    """

    database_url: str
    schema: str = DEFAULT_SCHEMA
    queues: Mapping[str, int] = field(default_factory=_default_queues)
    poll_interval: timedelta = timedelta(milliseconds=200)
    stale_lock_cleanup_interval: timedelta | None = timedelta(seconds=60)
    stale_queue_lock_timeout: timedelta = timedelta(minutes=5)
    stale_job_lock_timeout: timedelta = timedelta(minutes=30)
    shutdown_timeout: timedelta = timedelta(seconds=30)
    heartbeat_interval: timedelta = timedelta(seconds=10)
    heartbeat_expiry: timedelta = timedelta(seconds=60)
    batch_size: int = 100
    worker_id: str | None = None
    listen_url: str | None = None
    pooled: bool = False
    retention: timedelta = DEFAULT_RETENTION
    queue_retention: Mapping[str, timedelta] = field(default_factory=lambda: MappingProxyType({}))
    max_result_bytes: int = 65_536
    prune_batch_size: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.database_url, str) or not self.database_url:
            raise ConfigurationError("database_url", "must be a non-empty PostgreSQL URL")
        if self.listen_url is not None and (
            not isinstance(self.listen_url, str) or not self.listen_url
        ):
            raise ConfigurationError("listen_url", "must be a non-empty PostgreSQL URL or None")
        if not isinstance(self.pooled, bool):
            raise ConfigurationError("pooled", "must be True or False")
        if not SCHEMA_NAME_PATTERN.match(self.schema):
            raise ConfigurationError(
                "schema", "must be 1-63 lower-case letters, digits or underscores"
            )
        if not self.queues:
            raise ConfigurationError("queues", "must name at least one queue")
        for name, limit in self.queues.items():
            if not isinstance(name, str) or not 1 <= len(name) <= _QUEUE_NAME_MAX:
                raise ConfigurationError("queues", f"queue name {name!r} must be 1-100 characters")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigurationError(
                    f"queues[{name}]", "concurrency must be an integer of at least 1"
                )
        object.__setattr__(self, "queues", MappingProxyType(dict(self.queues)))
        _positive("poll_interval", self.poll_interval)
        if self.stale_lock_cleanup_interval is not None:
            _positive("stale_lock_cleanup_interval", self.stale_lock_cleanup_interval)
        _positive("stale_queue_lock_timeout", self.stale_queue_lock_timeout)
        _positive("shutdown_timeout", self.shutdown_timeout)
        _positive("heartbeat_interval", self.heartbeat_interval)
        _positive("heartbeat_expiry", self.heartbeat_expiry)
        if not isinstance(self.stale_job_lock_timeout, timedelta) or (
            self.stale_job_lock_timeout < MIN_STALE_JOB_LOCK_TIMEOUT
        ):
            raise ConfigurationError(
                "stale_job_lock_timeout",
                "must be at least 5 minutes, so that a healthy long job is not run twice",
            )
        if self.heartbeat_expiry <= self.heartbeat_interval:
            raise ConfigurationError("heartbeat_expiry", "must be longer than heartbeat_interval")
        if isinstance(self.batch_size, bool) or not 1 <= self.batch_size <= 10_000:
            raise ConfigurationError("batch_size", "must be an integer from 1 to 10000")
        _not_negative("retention", self.retention)
        for name, keep in self.queue_retention.items():
            _not_negative(f"queue_retention[{name}]", keep)
        object.__setattr__(self, "queue_retention", MappingProxyType(dict(self.queue_retention)))
        if isinstance(self.max_result_bytes, bool) or not (
            isinstance(self.max_result_bytes, int) and 0 <= self.max_result_bytes <= 2**28
        ):
            raise ConfigurationError("max_result_bytes", "must be an integer from 0 to 2**28")
        if isinstance(self.prune_batch_size, bool) or not (
            isinstance(self.prune_batch_size, int) and 1 <= self.prune_batch_size <= 100_000
        ):
            raise ConfigurationError("prune_batch_size", "must be an integer from 1 to 100000")

    def retention_for(self, queue: str) -> timedelta:
        """Return how long finished jobs of ``queue`` are kept (no task override)."""
        return self.queue_retention.get(queue, self.retention)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> WorkerConfig:
        """Build a config from environment variables, then apply ``overrides``.

        Reads ``DATABASE_URL``, ``BACKFILL_LISTEN_URL``, ``BACKFILL_POOLED`` (``1``,
        ``true``, ``yes`` or ``on``; ``0``, ``false``, ``no``, ``off`` or empty),
        ``BACKFILL_SCHEMA``, ``FAST_QUEUE_CONCURRENCY`` (10),
        ``BULK_QUEUE_CONCURRENCY`` (5), ``POLL_INTERVAL_MS`` (200) and
        ``SHUTDOWN_TIMEOUT_SECS`` (30). Keyword overrides (for example from command-line
        flags) win over the environment.

        Args:
            env: the variables to read (default ``os.environ``).
            **overrides: field values that replace what the environment says.

        Raises:
            ConfigurationError: a variable is not a number (or a yes/no) where one is
                needed, or a
                resulting field breaks its rule; ``DATABASE_URL`` is missing and no
                ``database_url`` override is given.
        """
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        if source.get("DATABASE_URL"):
            values["database_url"] = source["DATABASE_URL"]
        if source.get("BACKFILL_LISTEN_URL"):
            values["listen_url"] = source["BACKFILL_LISTEN_URL"]
        if "BACKFILL_POOLED" in source:
            values["pooled"] = _env_bool(source, "BACKFILL_POOLED")
        if source.get("BACKFILL_SCHEMA"):
            values["schema"] = source["BACKFILL_SCHEMA"]
        queues = {
            FAST: _env_int(source, "FAST_QUEUE_CONCURRENCY", 10),
            BULK: _env_int(source, "BULK_QUEUE_CONCURRENCY", 5),
        }
        values["queues"] = queues
        if "POLL_INTERVAL_MS" in source:
            values["poll_interval"] = timedelta(
                milliseconds=_env_int(source, "POLL_INTERVAL_MS", 200)
            )
        if "SHUTDOWN_TIMEOUT_SECS" in source:
            values["shutdown_timeout"] = timedelta(
                seconds=_env_int(source, "SHUTDOWN_TIMEOUT_SECS", 30)
            )
        values.update(overrides)
        if "database_url" not in values or not values["database_url"]:
            raise ConfigurationError("DATABASE_URL", "is not set; set it to a postgresql:// URL")
        return cls(**values)  # type: ignore[arg-type]


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigurationError(name, f"must be a whole number, got {raw!r}") from None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(name, f"must be 1/true/yes/on or 0/false/no/off, got {raw!r}")
