"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

A frozen snapshot: it never imports backfill_sa.models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from backfill_sa.migrations.schema import target_schema

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    schema = target_schema()
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    schema = target_schema()
    ${downgrades if downgrades else "pass"}
