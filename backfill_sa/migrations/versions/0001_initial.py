"""backfill_sa initial schema: jobs, queues, dead_letter_jobs, workers, leader.

Revision ID: bf0001
Revises:
Create Date: 2026-11-28

A frozen snapshot: it never imports backfill_sa.models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from backfill_sa.migrations.schema import target_schema

revision = "bf0001"
down_revision = None
branch_labels = ("backfill_sa",)
depends_on = None


def _ts(name: str, *, nullable: bool = False, default: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if default else None,
        nullable=nullable,
    )


def upgrade() -> None:
    schema = target_schema()
    # Only when missing: CREATE SCHEMA, even IF NOT EXISTS, needs CREATE on the
    # database, which a role owning a DBA-made schema does not have.
    op.execute(
        sa.text(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = "
            f"'{schema}') THEN EXECUTE 'CREATE SCHEMA \"{schema}\"'; END IF; END $$"
        )
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), server_default="bulk", nullable=False),
        sa.Column(
            "payload", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("priority", sa.SmallInteger(), server_default="0", nullable=False),
        _ts("run_at"),
        sa.Column("state", sa.Text(), server_default="available", nullable=False),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.SmallInteger(), server_default="8", nullable=False),
        sa.Column("job_key", sa.Text(), nullable=True),
        sa.Column("locked_by", sa.Text(), nullable=True),
        _ts("locked_at", nullable=True, default=False),
        sa.Column("lease", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", postgresql.JSONB(), nullable=True),
        sa.Column("retry_policy", postgresql.JSONB(), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("state IN ('available', 'scheduled', 'running')", name="ck_jobs_state"),
        sa.CheckConstraint("char_length(task) BETWEEN 1 AND 200", name="ck_jobs_task_length"),
        sa.CheckConstraint("char_length(queue) BETWEEN 1 AND 100", name="ck_jobs_queue_length"),
        sa.CheckConstraint("char_length(job_key) BETWEEN 1 AND 512", name="ck_jobs_job_key_length"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_jobs_max_attempts"),
        sa.CheckConstraint("attempts >= 0", name="ck_jobs_attempts"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        schema=schema,
        comment="backfill_sa jobs waiting to run or running",
    )
    # Storage parameters by ALTER TABLE: SQLAlchemy 2.0 (the newest on Python 3.10)
    # has no table-level postgresql_with.
    op.execute(
        f'ALTER TABLE "{schema}".jobs SET (fillfactor = 90,'
        " autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.02,"
        " autovacuum_analyze_scale_factor = 0.02)"
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["queue", "priority", "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("state = 'available'"),
    )
    op.create_index(
        "ix_jobs_scheduled",
        "jobs",
        ["run_at"],
        schema=schema,
        postgresql_where=sa.text("state = 'scheduled'"),
    )
    op.create_index(
        "ix_jobs_running",
        "jobs",
        ["locked_by", "locked_at"],
        schema=schema,
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "uq_jobs_job_key",
        "jobs",
        ["job_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("job_key IS NOT NULL"),
    )

    op.create_table(
        "queues",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="ck_queues_name_length"),
        sa.CheckConstraint("concurrency IS NULL OR concurrency >= 1", name="ck_queues_concurrency"),
        sa.PrimaryKeyConstraint("name", name="pk_queues"),
        schema=schema,
    )

    op.create_table(
        "dead_letter_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("original_job_id", sa.BigInteger(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("job_key", sa.Text(), nullable=True),
        sa.Column("max_attempts", sa.SmallInteger(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("last_error", postgresql.JSONB(), nullable=True),
        sa.Column("retry_policy", postgresql.JSONB(), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        _ts("original_created_at", default=False),
        _ts("original_run_at", default=False),
        _ts("failed_at"),
        sa.Column("requeued_count", sa.Integer(), server_default="0", nullable=False),
        _ts("last_requeued_at", nullable=True, default=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letter_jobs"),
        schema=schema,
    )
    op.create_index(
        "ix_dead_letter_jobs_failed_at", "dead_letter_jobs", ["failed_at"], schema=schema
    )
    op.create_index("ix_dead_letter_jobs_task", "dead_letter_jobs", ["task"], schema=schema)
    op.create_index("ix_dead_letter_jobs_queue", "dead_letter_jobs", ["queue"], schema=schema)

    op.create_table(
        "workers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", postgresql.JSONB(), nullable=False),
        _ts("started_at"),
        _ts("last_heartbeat_at"),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
        schema=schema,
    )
    op.create_index("ix_workers_last_heartbeat_at", "workers", ["last_heartbeat_at"], schema=schema)

    op.create_table(
        "leader",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=False),
        _ts("elected_at"),
        _ts("expires_at", default=False),
        sa.PrimaryKeyConstraint("name", name="pk_leader"),
        schema=schema,
    )


def downgrade() -> None:
    schema = target_schema()
    op.drop_table("leader", schema=schema)
    op.drop_table("workers", schema=schema)
    op.drop_table("dead_letter_jobs", schema=schema)
    op.drop_table("queues", schema=schema)
    op.drop_table("jobs", schema=schema)
