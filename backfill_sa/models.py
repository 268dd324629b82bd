"""Declarative models for jobs, queues, the dead-letter queue and worker heartbeats.

The models live on the library's own :data:`metadata` (never the application's
``Base``), in the PostgreSQL schema ``backfill``. To put the tables in another schema
for one deployment, map the name at connection level::

    engine = create_engine(url, execution_options={"schema_translate_map": {"backfill": "jobs"}})

and run the migrations with the same schema (``BACKFILL_SCHEMA=jobs``); see
``docs/schema.md``.

Job states (drawn in ``docs/state_machine.md``):

* ``available``: runnable once ``run_at`` has passed; the only rows the claim index holds;
* ``scheduled``: waiting for a future ``run_at`` (new jobs with a future ``run_at`` and
  jobs waiting out a retry backoff); promoted to ``available`` when due;
* ``running``: claimed by a worker (``locked_by``, ``locked_at``, ``lease``).

Finished jobs leave the table: a success deletes the row, a final failure moves it
to :class:`DeadLetterJob` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "DEFAULT_SCHEMA",
    "Base",
    "DeadLetterJob",
    "FailureReason",
    "Job",
    "JobState",
    "LeaderLease",
    "Queue",
    "Worker",
    "dead_letter_table",
    "jobs_table",
    "leader_table",
    "metadata",
    "queues_table",
    "workers_table",
]

DEFAULT_SCHEMA = "backfill"

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(schema=DEFAULT_SCHEMA, naming_convention=NAMING_CONVENTION)
"""The library's own MetaData; pass it to nothing of the application's."""


class JobState(str, enum.Enum):
    """States a row in ``backfill.jobs`` can be in."""

    AVAILABLE = "available"
    SCHEDULED = "scheduled"
    RUNNING = "running"


class FailureReason(str, enum.Enum):
    """Why a job ended in the dead-letter queue."""

    MAX_ATTEMPTS_EXCEEDED = "max_attempts_exceeded"
    PERMANENT_ERROR = "permanent_error"
    UNKNOWN_TASK = "unknown_task"
    INVALID_PAYLOAD = "invalid_payload"


def _utcnow_column(doc: str) -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), doc=doc)


class Base(DeclarativeBase):
    """Declarative base of the library's models, bound to :data:`metadata`."""

    metadata = metadata


class Job(Base):
    """A job waiting to run or running. Finished jobs are not kept here."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("state IN ('available', 'scheduled', 'running')", name="state"),
        CheckConstraint("char_length(task) BETWEEN 1 AND 200", name="task_length"),
        CheckConstraint("char_length(queue) BETWEEN 1 AND 100", name="queue_length"),
        CheckConstraint("char_length(job_key) BETWEEN 1 AND 512", name="job_key_length"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint("attempts >= 0", name="attempts"),
        # The claim index: only claimable rows, in claim order, so finding the next
        # job is a short index scan whatever the number of scheduled or running rows.
        Index(
            "ix_jobs_claim",
            "queue",
            "priority",
            "run_at",
            "id",
            postgresql_where=text("state = 'available'"),
        ),
        # Promotion of scheduled jobs that became due.
        Index("ix_jobs_scheduled", "run_at", postgresql_where=text("state = 'scheduled'")),
        # Rescue of jobs held by dead or stale workers.
        Index(
            "ix_jobs_running",
            "locked_by",
            "locked_at",
            postgresql_where=text("state = 'running'"),
        ),
        # job_key is unique among unfinished jobs, and every row here is unfinished.
        Index(
            "uq_jobs_job_key",
            "job_key",
            unique=True,
            postgresql_where=text("job_key IS NOT NULL"),
        ),
        {
            "comment": "backfill_sa jobs waiting to run or running",
            "postgresql_with": {
                "fillfactor": "90",
                "autovacuum_vacuum_scale_factor": "0.01",
                "autovacuum_vacuum_insert_scale_factor": "0.02",
                "autovacuum_analyze_scale_factor": "0.02",
            },
        },
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    """Job id, assigned by the database."""
    task: Mapped[str] = mapped_column(Text, doc="Name of the task handler (1-200 characters).")
    queue: Mapped[str] = mapped_column(
        Text, server_default="bulk", doc="Queue the job runs in (1-100 characters)."
    )
    payload: Mapped[Any] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), doc="JSON arguments handed to the handler."
    )
    priority: Mapped[int] = mapped_column(
        SmallInteger, server_default="0", doc="Lower runs first; smallint range."
    )
    run_at: Mapped[dt.datetime] = _utcnow_column("Earliest time the job may run.")
    state: Mapped[str] = mapped_column(
        Text, server_default="available", doc="available, scheduled or running."
    )
    attempts: Mapped[int] = mapped_column(
        SmallInteger, server_default="0", doc="Attempts started so far (snoozes excluded)."
    )
    max_attempts: Mapped[int] = mapped_column(
        SmallInteger, server_default="8", doc="Attempts allowed before the job is dead-lettered."
    )
    job_key: Mapped[str | None] = mapped_column(
        Text, doc="Idempotency key, unique among unfinished jobs."
    )
    locked_by: Mapped[str | None] = mapped_column(Text, doc="Id of the worker holding the job.")
    locked_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When the current claim was taken."
    )
    lease: Mapped[int] = mapped_column(
        Integer,
        server_default="0",
        doc="Claim counter, bumped by every claim; outcome writes must match it (the fence).",
    )
    last_error: Mapped[Any | None] = mapped_column(
        JSONB, doc="Last failure: type, message, traceback (bounded), attempt."
    )
    retry_policy: Mapped[Any | None] = mapped_column(
        JSONB, doc="Backoff settings chosen at enqueue; null means the task's or the default."
    )
    meta: Mapped[Any] = mapped_column(
        "metadata",
        JSONB,
        server_default=text("'{}'::jsonb"),
        doc="Free-form metadata: trace context, user tags.",
    )
    created_at: Mapped[dt.datetime] = _utcnow_column("When the job was enqueued.")
    updated_at: Mapped[dt.datetime] = _utcnow_column("Last change of state.")


class Queue(Base):
    """Per-queue settings. A queue needs no row to be used; a row pauses or limits it."""

    __tablename__ = "queues"
    __table_args__ = (
        CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
        CheckConstraint("concurrency IS NULL OR concurrency >= 1", name="concurrency"),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True, doc="Queue name.")
    paused: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false"), doc="Workers claim nothing from a paused queue."
    )
    concurrency: Mapped[int | None] = mapped_column(
        Integer, doc="Per-worker concurrency limit that overrides the worker's setting."
    )
    created_at: Mapped[dt.datetime] = _utcnow_column("When the row was created.")
    updated_at: Mapped[dt.datetime] = _utcnow_column("Last change.")


class DeadLetterJob(Base):
    """A job that failed for good: attempts exhausted, permanent error, unknown task."""

    __tablename__ = "dead_letter_jobs"
    __table_args__ = (
        Index("ix_dead_letter_jobs_failed_at", "failed_at"),
        Index("ix_dead_letter_jobs_task", "task"),
        Index("ix_dead_letter_jobs_queue", "queue"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    """Dead-letter entry id."""
    original_job_id: Mapped[int] = mapped_column(BigInteger, doc="Id the job had in jobs.")
    task: Mapped[str] = mapped_column(Text, doc="Task name.")
    queue: Mapped[str] = mapped_column(Text, doc="Queue the job ran in.")
    payload: Mapped[Any] = mapped_column(JSONB, doc="The job's payload.")
    priority: Mapped[int] = mapped_column(SmallInteger, doc="The job's priority.")
    job_key: Mapped[str | None] = mapped_column(Text, doc="The job's key, if any.")
    max_attempts: Mapped[int] = mapped_column(SmallInteger, doc="Attempts the job was allowed.")
    failure_reason: Mapped[str] = mapped_column(Text, doc="A FailureReason value.")
    failure_count: Mapped[int] = mapped_column(Integer, doc="Attempts that failed.")
    last_error: Mapped[Any | None] = mapped_column(JSONB, doc="type, message, traceback.")
    retry_policy: Mapped[Any | None] = mapped_column(JSONB, doc="The job's retry settings.")
    meta: Mapped[Any] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb"), doc="The job's metadata."
    )
    original_created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), doc="When the job was first enqueued."
    )
    original_run_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), doc="The job's last run_at."
    )
    failed_at: Mapped[dt.datetime] = _utcnow_column("When the job was dead-lettered.")
    requeued_count: Mapped[int] = mapped_column(
        Integer, server_default="0", doc="Times this entry was requeued."
    )
    last_requeued_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When it was last requeued."
    )
    notes: Mapped[str | None] = mapped_column(Text, doc="Operator notes.")


class Worker(Base):
    """A live (or recently live) worker process and its heartbeat."""

    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_last_heartbeat_at", "last_heartbeat_at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True, doc="Random id per process run.")
    hostname: Mapped[str] = mapped_column(Text, doc="Host the worker runs on.")
    pid: Mapped[int] = mapped_column(Integer, doc="Operating-system process id.")
    queues: Mapped[Any] = mapped_column(JSONB, doc="Queues and their concurrency.")
    started_at: Mapped[dt.datetime] = _utcnow_column("When the worker started.")
    last_heartbeat_at: Mapped[dt.datetime] = _utcnow_column("Last heartbeat.")


class LeaderLease(Base):
    """Which worker runs maintenance now; a row-level lease, no advisory locks."""

    __tablename__ = "leader"

    name: Mapped[str] = mapped_column(Text, primary_key=True, doc="Role, e.g. 'maintenance'.")
    worker_id: Mapped[str] = mapped_column(Text, doc="Worker holding the role.")
    elected_at: Mapped[dt.datetime] = _utcnow_column("When this worker took the role.")
    expires_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), doc="The role is free after this time unless renewed."
    )


def _table(model: type[Base]) -> Table:
    return metadata.tables[f"{DEFAULT_SCHEMA}.{model.__tablename__}"]


jobs_table = _table(Job)
"""``backfill.jobs`` as a Core ``Table``, for statement builders."""
queues_table = _table(Queue)
"""``backfill.queues`` as a Core ``Table``."""
dead_letter_table = _table(DeadLetterJob)
"""``backfill.dead_letter_jobs`` as a Core ``Table``."""
workers_table = _table(Worker)
"""``backfill.workers`` as a Core ``Table``."""
leader_table = _table(LeaderLease)
"""``backfill.leader`` as a Core ``Table``."""
