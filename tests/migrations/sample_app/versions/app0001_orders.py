"""The sample application's first revision: orders, and a hand-managed audit table.

Revision ID: app0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "app0001"
down_revision = None
branch_labels = ("app",)
depends_on = None

# A real application names its schema; the tests give each run its own.
SCHEMA = os.environ["APP_SCHEMA"]


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer", sa.String(200), nullable=False),
        sa.Column("total", sa.Numeric(12, 2), nullable=False),
        schema=SCHEMA,
    )
    op.create_table("legacy_audit", sa.Column("line", sa.Text()), schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("legacy_audit", schema=SCHEMA)
    op.drop_table("orders", schema=SCHEMA)
