"""backfill_sa flow control: serial keys, global concurrency, rate limits.

Revision ID: bf0004_flow
Revises: bf0003_cron
Create Date: 2026-12-03

Adds ``jobs.serial_key`` and ``jobs.limited``, the limits on ``queues``, the
``job_locks`` and ``rate_tokens`` tables and the triggers that release a
flow-controlled job's locks when it leaves ``running``.

A frozen snapshot: it never imports backfill_sa.models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from backfill_sa.migrations.schema import target_schema

revision = "bf0004_flow"
down_revision = "bf0003_cron"
branch_labels = None
depends_on = None

_RELEASE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.job_locks_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM {schema}.job_locks WHERE job_id = OLD.id;
  RETURN NULL;
END $$"""

_RELEASE_TRIGGERS = (
    "CREATE TRIGGER jobs_release_on_update AFTER UPDATE OF state ON {schema}.jobs"
    " FOR EACH ROW WHEN (OLD.limited AND OLD.state = 'running' AND NEW.state <> 'running')"
    " EXECUTE FUNCTION {schema}.job_locks_release()",
    "CREATE TRIGGER jobs_release_on_delete AFTER DELETE ON {schema}.jobs"
    " FOR EACH ROW WHEN (OLD.limited AND OLD.state = 'running')"
    " EXECUTE FUNCTION {schema}.job_locks_release()",
)


def upgrade() -> None:
    schema = target_schema()
    quoted = f'"{schema}"'
    op.add_column("jobs", sa.Column("serial_key", sa.Text(), nullable=True), schema=schema)
    op.add_column(
        "jobs",
        sa.Column("limited", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=schema,
    )
    op.create_check_constraint(
        "ck_jobs_serial_key_length",
        "jobs",
        "char_length(serial_key) BETWEEN 1 AND 512",
        schema=schema,
    )
    op.create_index(
        "ix_jobs_serial",
        "jobs",
        ["serial_key", "priority", "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("state = 'available' AND serial_key IS NOT NULL"),
    )
    op.add_column("queues", sa.Column("global_concurrency", sa.Integer()), schema=schema)
    op.add_column("queues", sa.Column("partition_by", sa.Text()), schema=schema)
    op.add_column("queues", sa.Column("partition_concurrency", sa.Integer()), schema=schema)
    op.add_column("queues", sa.Column("rate_limit", sa.Integer()), schema=schema)
    op.add_column("queues", sa.Column("rate_period_ms", sa.BigInteger()), schema=schema)
    op.add_column(
        "queues",
        sa.Column(
            "rate_limit_per_partition",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
        ),
        schema=schema,
    )
    for name, condition in (
        ("global_concurrency", "global_concurrency IS NULL OR global_concurrency >= 1"),
        ("partition_concurrency", "partition_concurrency IS NULL OR partition_concurrency >= 1"),
        (
            "rate_limit",
            "(rate_limit IS NULL) = (rate_period_ms IS NULL) AND (rate_limit IS NULL OR"
            " (rate_limit >= 1 AND rate_period_ms >= 1))",
        ),
        (
            "partition_by",
            "partition_by IS NOT NULL OR (partition_concurrency IS NULL"
            " AND NOT rate_limit_per_partition)",
        ),
    ):
        op.create_check_constraint(f"ck_queues_{name}", "queues", condition, schema=schema)

    op.create_table(
        "job_locks",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("part", sa.Text(), nullable=True),
        sa.Column("part_slot", sa.Integer(), nullable=True),
        sa.Column("serial_key", sa.Text(), nullable=True),
        sa.Column(
            "locked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_locks"),
        schema=schema,
    )
    op.create_index(
        "uq_job_locks_queue_slot",
        "job_locks",
        ["queue", "slot"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("slot IS NOT NULL"),
    )
    op.create_index(
        "uq_job_locks_queue_part_part_slot",
        "job_locks",
        ["queue", "part", "part_slot"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("part_slot IS NOT NULL"),
    )
    op.create_index(
        "uq_job_locks_serial_key",
        "job_locks",
        ["serial_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("serial_key IS NOT NULL"),
    )
    op.create_table(
        "rate_tokens",
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("free_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "slot", name="pk_rate_tokens"),
        schema=schema,
    )
    op.execute(_RELEASE_FUNCTION.replace("{schema}", quoted))
    for trigger in _RELEASE_TRIGGERS:
        op.execute(trigger.replace("{schema}", quoted))


def downgrade() -> None:
    schema = target_schema()
    quoted = f'"{schema}"'
    op.execute(f"DROP TRIGGER IF EXISTS jobs_release_on_update ON {quoted}.jobs")
    op.execute(f"DROP TRIGGER IF EXISTS jobs_release_on_delete ON {quoted}.jobs")
    op.execute(f"DROP FUNCTION IF EXISTS {quoted}.job_locks_release()")
    op.drop_table("rate_tokens", schema=schema)
    op.drop_table("job_locks", schema=schema)
    for name in ("partition_by", "rate_limit", "partition_concurrency", "global_concurrency"):
        op.drop_constraint(f"ck_queues_{name}", "queues", schema=schema)
    for column in (
        "rate_limit_per_partition",
        "rate_period_ms",
        "rate_limit",
        "partition_concurrency",
        "partition_by",
        "global_concurrency",
    ):
        op.drop_column("queues", column, schema=schema)
    op.drop_index("ix_jobs_serial", "jobs", schema=schema)
    op.drop_constraint("ck_jobs_serial_key_length", "jobs", schema=schema)
    op.drop_column("jobs", "limited", schema=schema)
    op.drop_column("jobs", "serial_key", schema=schema)
