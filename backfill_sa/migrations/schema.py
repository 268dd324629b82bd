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

import os
import re

from backfill_sa.errors import ConfigurationError

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_ENV_VAR",
    "SCHEMA_NAME_PATTERN",
    "resolve_schema",
    "target_schema",
    "validate_schema_name",
]

DEFAULT_SCHEMA = "backfill"
"""The schema the models name; other names are reached by schema translation."""

SCHEMA_ENV_VAR = "BACKFILL_SCHEMA"
"""Environment variable that selects another schema for one deployment."""

SCHEMA_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""Schema names we accept: they never need quoting and fit PostgreSQL's 63 bytes."""


def validate_schema_name(name: str, *, field: str = "schema") -> str:
    """Return ``name`` if it is a usable schema name.

    Args:
        name: the candidate schema name.
        field: the setting the name came from, used in the error message.

    Returns:
        ``name``, unchanged.

    Raises:
        ConfigurationError: the name is not 1-63 lower-case letters, digits or
            underscores starting with a letter or underscore.
    """
    if not isinstance(name, str) or not SCHEMA_NAME_PATTERN.match(name):
        raise ConfigurationError(
            field,
            f"{name!r} must be 1-63 lower-case letters, digits or underscores, "
            "starting with a letter or underscore",
        )
    return name


def resolve_schema(schema: str | None = None) -> str:
    """Return ``schema`` if given, else ``$BACKFILL_SCHEMA``, else ``backfill``; validated.

    Args:
        schema: an explicit schema name, or ``None`` to use the environment.

    Raises:
        ConfigurationError: the resulting name is not a valid schema name.
    """
    if schema is not None:
        return validate_schema_name(schema)
    from_env = os.environ.get(SCHEMA_ENV_VAR)
    if from_env:
        return validate_schema_name(from_env, field=SCHEMA_ENV_VAR)
    return DEFAULT_SCHEMA


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
