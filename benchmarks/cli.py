"""Command line: ``python -m benchmarks run [options]``, ``show``, ``imports``, ``claim-cost``.

Examples::

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m benchmarks run
    python -m benchmarks run --quick --libs ours,pgqueuer --only W1,W3
    python -m benchmarks show benchmarks/results/latest.json --markdown
    python -m benchmarks imports
    python -m benchmarks claim-cost --batches 1,10,50
    python -m benchmarks soak --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from benchmarks import otel
from benchmarks.adapters import ADAPTERS, DEFAULT_LIBS
from benchmarks.claim_cost import measure_claim_cost, render_claim_cost
from benchmarks.database import server_from_env
from benchmarks.imports import measure_imports, render_imports
from benchmarks.report import render, write_json
from benchmarks.runner import ALL_WORKLOADS, RunSettings, run
from benchmarks.soak import SoakSettings, render_soak, run_soak, write_soak
from benchmarks.workloads import WorkloadContext

__all__ = ["main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _names(raw: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    lookup = {name.lower(): name for name in allowed}
    chosen: list[str] = []
    for part in raw.split(","):
        key = part.strip().lower()
        if not key:
            continue
        if key not in lookup:
            raise argparse.ArgumentTypeError(
                f"{what}: unknown {part.strip()!r}; choose from {', '.join(allowed)}"
            )
        chosen.append(lookup[key])
    return tuple(chosen)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run", help="run the workloads and print the table")
    go.add_argument("--only", default="", help="workloads, e.g. W1,W3 (default: all)")
    go.add_argument(
        "--libs",
        default=",".join(DEFAULT_LIBS),
        help=f"libraries, from {', '.join(ADAPTERS)} (default: {','.join(DEFAULT_LIBS)})",
    )
    go.add_argument("--jobs", type=int, default=None, help="jobs per workload (20,000)")
    go.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    go.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    go.add_argument("--backlog", type=int, default=None, help="W5's other jobs (1,000,000)")
    go.add_argument("--runs", type=int, default=1, help="repeat each workload; report medians")
    go.add_argument("--concurrency", type=int, default=10, help="per-worker concurrency")
    go.add_argument("--profile", action="store_true", help="py-spy our worker in a W3 drain")
    go.add_argument(
        "--checkpoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CHECKPOINT after loading each drain's queue (default: on)",
    )
    go.add_argument("--database-url", default=None, help="server (default: DATABASE_URL)")
    go.add_argument("--keep-databases", action="store_true", help="do not drop bench_* dbs")
    go.add_argument(
        "--otel",
        choices=otel.MODES,
        default="none",
        help="sdk: OpenTelemetry SDK installed globally, in-memory reader (default none)",
    )
    commands.add_parser("imports", help="what the worker's imports cost (RSS, time)")
    cost = commands.add_parser(
        "claim-cost", help="PostgreSQL CPU per claimed job, by batch size and plan mode"
    )
    cost.add_argument("--jobs", type=int, default=20_000, help="jobs per drain")
    cost.add_argument("--batches", default="1,5,10,20,50", help="batch sizes, comma-separated")
    cost.add_argument("--backlog", type=int, default=0, help="also drain beside N other jobs")
    cost.add_argument("--database-url", default=None, help="server (default: DATABASE_URL)")
    soak = commands.add_parser("soak", help="a steady enqueue rate for minutes (see soak.py)")
    soak.add_argument("--minutes", type=float, default=10.0, help="how long to enqueue (10)")
    soak.add_argument("--rate", type=int, default=200, help="jobs enqueued per second (200)")
    soak.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    soak.add_argument("--concurrency", type=int, default=10, help="per-worker concurrency")
    soak.add_argument("--interval", type=float, default=None, help="seconds per row (min/10)")
    soak.add_argument("--json", type=Path, default=None, help="also write the report here")
    soak.add_argument("--database-url", default=None, help="server (default: DATABASE_URL)")
    show = commands.add_parser("show", help="print the table of a results file")
    show.add_argument("path", type=Path, nargs="?", default=DEFAULT_JSON)
    show.add_argument("--markdown", action="store_true", help="as a Markdown table")
    return parser


def _settings(args: argparse.Namespace) -> RunSettings:
    quick: bool = args.quick
    only = _names(args.only, ALL_WORKLOADS, "--only") if args.only else ALL_WORKLOADS
    if "W1" in only:
        family = ("W1sync", "W1floor", "W1auto", "W1raw", "W1client", "W1clientsync", "W1tx")
        only = (*only, *(w for w in family if w not in only))
    if "W4" in only and "W4client" not in only:
        only = (*only, "W4client")
    if "W2" in only and "W2specs" not in only:
        only = (*only, "W2specs")
    if "W1" in only and "pgbench" not in only:
        only = ("pgbench", *only)
    jobs = args.jobs if args.jobs is not None else (2_000 if quick else 20_000)
    backlog = args.backlog if args.backlog is not None else (50_000 if quick else 1_000_000)
    json_path: Path = args.json
    context = WorkloadContext(
        server=server_from_env(args.database_url),
        jobs=jobs,
        latency_jobs=50 if quick else 200,
        latency_gap_s=0.02,
        backlog=backlog,
        concurrency=args.concurrency,
        log_dir=json_path.parent / "logs",
        poll_interval=0.02 if quick else 0.05,
        pgbench_seconds=3 if quick else 10,
        checkpoint=args.checkpoint,
        w7_rate=200.0,
        w7_seconds=2.0 if quick else 5.0,
        w8_rounds=200 if quick else 1_000,
    )
    return RunSettings(
        only=only,
        libs=_names(args.libs, tuple(ADAPTERS), "--libs"),
        runs=max(1, args.runs),
        json_path=json_path,
        profile=args.profile,
        keep_databases=args.keep_databases,
        context=context,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for bad arguments).

    Raises:
        psycopg.Error: the server cannot be reached.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "imports":
        print(render_imports(measure_imports()), end="")
        return 0
    if args.command == "claim-cost":
        try:
            batches = [int(b) for b in args.batches.split(",") if b.strip()]
        except ValueError:
            parser.error(f"--batches: not a list of integers: {args.batches!r}")
        costs = measure_claim_cost(
            server_from_env(args.database_url),
            jobs=args.jobs,
            batches=batches,
            backlog=args.backlog,
        )
        print(render_claim_cost(costs), end="")
        return 0
    if args.command == "soak":
        if args.minutes <= 0 or args.rate < 1 or args.workers < 1 or args.concurrency < 1:
            parser.error("soak: --minutes, --rate, --workers and --concurrency must be positive")
        report = asyncio.run(
            run_soak(
                server_from_env(args.database_url),
                SoakSettings(
                    minutes=args.minutes,
                    rate=args.rate,
                    workers=args.workers,
                    concurrency=args.concurrency,
                    interval_s=args.interval or max(5.0, args.minutes * 6),
                    log_dir=DEFAULT_JSON.parent / "logs",
                ),
            )
        )
        print(render_soak(report), end="")
        if args.json is not None:
            write_soak(report, args.json)
        return 0
    if args.command == "show":
        path: Path = args.path
        print(render(json.loads(path.read_text()), markdown=args.markdown), end="")
        return 0
    try:
        settings = _settings(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    otel.select(args.otel)
    results = asyncio.run(run(settings))
    results["otel"] = args.otel
    write_json(results, settings.json_path)
    print(render(results), end="")
    print(f"\nresults: {settings.json_path}")
    return 0
