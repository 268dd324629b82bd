"""``include_object`` / ``include_name``: an application's autogenerate leaves our objects alone.

A real database holds our migrated schema beside an application's schema; the
application's autogenerate (``compare_metadata``, what ``alembic revision
--autogenerate`` and ``alembic check`` run) is asked what it would change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.runtime.environment import (
    IncludeNameFn,
    IncludeObjectFn,
    NameFilterParentNames,
    NameFilterType,
)
from sqlalchemy import Column, Engine, Index, Integer, MetaData, Table, Text, UniqueConstraint
from sqlalchemy.schema import CreateSchema, SchemaItem

from backfill_sa.errors import ConfigurationError
from backfill_sa.migrations import include_name, include_object, upgrade
from tests.migrations.helpers import OUR_TABLES
from tests.migrations.sample_app.app_models import make_base


@pytest.fixture
def schemas(admin_engine: Engine, new_schema: Callable[[str], str]) -> tuple[str, str]:
    """(application schema with orders and a hand-made legacy_audit table, our schema at head)."""
    app, ours = new_schema("app"), new_schema("bf")
    upgrade(admin_engine, schema=ours)
    hand_made = MetaData(schema=app)
    Table("legacy_audit", hand_made, Column("line", Text))
    with admin_engine.begin() as conn:
        conn.execute(CreateSchema(app))
        make_base(app).metadata.create_all(conn)
        hand_made.create_all(conn)
    return app, ours


def _proposals(
    engine: Engine,
    target: MetaData,
    *,
    visible: tuple[str, ...],
    name_filter: IncludeNameFn | None = None,
    object_filter: IncludeObjectFn | None = None,
) -> list[tuple[str, str | None, str]]:
    """What autogenerate would do, as (operation, schema, table) triples."""

    def only_visible(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        # Stand-in for the rest of the database: other tests' schemas are never looked at.
        return type_ != "schema" or name in visible

    def names(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
        return only_visible(name, type_, parent_names) and (
            name_filter is None or name_filter(name, type_, parent_names)
        )

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": names,
                "include_object": object_filter,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        diffs: list[Any] = list(compare_metadata(context, target))
    result = []
    for diff in diffs:
        op, obj = diff[0], diff[1]
        table = obj if isinstance(obj, Table) else getattr(obj, "table", None)
        result.append((op, getattr(table, "schema", None), getattr(table, "name", "")))
    return sorted(result)


def app_include_object(
    obj: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """The application's own filter: its hand-made audit table is not in its models."""
    return not (type_ == "table" and name == "legacy_audit")


def test_without_filters_autogenerate_would_drop_our_tables(
    admin_engine: Engine, schemas: tuple[str, str]
) -> None:
    app, ours = schemas
    proposals = _proposals(admin_engine, make_base(app).metadata, visible=(app, ours))
    removed_tables = {(schema, table) for op, schema, table in proposals if op == "remove_table"}
    # Every table of ours (our version table too) and the application's hand-made one.
    assert removed_tables == {(ours, table) for table in OUR_TABLES | {"alembic_version"}} | {
        (app, "legacy_audit")
    }
    assert {schema for _, schema, table in proposals if table != "legacy_audit"} == {ours}


def test_include_object_excludes_ours_and_chains(
    admin_engine: Engine, schemas: tuple[str, str]
) -> None:
    app, ours = schemas
    target = make_base(app).metadata
    chained = include_object(app_include_object, schema=ours)
    assert _proposals(admin_engine, target, visible=(app, ours), object_filter=chained) == []
    # Without the application's filter in the chain, its own rule is lost, ours holds.
    alone = include_object(schema=ours)
    assert _proposals(admin_engine, target, visible=(app, ours), object_filter=alone) == [
        ("remove_table", app, "legacy_audit")
    ]


def test_include_name_keeps_our_schema_unreflected(
    admin_engine: Engine, schemas: tuple[str, str]
) -> None:
    app, ours = schemas
    target = make_base(app).metadata
    assert (
        _proposals(
            admin_engine,
            target,
            visible=(app, ours),
            name_filter=include_name(schema=ours),
            object_filter=app_include_object,
        )
        == []
    )


def test_include_object_defaults_to_backfill_schema_env(
    monkeypatch: pytest.MonkeyPatch, admin_engine: Engine, schemas: tuple[str, str]
) -> None:
    app, ours = schemas
    monkeypatch.setenv("BACKFILL_SCHEMA", ours)
    hook = include_object(app_include_object)
    monkeypatch.delenv("BACKFILL_SCHEMA")  # read once, when the hook was made
    assert (
        _proposals(admin_engine, make_base(app).metadata, visible=(app, ours), object_filter=hook)
        == []
    )


def test_include_object_hook_sees_every_kind_of_object() -> None:
    """Tables, columns, indexes and constraints in our schema are refused without asking."""
    ours = MetaData(schema="backfill")
    jobs = Table("jobs", ours, Column("id", Integer, primary_key=True), Column("k", Text))
    index = Index("ix_k", jobs.c.k)
    unique = UniqueConstraint(jobs.c.k, name="uq_k")
    jobs.append_constraint(unique)
    theirs = Table("orders", MetaData(schema="app"), Column("id", Integer, primary_key=True))

    asked: list[str | None] = []

    def app_filter(
        obj: SchemaItem,
        name: str | None,
        type_: NameFilterType,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        asked.append(name)
        return name != "id"

    hook = include_object(app_filter, schema="backfill")
    kinds: list[tuple[SchemaItem, str | None, NameFilterType]] = [
        (jobs, "jobs", "table"),
        (jobs.c.k, "k", "column"),
        (index, "ix_k", "index"),
        (unique, "uq_k", "unique_constraint"),
    ]
    assert [hook(obj, name, type_, True, None) for obj, name, type_ in kinds] == [False] * 4
    assert asked == []
    assert hook(theirs, "orders", "table", True, None) is True
    assert hook(theirs.c.id, "id", "column", False, None) is False
    assert asked == ["orders", "id"]


def test_include_name_hook() -> None:
    asked: list[str | None] = []

    def app_filter(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        asked.append(name)
        return True

    hook = include_name(app_filter, schema="jobs_x")
    assert hook("jobs_x", "schema", {}) is False
    assert hook("jobs", "table", {"schema_name": "jobs_x"}) is False
    assert hook("public", "schema", {}) is True
    assert hook("orders", "table", {"schema_name": "app"}) is True
    assert asked == ["public", "orders"]


def test_invalid_schema_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^schema: 'Jobs!' must be"):
        include_object(schema="Jobs!")
    with pytest.raises(ConfigurationError, match=r"^schema: "):
        include_name(schema="")
