"""``run_migrate``, the engine behind ``python -m backfill_sa migrate``, on a real database."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.schema import CreateSchema

from backfill_sa.dburl import parse_url
from backfill_sa.errors import MigrationError
from backfill_sa.migrations.runner import run_migrate
from backfill_sa.models import metadata
from tests.migrations.helpers import HEAD, OUR_TABLES, tables_in, versions_in


def _current(url: str, schema: str) -> str:
    out = io.StringIO()
    assert run_migrate(url, schema=schema, action="current", out=out) == 0
    return out.getvalue().strip()


def _run_script(engine: Engine, script: str) -> None:
    """Run a multi-statement SQL script as psql would."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(script)
        cursor.close()
        raw.commit()
    finally:
        raw.close()


def test_empty_head_base_head(admin_engine: Engine, sync_db_url: str, fresh_schema: str) -> None:
    assert _current(sync_db_url, fresh_schema) == "base (no backfill_sa revision applied)"

    assert run_migrate(sync_db_url, schema=fresh_schema) == 0
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}
    assert versions_in(admin_engine, fresh_schema) == {HEAD}
    assert _current(sync_db_url, fresh_schema) == f"{HEAD} (head)"

    assert run_migrate(sync_db_url, schema=fresh_schema, action="downgrade") == 0
    # Down to base leaves no table at all, our version table included.
    assert tables_in(admin_engine, fresh_schema) == set()
    assert _current(sync_db_url, fresh_schema) == "base (no backfill_sa revision applied)"

    assert run_migrate(sync_db_url, schema=fresh_schema, action="upgrade") == 0
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}
    assert versions_in(admin_engine, fresh_schema) == {HEAD}


def test_upgrade_at_head_changes_nothing(
    admin_engine: Engine, sync_db_url: str, fresh_schema: str
) -> None:
    run_migrate(sync_db_url, schema=fresh_schema)
    probe = text(
        f'SELECT (SELECT xmin::text FROM "{fresh_schema}".alembic_version), '
        f"'{fresh_schema}.jobs'::regclass::oid"
    )
    with admin_engine.connect() as conn:
        before = conn.execute(probe).one()
    assert run_migrate(sync_db_url, schema=fresh_schema) == 0
    with admin_engine.connect() as conn:
        assert conn.execute(probe).one() == before


def test_explicit_revisions(admin_engine: Engine, sync_db_url: str, fresh_schema: str) -> None:
    assert run_migrate(sync_db_url, schema=fresh_schema, revision="bf0001") == 0
    assert versions_in(admin_engine, fresh_schema) == {"bf0001"}
    assert run_migrate(sync_db_url, schema=fresh_schema, action="downgrade", revision="base") == 0
    assert tables_in(admin_engine, fresh_schema) == set()


def test_sql_prints_ddl_and_touches_nothing(
    admin_engine: Engine, sync_db_url: str, fresh_schema: str
) -> None:
    out = io.StringIO()
    assert run_migrate(sync_db_url, schema=fresh_schema, sql=True, out=out) == 0
    ddl = out.getvalue()
    assert f"CREATE SCHEMA IF NOT EXISTS {fresh_schema};" in ddl
    assert f"CREATE TABLE {fresh_schema}.alembic_version" in ddl
    assert f"CREATE TABLE {fresh_schema}.jobs (" in ddl
    assert f"CREATE TABLE {fresh_schema}.dead_letter_jobs (" in ddl
    assert (
        f"CREATE INDEX ix_jobs_claim ON {fresh_schema}.jobs (queue, priority, run_at, id) "
        "WHERE state = 'available'"
    ) in ddl
    assert "fillfactor = 90" in ddl
    assert f"INSERT INTO {fresh_schema}.alembic_version (version_num) VALUES ('bf0001')" in ddl
    assert f"version_num='{HEAD}'" in ddl
    assert ddl.index("BEGIN;") < ddl.index("CREATE TABLE") < ddl.index("COMMIT;")
    with admin_engine.connect() as conn:
        exists = conn.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": fresh_schema}
        ).scalar_one()
    assert exists == 0


def test_sql_runs_as_printed(admin_engine: Engine, sync_db_url: str, fresh_schema: str) -> None:
    """What a DBA would do: apply the printed DDL with psql; then we see the schema at head."""
    out = io.StringIO()
    run_migrate(sync_db_url, schema=fresh_schema, sql=True, out=out)
    _run_script(admin_engine, out.getvalue())
    assert _current(sync_db_url, fresh_schema) == f"{HEAD} (head)"
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES | {"alembic_version"}

    down = io.StringIO()
    run_migrate(sync_db_url, schema=fresh_schema, action="downgrade", sql=True, out=down)
    assert f"DROP TABLE {fresh_schema}.jobs;" in down.getvalue()
    _run_script(admin_engine, down.getvalue())
    assert tables_in(admin_engine, fresh_schema) == set()


def test_failed_migration_rolls_back_everything(
    admin_engine: Engine, sync_db_url: str, fresh_schema: str
) -> None:
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{fresh_schema}"'))
        conn.execute(text(f'CREATE TABLE "{fresh_schema}".workers (x int)'))
    with pytest.raises(MigrationError, match=r"failed in the database: .*workers.* already exists"):
        run_migrate(sync_db_url, schema=fresh_schema)
    # jobs was created before workers failed: one transaction, so it is gone again.
    assert tables_in(admin_engine, fresh_schema) == {"workers"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"revision": "nope"}, r"revision: .*Can't locate revision identified by 'nope'"),
        ({"schema": "Bad-Name"}, r"^schema: 'Bad-Name' must be 1-63 lower-case letters"),
        ({"action": "current", "sql": True}, r"'current' takes neither a revision nor --sql"),
        ({"action": "sideways"}, r"^action: must be 'upgrade', 'downgrade' or 'current'"),
    ],
)
def test_bad_arguments_raise_migration_error(
    sync_db_url: str, fresh_schema: str, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"schema": fresh_schema, **kwargs}
    with pytest.raises(MigrationError, match=message):
        run_migrate(sync_db_url, **args)  # type: ignore[arg-type]


def test_unreachable_database_names_it_without_the_password(fresh_schema: str) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(MigrationError, match="cannot connect to") as caught:
        run_migrate(url, schema=fresh_schema)
    assert "127.0.0.1:1/nowhere" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_plain_and_async_url_forms_are_accepted(
    admin_engine: Engine, database_url: str, fresh_schema: str
) -> None:
    parsed = parse_url(database_url)
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncpg = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    assert run_migrate(plain, schema=fresh_schema) == 0
    assert run_migrate(asyncpg, schema=fresh_schema, action="downgrade") == 0
    assert tables_in(admin_engine, fresh_schema) == set()


def test_tables_made_by_create_all_are_not_migrated_over(
    admin_engine: Engine, sync_db_url: str, fresh_schema: str
) -> None:
    with admin_engine.begin() as conn:
        conn.execute(CreateSchema(fresh_schema))
        metadata.create_all(conn.execution_options(schema_translate_map={"backfill": fresh_schema}))
    with pytest.raises(MigrationError, match=r"managed elsewhere.*create_all"):
        run_migrate(sync_db_url, schema=fresh_schema)
    assert tables_in(admin_engine, fresh_schema) == OUR_TABLES
