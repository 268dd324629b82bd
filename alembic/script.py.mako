"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

A frozen snapshot: it never imports backfill_sa.models. Every object is created in
``schema = target_schema()`` so deployments can keep the tables in another schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from backfill_sa.migrations.schema import target_schema

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    schema = target_schema()
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    schema = target_schema()
    ${downgrades if downgrades else "pass"}
