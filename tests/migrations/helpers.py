"""Catalog read-outs shared by the migration tests (test code: plain SQL is fine here)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text

HEAD = "bf0002_job_lifecycle"
"""The newest revision of backfill_sa's branch."""

OUR_TABLES = {"jobs", "queues", "dead_letter_jobs", "workers", "leader"}


def tables_in(engine: Engine, schema: str) -> set[str]:
    """Names of the ordinary tables in ``schema``."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
        )
        return {row[0] for row in rows}


def versions_in(engine: Engine, schema: str, table: str = "alembic_version") -> set[str]:
    """Revisions recorded in ``schema.table`` (empty when the table is missing)."""
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{schema}.{table}"}
        ).scalar_one()
        if not exists:
            return set()
        rows = conn.execute(text(f'SELECT version_num FROM "{schema}"."{table}"'))
        return {row[0] for row in rows}


def drop_schemas(engine: Engine, *names: str) -> None:
    """Drop the schemas and everything in them."""
    with engine.begin() as conn:
        for name in names:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def catalog(conn: Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything PostgreSQL knows about our tables in ``schema``, schema name removed.

    Covers what Alembic's autogenerate does not compare: check constraints, partial
    index predicates, storage parameters (fillfactor, autovacuum), identity
    sequences, defaults as PostgreSQL stores them.
    """
    params = {"s": schema}
    result: dict[str, list[tuple[Any, ...]]] = {}
    result["tables"] = [
        tuple(r)
        for r in conn.execute(
            text(
                "SELECT c.relname, c.reloptions, obj_description(c.oid, 'pg_class') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relkind = 'r' AND c.relname <> 'alembic_version' "
                "ORDER BY 1"
            ),
            params,
        )
    ]
    result["columns"] = [
        tuple(r)
        for r in conn.execute(
            text(
                "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), "
                "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, "
                "col_description(c.oid, a.attnum) "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE n.nspname = :s AND c.relkind = 'r' AND c.relname <> 'alembic_version' "
                "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2"
            ),
            params,
        )
    ]
    result["constraints"] = [
        tuple(r)
        for r in conn.execute(
            text(
                "SELECT c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid) "
                "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname <> 'alembic_version' ORDER BY 1, 2"
            ),
            params,
        )
    ]
    result["indexes"] = [
        (r[0], r[1], r[2].replace(f" ON {schema}.", " ON "))
        for r in conn.execute(
            text(
                "SELECT tablename, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = :s AND tablename <> 'alembic_version' ORDER BY 1, 2"
            ),
            params,
        )
    ]
    result["sequences"] = [
        tuple(r)
        for r in conn.execute(
            text(
                "SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, "
                "s.seqmin, s.seqmax, s.seqcache, s.seqcycle "
                "FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s ORDER BY 1"
            ),
            params,
        )
    ]
    return result
