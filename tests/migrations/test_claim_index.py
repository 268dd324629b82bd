"""The claim index does what ``docs/schema.md`` says: claiming reads claimable rows only.

A backlog of scheduled jobs at the same priority sits in front of the due ones in
any index that holds every row; the partial index ``ix_jobs_claim`` does not hold
them, so the claim's index scan touches a handful of pages whatever their number.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from backfill_sa.migrations import upgrade

SCHEDULED = 30_000
BACKLOG = 30_000
DUE = 50
LIMIT = 200

# The claim query the index is built for (the worker's statement has this shape).
CLAIM = """
SELECT id FROM "{schema}".jobs
WHERE state = 'available' AND queue = 'bulk' AND run_at <= now()
ORDER BY priority, run_at, id
LIMIT {limit}
FOR UPDATE SKIP LOCKED
"""


def _fill(conn: Connection, schema: str) -> None:
    conn.execute(
        text(
            f'INSERT INTO "{schema}".jobs (task, queue, priority, run_at, state) '
            "SELECT 'report', 'bulk', 0, now() + g * interval '1 second', 'scheduled' "
            "FROM generate_series(1, :n) g"
        ),
        {"n": SCHEDULED},
    )
    conn.execute(
        text(
            f'INSERT INTO "{schema}".jobs (task, queue, priority, run_at, state) '
            "SELECT 'reindex', 'bulk', 10, now() - interval '1 hour', 'available' "
            "FROM generate_series(1, :n) g"
        ),
        {"n": BACKLOG},
    )
    conn.execute(
        text(
            f'INSERT INTO "{schema}".jobs (task, queue, priority, run_at, state) '
            "SELECT 'email', 'bulk', 0, now() - interval '1 minute', 'available' "
            "FROM generate_series(1, :n) g"
        ),
        {"n": DUE},
    )


def _scan(conn: Connection, schema: str) -> dict[str, Any]:
    """Run the claim under EXPLAIN ANALYZE (rolled back) and return its index-scan node."""
    query = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM.format(schema=schema, limit=LIMIT)
    plan: dict[str, Any] = conn.execute(text(query)).scalar_one()[0]["Plan"]
    assert plan["Node Type"] == "Limit"
    assert plan["Actual Rows"] == LIMIT
    lock_rows = plan["Plans"][0]
    assert lock_rows["Node Type"] == "LockRows"
    scan: dict[str, Any] = lock_rows["Plans"][0]
    return scan


@pytest.fixture
def filled(admin_engine: Engine, fresh_schema: str) -> str:
    upgrade(admin_engine, schema=fresh_schema)
    with admin_engine.begin() as conn:
        _fill(conn, fresh_schema)
        conn.execute(text(f'ANALYZE "{fresh_schema}".jobs'))
    return fresh_schema


def test_claim_is_a_short_scan_of_the_partial_index(admin_engine: Engine, filled: str) -> None:
    with admin_engine.begin() as conn:
        scan = _scan(conn, filled)
        conn.rollback()
    assert scan["Node Type"] == "Index Scan"
    assert scan["Index Name"] == "ix_jobs_claim"
    # No sort: the index order is the claim order, so the scan stops at the limit.
    assert scan["Actual Rows"] == LIMIT
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] <= 20


def test_an_index_of_every_row_would_wade_through_the_scheduled_ones(
    admin_engine: Engine, filled: str
) -> None:
    """The control: the same query over a non-partial index reads far more pages."""
    with admin_engine.begin() as conn:
        if conn.execute(text("SHOW server_version_num")).scalar_one() >= "180000":
            pytest.skip("PostgreSQL 18's B-tree skip scan hops over the scheduled rows too")
        conn.execute(text(f'DROP INDEX "{filled}".ix_jobs_claim'))
        conn.execute(
            text(f'CREATE INDEX ix_every_row ON "{filled}".jobs (queue, priority, run_at, id)')
        )
        conn.execute(text(f'ANALYZE "{filled}".jobs'))
        scan = _scan(conn, filled)
        conn.rollback()
    assert scan["Index Name"] == "ix_every_row"
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] > 50
