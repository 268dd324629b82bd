"""The schema the shipped migrations build is exactly ``backfill_sa.models.metadata``.

Two comparisons, because neither sees everything:

* Alembic's autogenerate (what users' ``alembic check`` would report): tables,
  columns, types, nullability, server defaults, indexes, unique constraints, comments;
* PostgreSQL's own catalog of the migrated schema against a schema built by
  ``metadata.create_all``: also check constraints, partial-index predicates, storage
  parameters (fillfactor, autovacuum), identity sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, text
from sqlalchemy.schema import CreateSchema

from backfill_sa.migrations import upgrade
from backfill_sa.migrations.autogen import metadata_in_schema
from backfill_sa.models import metadata
from tests.migrations.helpers import OUR_TABLES, catalog


def _diff(conn: Connection, schema: str) -> list[Any]:
    context = MigrationContext.configure(
        conn,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, parents: type_ != "schema" or name == schema,
            "compare_type": True,
            "compare_server_default": True,
            "version_table_schema": schema,
        },
    )
    return list(compare_metadata(context, metadata_in_schema(metadata, schema)))


def test_autogenerate_finds_nothing(admin_engine: Engine, fresh_schema: str) -> None:
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.connect() as conn:
        assert _diff(conn, fresh_schema) == []


def test_autogenerate_would_notice_drift(admin_engine: Engine, fresh_schema: str) -> None:
    """The comparison above can fail: remove an index and change a default by hand."""
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.begin() as conn:
        conn.execute(text(f'DROP INDEX "{fresh_schema}".ix_jobs_claim'))
        conn.execute(text(f"ALTER TABLE \"{fresh_schema}\".jobs ALTER queue SET DEFAULT 'x'"))
    with admin_engine.connect() as conn:
        diff = _diff(conn, fresh_schema)
    kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in diff)
    assert kinds == ["add_index", "modify_default"]


def _migrated_and_declared(engine: Engine, make: Callable[[str], str]) -> tuple[str, str]:
    migrated, declared = make("m"), make("d")
    upgrade(engine, schema=migrated)
    with engine.begin() as conn:
        conn.execute(CreateSchema(declared))
        metadata.create_all(
            conn.execution_options(schema_translate_map={"backfill": declared}), checkfirst=False
        )
    return migrated, declared


def test_catalog_equals_create_all(admin_engine: Engine, new_schema: Callable[[str], str]) -> None:
    migrated, declared = _migrated_and_declared(admin_engine, new_schema)
    with admin_engine.connect() as conn:
        from_migrations = catalog(conn, migrated)
        from_models = catalog(conn, declared)
    assert {row[0] for row in from_migrations["tables"]} == OUR_TABLES
    for part in ("tables", "columns", "constraints", "indexes", "sequences"):
        assert from_migrations[part] == from_models[part], part


def test_catalog_would_notice_drift(admin_engine: Engine, new_schema: Callable[[str], str]) -> None:
    """What autogenerate misses, the catalog comparison catches."""
    migrated, declared = _migrated_and_declared(admin_engine, new_schema)
    with admin_engine.begin() as conn:
        conn.execute(text(f'ALTER TABLE "{migrated}".jobs SET (fillfactor = 100)'))
        conn.execute(text(f'ALTER TABLE "{migrated}".jobs DROP CONSTRAINT ck_jobs_max_attempts'))
        conn.execute(text(f'DROP INDEX "{migrated}".ix_jobs_scheduled'))
        conn.execute(
            text(
                f'CREATE INDEX ix_jobs_scheduled ON "{migrated}".jobs (run_at) '
                "WHERE state = 'running'"
            )
        )
    with admin_engine.connect() as conn:
        from_migrations = catalog(conn, migrated)
        from_models = catalog(conn, declared)
        assert _diff(conn, migrated) == []  # autogenerate sees none of it
    differing = [
        part
        for part in ("tables", "columns", "constraints", "indexes", "sequences")
        if from_migrations[part] != from_models[part]
    ]
    assert differing == ["tables", "constraints", "indexes"]


@pytest.mark.parametrize(
    ("index", "definition"),
    [
        (
            "ix_jobs_claim",
            "CREATE INDEX ix_jobs_claim ON jobs USING btree (queue, priority, run_at, id) "
            "WHERE (state = 'available'::text)",
        ),
        (
            "ix_jobs_scheduled",
            "CREATE INDEX ix_jobs_scheduled ON jobs USING btree (run_at) "
            "WHERE (state = 'scheduled'::text)",
        ),
        (
            "ix_jobs_running",
            "CREATE INDEX ix_jobs_running ON jobs USING btree (locked_by, locked_at) "
            "WHERE (state = 'running'::text)",
        ),
        (
            "uq_jobs_job_key",
            "CREATE UNIQUE INDEX uq_jobs_job_key ON jobs USING btree (job_key) "
            "WHERE ((job_key IS NOT NULL) AND (state = ANY "
            "(ARRAY['available'::text, 'scheduled'::text, 'running'::text])))",
        ),
        (
            "ix_jobs_prune",
            "CREATE INDEX ix_jobs_prune ON jobs USING btree (prune_at) "
            "WHERE (state = ANY (ARRAY['completed'::text, 'cancelled'::text]))",
        ),
    ],
)
def test_partial_indexes_as_documented(
    admin_engine: Engine, fresh_schema: str, index: str, definition: str
) -> None:
    """docs/schema.md describes these exact indexes."""
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.connect() as conn:
        indexes = {row[1]: row[2] for row in catalog(conn, fresh_schema)["indexes"]}
    assert indexes[index] == definition


def test_jobs_storage_parameters(admin_engine: Engine, fresh_schema: str) -> None:
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.connect() as conn:
        tables = {row[0]: row[1] for row in catalog(conn, fresh_schema)["tables"]}
    assert sorted(tables["jobs"]) == [
        "autovacuum_analyze_scale_factor=0.02",
        "autovacuum_vacuum_insert_scale_factor=0.02",
        "autovacuum_vacuum_scale_factor=0.01",
        "fillfactor=90",
    ]
