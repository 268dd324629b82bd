"""What PostgreSQL spends per claimed job: the worker's claim/complete loop without a worker.

``python -m benchmarks claim-cost`` loads jobs into a database of its own
(``bench_claimcost``), then drains them on one asyncpg connection with the worker's
own statements (``job_claim_batch``, then ``job_complete_and_claim`` deleting the
previous batch), the way one fetcher does with no-op handlers. It reports PostgreSQL's
CPU per job and per statement for several batch sizes, under the server's default plan
choice and with replanning forced on every execution (``plan_cache_mode =
force_custom_plan``, which is what the claim cost before its generic plan was usable).
py-spy sees only the worker; this is the server's side of the same drain. With
``--backlog N`` the table first gets N other jobs (half available at a lower priority
in the same queue, half scheduled a day ahead, as in W5), and every drain runs both
without and with them: W5's question, asked of the server alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from sqlalchemy import create_engine

from backfill_sa.dburl import sync_url
from backfill_sa.migrations import upgrade
from backfill_sa.statements.worker_sql import job_claim_batch, job_complete_and_claim
from benchmarks.database import Server
from benchmarks.measurement import PostgresCpu
from benchmarks.payloads import drain_payload

__all__ = ["ClaimCost", "measure_claim_cost", "render_claim_cost"]

DATABASE = "bench_claimcost"
SCHEMA = "bench_cc"
PLAN_MODES = ("auto", "force_custom_plan")


@dataclass(frozen=True)
class ClaimCost:
    """One drain: how it was run and what PostgreSQL spent."""

    plan_mode: str
    batch: int
    backlog: int
    jobs: int
    statements: int
    seconds: float
    pg_cpu_s: float | None

    @property
    def pg_us_per_job(self) -> float | None:
        """PostgreSQL CPU per job, in microseconds (None for a remote server)."""
        return None if self.pg_cpu_s is None else self.pg_cpu_s * 1e6 / self.jobs

    @property
    def pg_us_per_statement(self) -> float | None:
        """PostgreSQL CPU per claim statement, in microseconds."""
        return None if self.pg_cpu_s is None else self.pg_cpu_s * 1e6 / self.statements


def measure_claim_cost(
    server: Server,
    *,
    jobs: int = 20_000,
    batches: Sequence[int] = (1, 5, 10, 20, 50),
    backlog: int = 0,
) -> list[ClaimCost]:
    """Drain ``jobs`` jobs once per plan mode and batch size (and, with a ``backlog``,
    once more beside that many other jobs); drop the database after.

    Raises:
        psycopg.Error | asyncpg.PostgresError: the server refused.
    """
    dsn = server.create_database(DATABASE)
    engine = create_engine(sync_url(dsn))
    try:
        upgrade(engine, schema=SCHEMA)
    finally:
        engine.dispose()
    try:
        costs = []
        for others in (0, backlog) if backlog else (0,):
            _load_backlog(server, others)
            costs += [
                _drain_once(server, dsn, mode, batch, jobs=jobs, backlog=others)
                for mode in PLAN_MODES
                for batch in batches
            ]
        return costs
    finally:
        server.drop_database(DATABASE)


def _load_backlog(server: Server, count: int) -> None:
    with server.connect(DATABASE) as conn:
        conn.execute(f"TRUNCATE {SCHEMA}.jobs")
        if count:
            conn.execute(
                f"INSERT INTO {SCHEMA}.jobs (task, queue, payload, priority, run_at, state)"
                " SELECT 'backlog', 'bench', %s::jsonb, CASE WHEN n %% 2 = 0 THEN 10 ELSE 0 END,"
                " CASE WHEN n %% 2 = 0 THEN now() ELSE now() + interval '1 day' END,"
                " CASE WHEN n %% 2 = 0 THEN 'available' ELSE 'scheduled' END"
                " FROM generate_series(1, %s) AS n",
                (json.dumps(drain_payload(0)), count),
            )


def _drain_once(
    server: Server, dsn: str, mode: str, batch: int, *, jobs: int, backlog: int
) -> ClaimCost:
    with server.connect(DATABASE) as conn:
        conn.execute(f"DELETE FROM {SCHEMA}.jobs WHERE task <> 'backlog'")
        conn.execute(
            f"INSERT INTO {SCHEMA}.jobs (task, queue, payload)"
            " SELECT 'noop', 'bench', %s::jsonb FROM generate_series(1, %s)",
            (json.dumps(drain_payload(0)), jobs),
        )
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.jobs")
        conn.execute("CHECKPOINT")  # every drain starts at the same point of the WAL cycle
    with server.cpu_meter(DATABASE) as meter:
        statements, seconds, pg = asyncio.run(_drain(dsn, mode, batch, jobs, meter))
    return ClaimCost(mode, batch, backlog, jobs, statements, seconds, pg)


async def _drain(
    dsn: str, mode: str, batch: int, jobs: int, meter: PostgresCpu | None
) -> tuple[int, float, float | None]:
    """Drain the queue; the meter is read while the connection is open (a backend
    that has exited is no longer seen)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        await conn.execute(f"SET plan_cache_mode = {mode}")
        values: dict[str, object] = {"claim_queue": "bench", "worker_id": "w", "limit": batch}
        claim = job_claim_batch.for_schema(SCHEMA, values)
        claim_and_complete = job_complete_and_claim.for_schema(SCHEMA, values)
        done: list[asyncpg.Record] = []
        statements = claimed = 0
        cpu_before = meter.seconds() if meter else 0.0
        start = time.perf_counter()
        while True:
            if done:
                values["ids"] = [r["id"] for r in done]
                values["leases"] = [r["lease"] for r in done]
                rows = await conn.fetch(
                    claim_and_complete, *job_complete_and_claim.arguments(values)
                )
                done = [r for r in rows if r["done_id"] is None]
            else:
                done = await conn.fetch(claim, *job_claim_batch.arguments(values))
            statements += 1
            claimed += len(done)
            if not done or claimed >= jobs:  # the backlog's own jobs come after the drain's
                break
        seconds = time.perf_counter() - start
        pg = meter.seconds() - cpu_before if meter else None
        return statements, seconds, pg
    finally:
        await conn.close()


def render_claim_cost(costs: Sequence[ClaimCost]) -> str:
    """Return the drains as a table: PostgreSQL CPU per job and per statement."""
    header = ("plan_cache_mode", "batch", "backlog", "jobs/s", "PG us/job", "PG us/stmt")
    lines = ["{:18s} {:>5s} {:>9s} {:>8s} {:>10s} {:>11s}".format(*header)]
    for cost in costs:
        per_job = "-" if cost.pg_us_per_job is None else f"{cost.pg_us_per_job:.1f}"
        per_stmt = "-" if cost.pg_us_per_statement is None else f"{cost.pg_us_per_statement:.0f}"
        lines.append(
            f"{cost.plan_mode:18s} {cost.batch:5d} {cost.backlog:9,d}"
            f" {cost.jobs / cost.seconds:8,.0f} {per_job:>10s} {per_stmt:>11s}"
        )
    return "\n".join(lines) + "\n"
