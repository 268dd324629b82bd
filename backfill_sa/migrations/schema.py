"""Which PostgreSQL schema the shipped migrations write to.

Revisions call :func:`target_schema` instead of naming ``backfill`` so that one
deployment can keep the tables elsewhere. The name is taken from, in order: the
Alembic config attribute ``backfill_schema`` (set by :func:`backfill_sa.migrations.upgrade`
and the CLI), ``-x backfill_schema=NAME`` on the ``alembic`` command line, the
``BACKFILL_SCHEMA`` environment variable, and finally ``backfill``.
"""

from __future__ import annotations

import os
import re

from alembic import context

__all__ = ["SCHEMA_NAME_PATTERN", "target_schema", "validate_schema_name"]

DEFAULT_SCHEMA = "backfill"
SCHEMA_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_schema_name(name: str) -> str:
    """Return ``name`` if it is a usable schema name.

    Raises:
        ValueError: the name is not 1-63 lower-case letters, digits or underscores
            starting with a letter or underscore.
    """
    if not SCHEMA_NAME_PATTERN.match(name):
        raise ValueError(
            f"BACKFILL_SCHEMA: {name!r} must be 1-63 lower-case letters, digits or "
            "underscores, starting with a letter or underscore"
        )
    return name


def target_schema() -> str:
    """Return the schema the running migration writes to (see the module docstring).

    Raises:
        ValueError: the configured name is not a valid schema name.
    """
    name: str | None = None
    config = context.config if context.is_offline_mode() or _has_config() else None
    if config is not None:
        attr = config.attributes.get("backfill_schema")
        if isinstance(attr, str):
            name = attr
        if name is None:
            name = context.get_x_argument(as_dictionary=True).get("backfill_schema")
    if name is None:
        name = os.environ.get("BACKFILL_SCHEMA") or DEFAULT_SCHEMA
    return validate_schema_name(name)


def _has_config() -> bool:
    try:
        return context.config is not None
    except Exception:  # pragma: no cover - no Alembic context at all
        return False
