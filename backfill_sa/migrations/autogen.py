"""Autogenerate filters that keep an application's Alembic away from backfill_sa's objects.

An application that runs our revisions from its own history compares *its*
``target_metadata`` with the database. With ``include_schemas=True`` it would see our
tables and propose to drop them; :func:`include_object` and :func:`include_name` say
"not yours" for everything in our schema and hand every other object to the
application's own filter, so its ``env.py`` still decides::

    from backfill_sa.migrations import include_name, include_object

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_schemas=True,
        include_name=include_name(my_include_name),
        include_object=include_object(my_include_object),
    )
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import MetaData, Table
from sqlalchemy.schema import SchemaItem

from backfill_sa.migrations.schema import DEFAULT_SCHEMA, resolve_schema

if TYPE_CHECKING:
    from alembic.runtime.environment import (
        IncludeNameFn,
        IncludeObjectFn,
        NameFilterParentNames,
        NameFilterType,
    )

__all__ = ["include_name", "include_object", "metadata_in_schema"]


def _schema_of(obj: SchemaItem) -> str | None:
    table = obj if isinstance(obj, Table) else getattr(obj, "table", None)
    schema = getattr(table, "schema", None)
    return schema if isinstance(schema, str) else None


def include_object(
    next_filter: IncludeObjectFn | None = None, *, schema: str | None = None
) -> IncludeObjectFn:
    """Return an Alembic ``include_object`` hook that skips backfill_sa's objects.

    Tables in our schema, and their columns, indexes and constraints, are excluded
    (so is our ``alembic_version`` table if it lives there); every other object goes
    to ``next_filter`` (included when there is none).

    Args:
        next_filter: the application's own ``include_object`` hook, called for every
            object that is not ours.
        schema: our schema; default ``$BACKFILL_SCHEMA``, else ``backfill``. Read once,
            when the hook is made.

    Returns:
        A callable to pass as ``include_object=`` to ``context.configure``.

    Raises:
        ConfigurationError: the schema name is not valid.

    Example:
        ``context.configure(..., include_object=include_object(my_filter))``
    """
    ours = resolve_schema(schema)

    def hook(
        obj: SchemaItem,
        name: str | None,
        type_: NameFilterType,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        if _schema_of(obj) == ours:
            return False
        if next_filter is None:
            return True
        return next_filter(obj, name, type_, reflected, compare_to)

    return hook


def include_name(
    next_filter: IncludeNameFn | None = None, *, schema: str | None = None
) -> IncludeNameFn:
    """Return an Alembic ``include_name`` hook that does not reflect backfill_sa's schema.

    With ``include_schemas=True`` Alembic asks about each schema before reflecting
    it: ours is refused, so autogenerate never reads our tables at all. Tables whose
    parent schema is ours are refused as well. Other names go to ``next_filter``.

    Args:
        next_filter: the application's own ``include_name`` hook.
        schema: our schema; default ``$BACKFILL_SCHEMA``, else ``backfill``.

    Returns:
        A callable to pass as ``include_name=`` to ``context.configure``.

    Raises:
        ConfigurationError: the schema name is not valid.
    """
    ours = resolve_schema(schema)

    def hook(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
        if type_ == "schema" and name == ours:
            return False
        if type_ != "schema" and parent_names.get("schema_name") == ours:
            return False
        if next_filter is None:
            return True
        return next_filter(name, type_, parent_names)

    return hook


def metadata_in_schema(metadata: MetaData, schema: str) -> MetaData:
    """Return a copy of ``metadata`` whose ``backfill`` tables live in ``schema``.

    Autogenerate reflects the schema the tables name, and connection-level
    ``schema_translate_map`` does not reach reflection; comparing a deployment that
    uses another schema therefore needs the tables renamed. Constraint and index
    names (already fixed by the naming convention) and partial-index predicates are
    kept.

    Args:
        metadata: usually :data:`backfill_sa.models.metadata`.
        schema: the schema to put the tables in.

    Raises:
        ConfigurationError: ``schema`` is not a valid schema name.
    """
    target = resolve_schema(schema)
    copy = MetaData(schema=target, naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        new_schema = target if table.schema in (None, DEFAULT_SCHEMA) else table.schema
        table.to_metadata(copy, schema=new_schema)
    return copy
