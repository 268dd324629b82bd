"""backfill_sa cron schedules: one row per schedule, the last tick handled.

Revision ID: bf0003_cron
Revises: bf0002_job_lifecycle
Create Date: 2026-12-03

A frozen snapshot: it never imports backfill_sa.models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from backfill_sa.migrations.schema import target_schema

revision = "bf0003_cron"
down_revision = "bf0002_job_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = target_schema()
    op.create_table(
        "cron_schedules",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 200", name="ck_cron_schedules_name_length"
        ),
        sa.PrimaryKeyConstraint("name", name="pk_cron_schedules"),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("cron_schedules", schema=target_schema())
