"""Declarative models for jobs, queues, the dead-letter queue and worker heartbeats.

The ORM classes are mapped onto the Core tables of :mod:`backfill_sa.tables` (the
schema's one definition), on the library's own :data:`metadata` (never the
application's ``Base``), in the PostgreSQL schema ``backfill``. Use them in your own
queries (``select(Job).where(Job.queue == "fast")``). To put the tables in another
schema for one deployment, map the name at connection level::

    engine = create_engine(url, execution_options={"schema_translate_map": {"backfill": "jobs"}})

and run the migrations with the same schema (``BACKFILL_SCHEMA=jobs``); see
``docs/schema.md``. The JSONB column ``metadata`` is the attribute ``meta`` (the name
``metadata`` belongs to the declarative base).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped

from backfill_sa.tables import (
    DEFAULT_SCHEMA,
    NAMING_CONVENTION,
    FailureReason,
    JobState,
    dead_letter_table,
    jobs_table,
    leader_table,
    metadata,
    queues_table,
    workers_table,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "NAMING_CONVENTION",
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


class Base(DeclarativeBase):
    """Declarative base of the library's models, bound to :data:`metadata`."""

    metadata = metadata


class Job(Base):
    """A job: waiting, running, or finished and retained (``backfill.jobs``); column docs
    in the table."""

    __table__ = jobs_table
    __mapper_args__ = {"properties": {"meta": jobs_table.c.metadata}}  # noqa: RUF012

    id: Mapped[int]
    task: Mapped[str]
    queue: Mapped[str]
    payload: Mapped[Any]
    priority: Mapped[int]
    run_at: Mapped[dt.datetime]
    state: Mapped[str]
    attempts: Mapped[int]
    max_attempts: Mapped[int]
    job_key: Mapped[str | None]
    locked_by: Mapped[str | None]
    locked_at: Mapped[dt.datetime | None]
    lease: Mapped[int]
    last_error: Mapped[Any | None]
    retry_policy: Mapped[Any | None]
    meta: Mapped[Any]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    result: Mapped[Any | None]
    finished_at: Mapped[dt.datetime | None]
    prune_at: Mapped[dt.datetime | None]
    cancel_requested_at: Mapped[dt.datetime | None]
    notify_finished: Mapped[bool]


class Queue(Base):
    """Per-queue settings (``backfill.queues``). A queue needs no row to be used."""

    __table__ = queues_table

    name: Mapped[str]
    paused: Mapped[bool]
    concurrency: Mapped[int | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class DeadLetterJob(Base):
    """A job that failed for good (``backfill.dead_letter_jobs``)."""

    __table__ = dead_letter_table
    __mapper_args__ = {"properties": {"meta": dead_letter_table.c.metadata}}  # noqa: RUF012

    id: Mapped[int]
    original_job_id: Mapped[int]
    task: Mapped[str]
    queue: Mapped[str]
    payload: Mapped[Any]
    priority: Mapped[int]
    job_key: Mapped[str | None]
    max_attempts: Mapped[int]
    failure_reason: Mapped[str]
    failure_count: Mapped[int]
    last_error: Mapped[Any | None]
    retry_policy: Mapped[Any | None]
    meta: Mapped[Any]
    original_created_at: Mapped[dt.datetime]
    original_run_at: Mapped[dt.datetime]
    failed_at: Mapped[dt.datetime]
    requeued_count: Mapped[int]
    last_requeued_at: Mapped[dt.datetime | None]
    notes: Mapped[str | None]


class Worker(Base):
    """A live (or recently live) worker process and its heartbeat (``backfill.workers``)."""

    __table__ = workers_table

    id: Mapped[str]
    hostname: Mapped[str]
    pid: Mapped[int]
    queues: Mapped[Any]
    started_at: Mapped[dt.datetime]
    last_heartbeat_at: Mapped[dt.datetime]


class LeaderLease(Base):
    """Which worker runs maintenance now (``backfill.leader``); no advisory locks."""

    __table__ = leader_table

    name: Mapped[str]
    worker_id: Mapped[str]
    elected_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]


# Importing the models registers the listeners that validate `session.add(Job(...))`
# and wake workers on commit (they need the classes above, hence at the end).
import backfill_sa.orm_jobs  # noqa: E402, F401
