"""The worker runtime: claim, run, complete, retry, dead-letter, rescue, shut down."""

from __future__ import annotations

from backfill_sa.worker.completer import RunResult
from backfill_sa.worker.runner import WorkerHandle, WorkerRunner

__all__ = ["RunResult", "WorkerHandle", "WorkerRunner"]
