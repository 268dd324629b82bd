"""Writing jobs through a sync Session: the one implementation behind every enqueue.

``enqueue`` calls :func:`write_job` / :func:`write_jobs` directly; ``enqueue_async``
runs the same functions on the AsyncSession's sync session (``run_sync``). Each uses
the session's own connection and transaction and never commits; the statements
come from :mod:`backfill_sa.statements.jobs_insert`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

from backfill_sa.errors import BackfillError, JobValidationError
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.statements.jobs_insert import (
    JOBS_INSERT_AFTER_RUNNING,
    JOBS_INSERT_BATCH,
    JOBS_INSERT_DEDUPE,
    JOBS_INSERT_ONE,
    JOBS_UPSERT_PRESERVE_RUN_AT,
    JOBS_UPSERT_REPLACE,
    encode_batch,
)
from backfill_sa.telemetry import current_trace_carrier
from backfill_sa.validation import JobRow, JobSpec

__all__ = [
    "BATCH_SIZE",
    "EnqueueOutcome",
    "EnqueueResult",
    "check_specs",
    "write_job",
    "write_jobs",
]

BATCH_SIZE = 5000
"""Jobs per statement in ``enqueue_many``."""

# Each extra round of the keyed path needs another transaction to change the same
# key between two of our statements; a handful of rounds is already pathological.
_MAX_KEY_ROUNDS = 5


class EnqueueOutcome(str, enum.Enum):
    """What an enqueue did."""

    INSERTED = "inserted"
    """A new job was written."""
    REPLACED = "replaced"
    """A waiting job with the same key was updated in place (same id)."""
    UNCHANGED = "unchanged"
    """``unsafe_dedupe``: a job with the key exists; it was left alone."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The job's id and what the enqueue did to it."""

    id: int
    outcome: EnqueueOutcome


_INSERTED = EnqueueOutcome.INSERTED


def _connection(session: Session) -> Connection:
    from backfill_sa.models import Job  # a Session user has the ORM loaded anyway

    return session.connection(bind_arguments={"mapper": Job})


def _traced(row: JobRow, carrier: dict[str, str]) -> JobRow:
    """Return ``row`` with the caller's trace context added to its metadata."""
    if not carrier:
        return row
    metadata = json.loads(row.metadata)
    for key, value in carrier.items():
        metadata.setdefault(key, value)
    return row._replace(metadata=json.dumps(metadata, separators=(",", ":")))


def _params(row: JobRow, channel: str) -> dict[str, object]:
    return {
        "new_task": row.task,
        "new_queue": row.queue,
        "new_payload": row.payload,
        "new_priority": row.priority,
        "new_run_at": row.run_at,
        "new_max_attempts": row.max_attempts,
        "new_job_key": row.job_key,
        "new_retry_policy": row.retry_policy,
        "new_metadata": row.metadata,
        "channel": channel,
    }


def _insert_one(conn: Connection, row: JobRow, channel: str) -> EnqueueResult:
    """Insert a job without a key (keyed jobs take :func:`_insert_keyed`)."""
    job_id: int = conn.execute(JOBS_INSERT_ONE, _params(row, channel)).scalar_one()
    return EnqueueResult(job_id, _INSERTED)


def _insert_keyed(
    conn: Connection, spec: JobSpec, channel: str, carrier: dict[str, str]
) -> EnqueueResult:
    params = _params(_traced(spec.row, carrier), channel)
    if spec.job_key_mode == "unsafe_dedupe":
        for _ in range(_MAX_KEY_ROUNDS):
            found = conn.execute(JOBS_INSERT_DEDUPE, params).first()
            if found is not None:
                outcome = _INSERTED if found.inserted else EnqueueOutcome.UNCHANGED
                return EnqueueResult(found.id, outcome)
    else:
        upsert = (
            JOBS_UPSERT_PRESERVE_RUN_AT
            if spec.job_key_mode == "preserve_run_at"
            else JOBS_UPSERT_REPLACE
        )
        for _ in range(_MAX_KEY_ROUNDS):
            found = conn.execute(upsert, params).first()
            if found is not None:
                outcome = _INSERTED if found.inserted else EnqueueOutcome.REPLACED
                return EnqueueResult(found.id, outcome)
            # The key is held by a running job: take it over (second statement).
            taken = conn.execute(JOBS_INSERT_AFTER_RUNNING, params).first()
            if taken is not None:
                return EnqueueResult(taken.id, _INSERTED)
    raise BackfillError(
        f"job_key: {spec.row.job_key!r} kept changing under concurrent enqueues; try again"
    )


def _insert_batch(conn: Connection, rows: list[JobRow], channel: str) -> list[EnqueueResult]:
    if len(rows) == 1:
        return [_insert_one(conn, rows[0], channel)]
    params = {"new_jobs": encode_batch(rows), "channel": channel}
    ids: list[int] = conn.execute(JOBS_INSERT_BATCH, params).one().ids
    if len(ids) != len(rows):
        raise BackfillError(f"enqueue_many: wrote {len(ids)} jobs for {len(rows)} specs")
    return [EnqueueResult(job_id, _INSERTED) for job_id in ids]


def write_job(session: Session, spec: JobSpec) -> EnqueueResult:
    """Write one job in ``session``'s transaction (see ``enqueue``)."""
    conn = _connection(session)
    channel = channel_for(schema_of(conn))
    carrier = current_trace_carrier()
    if spec.row.job_key is None:
        return _insert_one(conn, _traced(spec.row, carrier), channel)
    return _insert_keyed(conn, spec, channel, carrier)


def write_jobs(session: Session, specs: Iterable[JobSpec]) -> list[EnqueueResult]:
    """Write many jobs in ``session``'s transaction (see ``enqueue_many``).

    Raises:
        JobValidationError: an item is not a JobSpec (before any SQL).
    """
    checked = check_specs(specs)
    if not checked:
        return []
    conn = _connection(session)
    channel = channel_for(schema_of(conn))
    carrier = current_trace_carrier()
    results: list[EnqueueResult] = []
    pending: list[JobRow] = []
    for spec in checked:
        row = _traced(spec.row, carrier)
        if row.job_key is None:
            pending.append(row)
            if len(pending) == BATCH_SIZE:
                results += _insert_batch(conn, pending, channel)
                pending = []
        else:
            # Keyed jobs depend on the rows already there: one at a time, in order.
            if pending:
                results += _insert_batch(conn, pending, channel)
                pending = []
            results.append(_insert_keyed(conn, spec, channel, carrier))
    if pending:
        results += _insert_batch(conn, pending, channel)
    return results


def check_specs(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """Return ``specs`` as a list.

    Raises:
        JobValidationError: an item is not a JobSpec.
    """
    checked = list(specs)
    for index, spec in enumerate(checked):
        if not isinstance(spec, JobSpec):
            raise JobValidationError(f"specs[{index}]", "must be a JobSpec")
    return checked
