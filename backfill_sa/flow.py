"""Flow limits of a queue across all workers: global and per-partition concurrency, rates.

Limits live in the queue's ``backfill.queues`` row, where every worker reads them
(at start and at every heartbeat); a queue with any of them is claimed with the
flow-controlled claim (:mod:`backfill_sa.statements.jobs_flow`). Set them with
:func:`set_queue_limits` in your own transaction, or through
``WorkerConfig(queue_limits=...)`` (written by each worker at start)::

    set_queue_limits(session, "emails", global_concurrency=5)
    set_queue_limits(
        session,
        "api_calls",
        rate_limit=(10, timedelta(seconds=1)),
        partition_by="tenant_id",
        partition_concurrency=2,
    )

Serial keys need no setting: see ``enqueue(..., serial_key=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from backfill_sa.errors import ConfigurationError
from backfill_sa.validation import QUEUE_MAX_LENGTH, check_name

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["QueueLimits", "set_queue_limits", "set_queue_limits_async"]

_INT_MAX = 2_147_483_647


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _INT_MAX:
        raise ConfigurationError(name, "must be None or a whole number of at least 1")
    return value


@dataclass(frozen=True)
class QueueLimits:
    """A queue's flow limits, enforced across all workers; ``None`` means no limit.

    Args:
        global_concurrency: most jobs of the queue running at once, all workers
            together (each worker's own ``queues`` concurrency still applies).
        partition_by: a payload field (top level) whose value splits the queue into
            partitions; jobs without it belong to no partition.
        partition_concurrency: most jobs of one partition running at once.
        rate_limit: ``(n, period)``: at most ``n`` jobs start in any window of
            ``period`` (at least 1 ms), for the queue or, with
            ``rate_limit_per_partition``, for each partition.
        rate_limit_per_partition: apply ``rate_limit`` to each partition.

    Raises:
        ConfigurationError: a value breaks its rule (the message names it).
    """

    global_concurrency: int | None = None
    partition_by: str | None = None
    partition_concurrency: int | None = None
    rate_limit: tuple[int, timedelta] | None = None
    rate_limit_per_partition: bool = False

    def __post_init__(self) -> None:
        _count("global_concurrency", self.global_concurrency)
        _count("partition_concurrency", self.partition_concurrency)
        if self.partition_by is not None and (
            not isinstance(self.partition_by, str) or not 1 <= len(self.partition_by) <= 200
        ):
            raise ConfigurationError("partition_by", "must be None or a payload field name")
        if self.rate_limit is not None:
            if not isinstance(self.rate_limit, tuple) or len(self.rate_limit) != 2:
                raise ConfigurationError("rate_limit", "must be None or (count, timedelta)")
            count, period = self.rate_limit
            _count("rate_limit", count)
            if not isinstance(period, timedelta) or period < timedelta(milliseconds=1):
                raise ConfigurationError("rate_limit", "period must be a timedelta of 1 ms or more")
        needs_partition = self.partition_concurrency is not None or self.rate_limit_per_partition
        if needs_partition and self.partition_by is None:
            raise ConfigurationError(
                "partition_by", "is required by partition_concurrency and rate_limit_per_partition"
            )
        if self.rate_limit_per_partition and self.rate_limit is None:
            raise ConfigurationError("rate_limit_per_partition", "needs a rate_limit")

    @property
    def any(self) -> bool:
        """Whether any limit is set (the queue then uses the flow-controlled claim)."""
        return (
            self.global_concurrency is not None
            or self.partition_concurrency is not None
            or self.rate_limit is not None
        )

    def params(self, queue: str) -> dict[str, Any]:
        """The parameters of ``queue_set_limits`` for ``queue``.

        Raises:
            JobValidationError: ``queue`` is not a valid queue name.
        """
        count, period = self.rate_limit if self.rate_limit is not None else (None, None)
        period_ms = None if period is None else max(1, round(period / timedelta(milliseconds=1)))
        return {
            "queue_name": check_name("queue", queue, QUEUE_MAX_LENGTH),
            "global_concurrency": self.global_concurrency,
            "partition_by": self.partition_by,
            "partition_concurrency": self.partition_concurrency,
            "rate_limit": count,
            "rate_period_ms": period_ms,
            "rate_limit_per_partition": self.rate_limit_per_partition,
        }


def set_queue_limits(session: Session, queue: str, **limits: Any) -> QueueLimits:
    """Set ``queue``'s flow limits in ``session``'s transaction (replacing all of them).

    Takes :class:`QueueLimits` fields as keywords; a field left out clears that limit.
    Workers pick the change up within one heartbeat interval of the commit.

    Example::

        with Session(engine) as session, session.begin():
            set_queue_limits(session, "emails", global_concurrency=5)

    Raises:
        ConfigurationError: a limit breaks its rule; nothing is written.
        JobValidationError: ``queue`` is not a valid queue name; nothing is written.
        sqlalchemy.exc.DBAPIError: the database refused the statement.
    """
    from backfill_sa.statements.workers import queue_set_limits

    settings = QueueLimits(**limits)
    session.execute(queue_set_limits, settings.params(queue))
    return settings


async def set_queue_limits_async(session: AsyncSession, queue: str, **limits: Any) -> QueueLimits:
    """:func:`set_queue_limits` for an AsyncSession.

    Raises:
        ConfigurationError: a limit breaks its rule; nothing is written.
        JobValidationError: ``queue`` is not a valid queue name; nothing is written.
        sqlalchemy.exc.DBAPIError: the database refused the statement.
    """
    return await session.run_sync(lambda sync: set_queue_limits(sync, queue, **limits))


def limits_from_mapping(value: Mapping[str, QueueLimits]) -> dict[str, QueueLimits]:
    """Check a ``queue -> QueueLimits`` mapping (``WorkerConfig.queue_limits``).

    Raises:
        ConfigurationError: a value is not a QueueLimits or a name is not a string.
    """
    checked: dict[str, QueueLimits] = {}
    for name, limits in value.items():
        if not isinstance(name, str) or not 1 <= len(name) <= QUEUE_MAX_LENGTH:
            raise ConfigurationError(
                "queue_limits", f"queue name {name!r} must be 1-100 characters"
            )
        if not isinstance(limits, QueueLimits):
            raise ConfigurationError(f"queue_limits[{name}]", "must be a QueueLimits")
        checked[name] = limits
    return checked
