"""Schema names: which PostgreSQL schema backfill_sa's tables live in, and the rule for names.

The tables are defined in schema ``backfill``; a deployment can keep them elsewhere
(``BACKFILL_SCHEMA``, ``--schema``), reached by schema translation in SQLAlchemy and by
substitution in the worker's pre-rendered SQL. Names are restricted so that they never
need quoting. This module imports nothing outside the standard library: the worker
loads it.
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
