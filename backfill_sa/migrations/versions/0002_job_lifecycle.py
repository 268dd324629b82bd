"""Job lifecycle: finished jobs kept (completed, cancelled), results, retention, cancel.

Revision ID: bf0002_job_lifecycle
Revises: bf0001
Create Date: 2026-12-03

Adds ``result``, ``finished_at``, ``prune_at``, ``cancel_requested_at`` and
``notify_finished`` to ``jobs``, the states ``completed`` and ``cancelled``, the pruning index, and makes
``job_key`` unique among unfinished jobs only (a retained finished job does not
hold its key). A frozen snapshot: it never imports backfill_sa.models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from backfill_sa.migrations.schema import target_schema

revision = "bf0002_job_lifecycle"
down_revision = "bf0001"
branch_labels = None
depends_on = None

_UNFINISHED_KEY = "job_key IS NOT NULL AND state IN ('available', 'scheduled', 'running')"
_FINISHED = "state IN ('completed', 'cancelled')"


def _ts(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    schema = target_schema()
    op.add_column("jobs", sa.Column("result", postgresql.JSONB(), nullable=True), schema=schema)
    op.add_column("jobs", _ts("finished_at"), schema=schema)
    op.add_column("jobs", _ts("prune_at"), schema=schema)
    op.add_column("jobs", _ts("cancel_requested_at"), schema=schema)
    op.add_column(
        "jobs",
        sa.Column("notify_finished", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=schema,
    )
    op.drop_constraint("ck_jobs_state", "jobs", schema=schema, type_="check")
    op.create_check_constraint(
        "ck_jobs_state",
        "jobs",
        "state IN ('available', 'scheduled', 'running', 'completed', 'cancelled')",
        schema=schema,
    )
    op.drop_index("uq_jobs_job_key", "jobs", schema=schema)
    op.create_index(
        "uq_jobs_job_key",
        "jobs",
        ["job_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text(_UNFINISHED_KEY),
    )
    op.create_index(
        "ix_jobs_prune", "jobs", ["prune_at"], schema=schema, postgresql_where=sa.text(_FINISHED)
    )
    op.create_index(
        "ix_jobs_finished_key",
        "jobs",
        ["job_key"],
        schema=schema,
        postgresql_where=sa.text(f"job_key IS NOT NULL AND {_FINISHED}"),
    )
    op.create_index(
        "ix_dead_letter_jobs_original_job_id",
        "dead_letter_jobs",
        ["original_job_id"],
        schema=schema,
    )
    op.execute(
        f'COMMENT ON TABLE "{schema}".jobs IS '
        "'backfill_sa jobs: waiting, running, and finished ones kept for their retention'"
    )


def downgrade() -> None:
    schema = target_schema()
    # Finished rows cannot exist under the old schema: drop them first.
    op.execute(f'DELETE FROM "{schema}".jobs WHERE {_FINISHED}')
    op.drop_index("ix_dead_letter_jobs_original_job_id", "dead_letter_jobs", schema=schema)
    op.drop_index("ix_jobs_finished_key", "jobs", schema=schema)
    op.drop_index("ix_jobs_prune", "jobs", schema=schema)
    op.drop_index("uq_jobs_job_key", "jobs", schema=schema)
    op.create_index(
        "uq_jobs_job_key",
        "jobs",
        ["job_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("job_key IS NOT NULL"),
    )
    op.drop_constraint("ck_jobs_state", "jobs", schema=schema, type_="check")
    op.create_check_constraint(
        "ck_jobs_state", "jobs", "state IN ('available', 'scheduled', 'running')", schema=schema
    )
    for name in ("notify_finished", "cancel_requested_at", "prune_at", "finished_at", "result"):
        op.drop_column("jobs", name, schema=schema)
    op.execute(
        f"COMMENT ON TABLE \"{schema}\".jobs IS 'backfill_sa jobs waiting to run or running'"
    )
