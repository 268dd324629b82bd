"""The library's tables as SQLAlchemy Core ``Table`` objects on its own ``MetaData``.

This is the schema's single definition. :mod:`backfill_sa.models` maps ORM classes
onto these tables for applications; the statement builders use the tables directly,
and the worker runs their SQL rendered ahead of time
(:mod:`backfill_sa.statements.worker_sql`), so a worker process loads no SQLAlchemy.

Job states (drawn in ``docs/state_machine.md``):

* ``available``: runnable once ``run_at`` has passed; the only rows the claim index holds;
* ``scheduled``: waiting for a future ``run_at`` (new jobs with a future ``run_at`` and
  jobs waiting out a retry backoff); promoted to ``available`` when due;
* ``running``: claimed by a worker (``locked_by``, ``locked_at``, ``lease``);
* ``completed``: the handler succeeded (``result``, ``finished_at``);
* ``cancelled``: cancelled while waiting, or while running (``cancel_requested_at``).

Finished rows (``completed``, ``cancelled``) are kept until ``prune_at`` (their
retention period), then the maintenance leader deletes them; a retention of zero
deletes a succeeded job in the completing statement. A final failure moves the row
to ``dead_letter_jobs`` in the same statement. Every index the worker reads is
partial on an unfinished state, so retained rows never slow a claim.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from backfill_sa.schema_name import DEFAULT_SCHEMA
from backfill_sa.states import FailureReason, JobState

__all__ = [
    "DEFAULT_SCHEMA",
    "JOBS_STORAGE",
    "NAMING_CONVENTION",
    "UNFINISHED_KEY_PREDICATE",
    "FailureReason",
    "JobState",
    "dead_letter_table",
    "jobs_table",
    "leader_table",
    "metadata",
    "queues_table",
    "workers_table",
]


NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(schema=DEFAULT_SCHEMA, naming_convention=NAMING_CONVENTION)
"""The library's own MetaData; pass it to nothing of the application's."""


UNFINISHED_KEY_PREDICATE = "job_key IS NOT NULL AND state IN ('available', 'scheduled', 'running')"
"""Predicate of ``uq_jobs_job_key``; ``ON CONFLICT`` clauses must name it exactly."""


def _ts(name: str, doc: str, *, default_now: bool = False, nullable: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(
        name,
        DateTime(timezone=True),
        server_default=func.now() if default_now else None,
        nullable=nullable,
        doc=doc,
    )


def _json_object(name: str, doc: str) -> Column:  # type: ignore[type-arg]
    return Column(name, JSONB, server_default=text("'{}'::jsonb"), nullable=False, doc=doc)


jobs_table = Table(
    "jobs",
    metadata,
    Column(
        "id",
        BigInteger,
        Identity(always=False),
        primary_key=True,
        doc="Job id, assigned by the database.",
    ),
    Column("task", Text, nullable=False, doc="Name of the task handler (1-200 characters)."),
    Column(
        "queue",
        Text,
        server_default="bulk",
        nullable=False,
        doc="Queue the job runs in (1-100 characters).",
    ),
    _json_object("payload", "JSON arguments handed to the handler."),
    Column(
        "priority",
        SmallInteger,
        server_default="0",
        nullable=False,
        doc="Lower runs first; smallint range.",
    ),
    _ts("run_at", "Earliest time the job may run.", default_now=True),
    Column(
        "state",
        Text,
        server_default="available",
        nullable=False,
        doc="available, scheduled, running, completed or cancelled.",
    ),
    Column(
        "attempts",
        SmallInteger,
        server_default="0",
        nullable=False,
        doc="Attempts started so far (snoozes excluded).",
    ),
    Column(
        "max_attempts",
        SmallInteger,
        server_default="8",
        nullable=False,
        doc="Attempts allowed before the job is dead-lettered.",
    ),
    Column("job_key", Text, doc="Idempotency key, unique among unfinished jobs."),
    Column("locked_by", Text, doc="Id of the worker holding the job."),
    _ts("locked_at", "When the current claim was taken.", nullable=True),
    Column(
        "lease",
        Integer,
        server_default="0",
        nullable=False,
        doc="Claim counter, bumped by every claim; outcome writes must match it (the fence).",
    ),
    Column("last_error", JSONB, doc="Last failure: type, message, traceback (bounded), attempt."),
    Column(
        "retry_policy",
        JSONB,
        doc="Backoff settings chosen at enqueue; null means the task's or the default.",
    ),
    _json_object("metadata", "Free-form metadata: trace context, user tags."),
    _ts("created_at", "When the job was enqueued.", default_now=True),
    _ts("updated_at", "Last change of state.", default_now=True),
    Column("result", JSONB, doc="The handler's return value (JSON, size-capped), once completed."),
    _ts("finished_at", "When the job became completed or cancelled.", nullable=True),
    _ts("prune_at", "When a finished job may be deleted (end of its retention).", nullable=True),
    _ts("cancel_requested_at", "When cancelling the running job was asked for.", nullable=True),
    Column(
        "notify_finished",
        Boolean,
        server_default=text("false"),
        nullable=False,
        doc="Someone waits for this job (wait_for_job): announce its finish with a NOTIFY.",
    ),
    CheckConstraint(
        "state IN ('available', 'scheduled', 'running', 'completed', 'cancelled')", name="state"
    ),
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
    # job_key is unique among unfinished jobs; a retained finished job does not hold it.
    Index(
        "uq_jobs_job_key",
        "job_key",
        unique=True,
        postgresql_where=text(UNFINISHED_KEY_PREDICATE),
    ),
    # Pruning of finished jobs whose retention ended, oldest first, in small batches.
    Index(
        "ix_jobs_prune",
        "prune_at",
        postgresql_where=text("state IN ('completed', 'cancelled')"),
    ),
    # Looking a retained key up (job_key mode "period").
    Index(
        "ix_jobs_finished_key",
        "job_key",
        postgresql_where=text("job_key IS NOT NULL AND state IN ('completed', 'cancelled')"),
    ),
    comment="backfill_sa jobs: waiting, running, and finished ones kept for their retention",
)
"""``backfill.jobs``: jobs waiting, running, and finished ones kept until ``prune_at``."""

JOBS_STORAGE = (
    "fillfactor = 90, autovacuum_vacuum_scale_factor = 0.01,"
    " autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02"
)
"""Storage parameters of ``jobs``: room for in-page updates, and autovacuum that keeps
up with a table whose rows all die young. Set by ``ALTER TABLE ... SET`` after the
table is created (SQLAlchemy 2.0, the newest on Python 3.10, has no table-level
``postgresql_with``); the migration does the same."""

_SET_STORAGE = DDL(f"ALTER TABLE %(fullname)s SET ({JOBS_STORAGE})")  # type: ignore[no-untyped-call]
event.listen(jobs_table, "after_create", _SET_STORAGE)

queues_table = Table(
    "queues",
    metadata,
    Column("name", Text, primary_key=True, doc="Queue name."),
    Column(
        "paused",
        Boolean,
        server_default=text("false"),
        nullable=False,
        doc="Workers claim nothing from a paused queue.",
    ),
    Column(
        "concurrency",
        Integer,
        doc="Per-worker concurrency limit that overrides the worker's setting.",
    ),
    _ts("created_at", "When the row was created.", default_now=True),
    _ts("updated_at", "Last change.", default_now=True),
    CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
    CheckConstraint("concurrency IS NULL OR concurrency >= 1", name="concurrency"),
)
"""``backfill.queues``: per-queue settings; a queue needs no row to be used."""

dead_letter_table = Table(
    "dead_letter_jobs",
    metadata,
    Column(
        "id",
        BigInteger,
        Identity(always=False),
        primary_key=True,
        doc="Dead-letter entry id.",
    ),
    Column("original_job_id", BigInteger, nullable=False, doc="Id the job had in jobs."),
    Column("task", Text, nullable=False, doc="Task name."),
    Column("queue", Text, nullable=False, doc="Queue the job ran in."),
    Column("payload", JSONB, nullable=False, doc="The job's payload."),
    Column("priority", SmallInteger, nullable=False, doc="The job's priority."),
    Column("job_key", Text, doc="The job's key, if any."),
    Column("max_attempts", SmallInteger, nullable=False, doc="Attempts the job was allowed."),
    Column("failure_reason", Text, nullable=False, doc="A FailureReason value."),
    Column("failure_count", Integer, nullable=False, doc="Attempts that failed."),
    Column("last_error", JSONB, doc="type, message, traceback."),
    Column("retry_policy", JSONB, doc="The job's retry settings."),
    _json_object("metadata", "The job's metadata."),
    _ts("original_created_at", "When the job was first enqueued."),
    _ts("original_run_at", "The job's last run_at."),
    _ts("failed_at", "When the job was dead-lettered.", default_now=True),
    Column(
        "requeued_count",
        Integer,
        server_default="0",
        nullable=False,
        doc="Times this entry was requeued.",
    ),
    _ts("last_requeued_at", "When it was last requeued.", nullable=True),
    Column("notes", Text, doc="Operator notes."),
    Index("ix_dead_letter_jobs_failed_at", "failed_at"),
    Index("ix_dead_letter_jobs_task", "task"),
    Index("ix_dead_letter_jobs_queue", "queue"),
    Index("ix_dead_letter_jobs_original_job_id", "original_job_id"),
)
"""``backfill.dead_letter_jobs``: jobs that failed for good."""

workers_table = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True, doc="Random id per process run."),
    Column("hostname", Text, nullable=False, doc="Host the worker runs on."),
    Column("pid", Integer, nullable=False, doc="Operating-system process id."),
    Column("queues", JSONB, nullable=False, doc="Queues and their concurrency."),
    _ts("started_at", "When the worker started.", default_now=True),
    _ts("last_heartbeat_at", "Last heartbeat.", default_now=True),
    Index("ix_workers_last_heartbeat_at", "last_heartbeat_at"),
)
"""``backfill.workers``: live (or recently live) workers and their heartbeats."""

leader_table = Table(
    "leader",
    metadata,
    Column("name", Text, primary_key=True, doc="Role, e.g. 'maintenance'."),
    Column("worker_id", Text, nullable=False, doc="Worker holding the role."),
    _ts("elected_at", "When this worker took the role.", default_now=True),
    _ts("expires_at", "The role is free after this time unless renewed."),
)
"""``backfill.leader``: which worker runs maintenance now (a row lease)."""
