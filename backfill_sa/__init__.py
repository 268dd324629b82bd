"""backfill_sa: a PostgreSQL-backed priority job queue built as a SQLAlchemy 2.x extension.

Enqueue inside your own transaction, run jobs with a worker::

    from backfill_sa import TaskRegistry, enqueue

    registry = TaskRegistry()

    @registry.task("send_email", queue="fast")
    async def send_email(payload, ctx): ...

    with Session(engine) as session, session.begin():
        session.add(Order(...))
        enqueue(session, "send_email", {"order": 42})   # commits with the order

    # python -m backfill_sa worker --tasks myapp.jobs:registry

The worker lives in :mod:`backfill_sa.worker` (``WorkerRunner``), the dead-letter
queue API in :mod:`backfill_sa.dlq`, migrations in :mod:`backfill_sa.migrations`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from backfill_sa.config import WorkerConfig
from backfill_sa.errors import (
    BackfillError,
    ConfigurationError,
    InvalidPayloadError,
    JobValidationError,
    PermanentError,
    RetryableError,
    Snooze,
    UnknownTaskError,
)
from backfill_sa.flow import QueueLimits, set_queue_limits, set_queue_limits_async
from backfill_sa.priority import BULK, DEAD_LETTER, FAST, Priority
from backfill_sa.retry import AGGRESSIVE, CONSERVATIVE, DEFAULT, PRESETS, RetryPolicy
from backfill_sa.retry import FAST as FAST_RETRY
from backfill_sa.states import FailureReason, JobState
from backfill_sa.tasks import JobContext, Task, TaskRegistry
from backfill_sa.telemetry import Telemetry

if TYPE_CHECKING:
    from backfill_sa.client import BackfillClient, SyncBackfillClient
    from backfill_sa.enqueue import (
        EnqueueOutcome,
        EnqueueResult,
        JobSpec,
        enqueue,
        enqueue_async,
        enqueue_batch,
        enqueue_batch_async,
        enqueue_bulk,
        enqueue_bulk_async,
        enqueue_critical,
        enqueue_critical_async,
        enqueue_emergency,
        enqueue_emergency_async,
        enqueue_fast,
        enqueue_fast_async,
        enqueue_many,
        enqueue_many_async,
    )
    from backfill_sa.models import DeadLetterJob, Job, Queue
    from backfill_sa.worker import RunResult, WorkerRunner

__all__ = [
    "AGGRESSIVE",
    "BULK",
    "CONSERVATIVE",
    "DEAD_LETTER",
    "DEFAULT",
    "FAST",
    "FAST_RETRY",
    "PRESETS",
    "BackfillClient",
    "BackfillError",
    "ConfigurationError",
    "DeadLetterJob",
    "EnqueueOutcome",
    "EnqueueResult",
    "FailureReason",
    "InvalidPayloadError",
    "Job",
    "JobContext",
    "JobSpec",
    "JobState",
    "JobValidationError",
    "PermanentError",
    "Priority",
    "Queue",
    "QueueLimits",
    "RetryPolicy",
    "RetryableError",
    "RunResult",
    "Snooze",
    "SyncBackfillClient",
    "Task",
    "TaskRegistry",
    "Telemetry",
    "UnknownTaskError",
    "WorkerConfig",
    "WorkerRunner",
    "enqueue",
    "enqueue_async",
    "enqueue_bulk",
    "enqueue_bulk_async",
    "enqueue_critical",
    "enqueue_critical_async",
    "enqueue_emergency",
    "enqueue_emergency_async",
    "enqueue_fast",
    "enqueue_fast_async",
    "enqueue_batch",
    "enqueue_batch_async",
    "enqueue_many",
    "enqueue_many_async",
    "set_queue_limits",
    "set_queue_limits_async",
]


_LAZY = {
    "EnqueueOutcome": "backfill_sa.enqueue",
    "EnqueueResult": "backfill_sa.enqueue",
    "JobSpec": "backfill_sa.enqueue",
    "enqueue": "backfill_sa.enqueue",
    "enqueue_async": "backfill_sa.enqueue",
    "enqueue_bulk": "backfill_sa.enqueue",
    "enqueue_bulk_async": "backfill_sa.enqueue",
    "enqueue_critical": "backfill_sa.enqueue",
    "enqueue_critical_async": "backfill_sa.enqueue",
    "enqueue_emergency": "backfill_sa.enqueue",
    "enqueue_emergency_async": "backfill_sa.enqueue",
    "enqueue_fast": "backfill_sa.enqueue",
    "enqueue_fast_async": "backfill_sa.enqueue",
    "enqueue_batch": "backfill_sa.enqueue",
    "enqueue_batch_async": "backfill_sa.enqueue",
    "enqueue_many": "backfill_sa.enqueue",
    "enqueue_many_async": "backfill_sa.enqueue",
    "WorkerRunner": "backfill_sa.worker",
    "RunResult": "backfill_sa.worker",
    "Job": "backfill_sa.models",
    "Queue": "backfill_sa.models",
    "DeadLetterJob": "backfill_sa.models",
    "BackfillClient": "backfill_sa.client",
    "SyncBackfillClient": "backfill_sa.client",
}


def __getattr__(name: str) -> Any:
    """Load the enqueue API, the worker and the ORM models only when asked for.

    Enqueue-only apps never import the worker; a worker process never imports
    SQLAlchemy (it runs pre-rendered SQL on asyncpg), which keeps its memory down.

    Raises:
        AttributeError: ``name`` is not part of the package's API.
    """
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'backfill_sa' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    # Importing ``backfill_sa.enqueue`` binds the submodule to ``backfill_sa.enqueue``;
    # bind the module's API names over it, as an eager ``from ... import`` would.
    namespace = globals()
    for lazy_name, owner in _LAZY.items():
        if owner == module_name:
            namespace[lazy_name] = getattr(module, lazy_name)
    return namespace[name]


class _Package(types.ModuleType):
    """The package's module type: ``backfill_sa.enqueue`` stays the function.

    The function and its submodule share a name. Loading the submodule binds it to the
    package's attribute; with the enqueue API loaded lazily that can happen after
    ``from backfill_sa import enqueue`` would otherwise have found the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "enqueue" and isinstance(value, types.ModuleType):
            value = value.enqueue
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
