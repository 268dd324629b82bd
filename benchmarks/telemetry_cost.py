"""What telemetry adds to one ``enqueue`` call: a micro-benchmark on a kept session.

    python -m benchmarks.telemetry_cost [--calls 500] [--repeats 7]

W1's held-session shape (one sync Session over an autocommit psycopg engine, one job
per call, each its own transaction) timed with ``timeit``, in four setups taking
turns so that drift hits them alike:

* ``without telemetry``: the enqueue body with no telemetry code at all (what
  ``enqueue`` did before it had spans and counts): validation, then the insert;
* ``no SDK``: ``enqueue()`` as shipped, with the default telemetry on the API's
  global providers and no SDK installed;
* ``SDK metrics``: an SDK ``MeterProvider`` (in-memory reader), no tracing;
* ``SDK metrics + traces``: the same and an SDK ``TracerProvider`` (no exporter).

It needs DATABASE_URL and creates (then drops) a schema of its own. The best of the
repeats is reported per call, in this process's CPU time (what telemetry adds is
client CPU; wall time on a shared machine mostly measures the server's queue) and in
wall time, with the overhead against the first setup. A last line times, without
the database, what ``enqueue`` asks of telemetry when no SDK is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit
import uuid
from collections.abc import Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from backfill_sa.dburl import sync_url
from backfill_sa.enqueue import JobSpec, enqueue
from backfill_sa.job_writer import _connection, _write_one
from backfill_sa.migrations.runner import apply
from backfill_sa.notify import channel_for, schema_of
from backfill_sa.telemetry import Telemetry, current_trace_carrier, default_telemetry

__all__ = ["main"]

PAYLOAD = {"order_id": 42, "email": "ada@example.com", "items": [1, 2, 3]}


def _bare(session: Session) -> None:
    """The enqueue body without telemetry: validation and the insert."""
    spec = JobSpec("noop", PAYLOAD, "bench")
    conn = _connection(session)
    _write_one(conn, spec, channel_for(schema_of(conn)), current_trace_carrier())


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a table; return the exit code.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry_cost")
    parser.add_argument("--calls", type=int, default=500, help="enqueue calls per timing")
    parser.add_argument("--repeats", type=int, default=7, help="timings per setup")
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    schema = f"bench_tel_{uuid.uuid4().hex[:8]}"
    admin = create_engine(sync_url(url))
    with admin.begin() as conn:
        apply(conn, schema=schema, action="upgrade", revision="heads")
    engine = create_engine(
        sync_url(url),
        execution_options={"schema_translate_map": {"backfill": schema}},
        isolation_level="AUTOCOMMIT",
    )
    metrics_only = Telemetry(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    both = Telemetry(
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        tracer_provider=TracerProvider(),
    )
    session = Session(engine)
    setups: dict[str, Callable[[], object]] = {
        "without telemetry": lambda: _bare(session),
        "no SDK": lambda: enqueue(session, "noop", PAYLOAD, queue="bench"),
        "SDK metrics": lambda: enqueue(
            session, "noop", PAYLOAD, queue="bench", telemetry=metrics_only
        ),
        "SDK metrics + traces": lambda: enqueue(
            session, "noop", PAYLOAD, queue="bench", telemetry=both
        ),
    }
    cpu = dict.fromkeys(setups, float("inf"))
    wall = dict.fromkeys(setups, float("inf"))
    try:
        for call in setups.values():  # warm up: connection, compiled statement, caches
            timeit.timeit(call, number=50)
        names = list(setups)
        for round_ in range(args.repeats):
            # Each setup goes first in turn: the first timing of a round runs colder.
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                call = setups[name]
                with engine.begin() as conn:
                    conn.execute(text(f'TRUNCATE "{schema}".jobs'))
                started_cpu, started = time.process_time(), time.perf_counter()
                timeit.timeit(call, number=args.calls)
                spent_cpu, spent = time.process_time() - started_cpu, time.perf_counter() - started
                cpu[name] = min(cpu[name], spent_cpu / args.calls)
                wall[name] = min(wall[name], spent / args.calls)
    finally:
        session.close()
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print(f"enqueue on a kept session, best of {args.repeats} x {args.calls} calls")
    print(f"{'setup':<24}{'CPU us':>9}{'overhead':>10}{'wall us':>10}{'overhead':>10}")
    for name in setups:
        c, w = cpu[name], wall[name]
        c0, w0 = cpu["without telemetry"], wall["without telemetry"]
        print(
            f"{name:<24}{c * 1e6:>9.1f}{(c / c0 - 1) * 100:>9.1f}%"
            f"{w * 1e6:>10.1f}{(w / w0 - 1) * 100:>9.1f}%"
        )
    print(f"no SDK, telemetry's own work per call: {_decision_ns():.0f} ns")
    return 0


def _decision_ns() -> float:
    """What ``enqueue`` asks of telemetry per call while no SDK is installed."""

    def decide() -> None:
        telemetry = None or default_telemetry()
        if telemetry.tracing:
            raise AssertionError("an SDK is installed")
        if telemetry.metering:
            raise AssertionError("an SDK is installed")

    number = 200_000
    return min(timeit.repeat(decide, number=number, repeat=5)) / number * 1e9


if __name__ == "__main__":
    sys.exit(main())
