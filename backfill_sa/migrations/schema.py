"""Which PostgreSQL schema backfill_sa's tables (and our Alembic version table) live in.

Revisions call :func:`target_schema` instead of naming ``backfill`` so that one
deployment can keep the tables elsewhere. Inside a migration the name is taken from,
in order: the Alembic config attribute ``backfill_schema`` (set by
:func:`backfill_sa.migrations.upgrade` and ``python -m backfill_sa migrate``),
``-x backfill_schema=NAME`` on the ``alembic`` command line, the ``BACKFILL_SCHEMA``
environment variable, and finally ``backfill``.

This module imports nothing of :mod:`backfill_sa.models`: revisions are frozen
snapshots and must not change when the models do.
"""

from __future__ import annotations

from backfill_sa.schema_name import (
    DEFAULT_SCHEMA,
    SCHEMA_ENV_VAR,
    SCHEMA_NAME_PATTERN,
    resolve_schema,
    validate_schema_name,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_ENV_VAR",
    "SCHEMA_NAME_PATTERN",
    "resolve_schema",
    "target_schema",
    "validate_schema_name",
]


def target_schema() -> str:
    """Return the schema the running migration writes to (see the module docstring).

    Must be called while Alembic runs a migration (inside ``env.py`` or a revision).

    Raises:
        ConfigurationError: the configured name is not a valid schema name.
    """
    from alembic import context  # only here: importing this module stays cheap

    attribute = context.config.attributes.get("backfill_schema")
    if isinstance(attribute, str):
        return validate_schema_name(attribute, field="backfill_schema")
    from_x = context.get_x_argument(as_dictionary=True).get("backfill_schema")
    if from_x:
        return validate_schema_name(from_x, field="-x backfill_schema")
    return resolve_schema(None)
