"""Runs the chosen workloads on the chosen libraries, one library at a time per workload.

Workloads are interleaved across libraries (W1 for all, then W2 for all, ...) so slow
drifts of the machine spread over everyone. A failing workload is recorded with its
error and the run goes on.
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.adapters import ADAPTERS, Adapter, load_adapter
from benchmarks.database import Server
from benchmarks.drain import measure_drain
from benchmarks.imports import measure_imports
from benchmarks.machine import describe_machine, package_version
from benchmarks.pgbench import run_pgbench
from benchmarks.producer import w1_client, w1_client_sync, w1_transaction, w4_client
from benchmarks.profiling import Profiler, summarize_collapsed
from benchmarks.workloads import (
    WorkloadContext,
    load_queue,
    w1_autocommit,
    w1_enqueue_one,
    w1_enqueue_one_sync,
    w1_raw_driver,
    w1_session_floor,
    w2_enqueue_batches,
    w2_job_specs,
    w3_drain,
    w4_pickup_latency,
)

__all__ = ["ALL_WORKLOADS", "RunSettings", "merge_runs", "run"]

Workload = Callable[[Adapter, WorkloadContext], Awaitable[dict[str, object]]]


def _ours_only(name: str, module: str = "benchmarks.scaling") -> Workload:
    async def call(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
        fn: Workload = getattr(importlib.import_module(module), name)
        return await fn(adapter, ctx)

    return call


WORKLOADS: Mapping[str, tuple[Workload, bool]] = {
    "W1": (w1_enqueue_one, False),
    "W1sync": (w1_enqueue_one_sync, True),
    "W1floor": (w1_session_floor, True),
    "W1auto": (w1_autocommit, True),
    "W1raw": (w1_raw_driver, True),
    "W1client": (w1_client, False),
    "W1clientsync": (w1_client_sync, True),
    "W1tx": (w1_transaction, False),
    "W2": (w2_enqueue_batches, False),
    "W2specs": (w2_job_specs, True),
    "W3": (w3_drain, False),
    "W3limit": (_ours_only("w3_non_binding_limit"), True),
    "W3tx": (_ours_only("w3_transactional", "benchmarks.transactional"), True),
    "W4": (w4_pickup_latency, False),
    "W4client": (w4_client, True),
    "W5": (_ours_only("w5_backlog_drain"), True),
    "W6": (_ours_only("w6_four_workers"), True),
    "W7": (_ours_only("w7_mixed_priorities"), True),
    "W8": (_ours_only("w8_marginal_enqueue"), True),
}
"""Workload -> (function, backfill_sa only)."""

ALL_WORKLOADS = ("pgbench", *WORKLOADS)
ENQUEUE_ONLY = frozenset(
    {"W1", "W1sync", "W1floor", "W1auto", "W1raw", "W1client", "W1clientsync", "W1tx"}
    | {"W2", "W2specs"}
)


@dataclass(frozen=True)
class RunSettings:
    """What ``python -m benchmarks run`` was asked to do."""

    only: tuple[str, ...]
    libs: tuple[str, ...]
    runs: int
    json_path: Path
    profile: bool
    keep_databases: bool
    context: WorkloadContext


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _headline(result: Mapping[str, object]) -> str:
    parts = []
    for key in ("jobs_per_s", "cpu_ms_per_job", "p50_ms", "p99_ms", "worker_peak_rss_mb"):
        value = result.get(key)
        if isinstance(value, float):
            parts.append(f"{key}={value:,.2f}")
    insert = result.get("insert")
    if isinstance(insert, Mapping):
        parts.append(f"tps={insert.get('tps', 0):,.0f}")
    for name, nested in result.items():  # W1floor: {"async": {...}, "sync": {...}}
        if isinstance(nested, Mapping) and isinstance(nested.get("jobs_per_s"), float):
            parts.append(f"{name}_jobs_per_s={nested['jobs_per_s']:,.2f}")
    return " ".join(parts) or ", ".join(f"{k}={v}" for k, v in list(result.items())[:3])


async def _setup(settings: RunSettings, results: dict[str, Any]) -> dict[str, Adapter]:
    adapters: dict[str, Adapter] = {}
    for lib in settings.libs:
        info: dict[str, object] = {"available": False}
        results["libraries"][lib] = info
        try:
            adapter = load_adapter(lib)(settings.context.server)
            info["version"] = package_version(adapter.distribution)
            await adapter.setup()
        except Exception as exc:
            info["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"{lib}: unavailable: {info['error']}")
            continue
        info["available"] = True
        adapters[lib] = adapter
    return adapters


async def _profile(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    raw = ctx.log_dir / "profile-w3.collapsed.txt"
    profiler = Profiler(raw)
    await load_queue(adapter, ctx.jobs, checkpoint=ctx.checkpoint)
    result = measure_drain(
        adapter,
        queues={"bench": ctx.concurrency},
        workers=1,
        log_dir=ctx.log_dir,
        tag=f"{adapter.name}-w3-profiled",
        poll_interval=ctx.poll_interval,
        on_start=profiler.attach,
    )
    stderr = profiler.wait()
    summary = summarize_collapsed(raw) if raw.exists() else f"no profile: {stderr}"
    summary_path = ctx.log_dir / "profile-w3-summary.txt"
    summary_path.write_text(summary)
    return {
        "drain_under_profiler": result.as_dict(),
        "collapsed": str(raw),
        "summary_file": str(summary_path),
        "summary": summary,
    }


async def _one(
    name: str, lib: str, adapter: Adapter, workload: Workload, ctx: WorkloadContext
) -> dict[str, object]:
    try:
        adapter.reset()
        start = time.perf_counter()
        result = await workload(adapter, ctx)
        result["wall_s"] = time.perf_counter() - start
        result["load_average"] = list(os.getloadavg())
    except Exception as exc:
        _log(f"{name} {lib}: FAILED {type(exc).__name__}: {exc}")
        return {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=6),
        }
    _log(f"{name} {lib}: {_headline(result)}")
    return result


def _pgbench(ctx: WorkloadContext) -> dict[str, object]:
    try:
        result = run_pgbench(ctx.server, ctx.pgbench_seconds)
    except Exception as exc:
        _log(f"pgbench: FAILED {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    _log(f"pgbench: {_headline(result)}")
    return result


async def run(settings: RunSettings) -> dict[str, Any]:
    """Run everything ``settings`` asks for and return the results (JSON-ready).

    With several runs, each workload runs that many times in a row on every library
    (interleaved), and the reported figures are the medians (all runs are kept).

    Raises:
        psycopg.Error: the server cannot be reached at all.
    """
    ctx = settings.context
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    server: Server = ctx.server
    results: dict[str, Any] = {
        "machine": describe_machine(server),
        "settings": {
            "only": list(settings.only),
            "runs": settings.runs,
            "jobs": ctx.jobs,
            "latency_jobs": ctx.latency_jobs,
            "latency_gap_ms": ctx.latency_gap_s * 1000,
            "backlog": ctx.backlog,
            "concurrency": ctx.concurrency,
            "poll_interval_ms": ctx.poll_interval * 1000,
        },
        "libraries": {},
        "libraries_run": [],
        "workloads": {},
        "baseline": {},
    }
    began = time.perf_counter()
    try:
        results["imports"] = measure_imports()
    except RuntimeError as exc:
        results["imports"] = [{"module": "-", "error": str(exc)}]
    adapters = await _setup(settings, results)
    results["libraries_run"] = [lib for lib in settings.libs if lib in ADAPTERS]
    try:
        if "pgbench" in settings.only:
            runs = [_pgbench(ctx) for _ in range(settings.runs)]
            results["baseline"]["pgbench"] = merge_runs(runs)
        for name, (workload, ours_only) in WORKLOADS.items():
            if name not in settings.only:
                continue
            per_run: dict[str, list[dict[str, object]]] = {}
            for _ in range(settings.runs):
                for lib, adapter in adapters.items():
                    if ours_only and lib != "ours":
                        continue
                    if adapter.worker_variant and name in ENQUEUE_ONLY:
                        continue
                    result = await _one(name, lib, adapter, workload, ctx)
                    per_run.setdefault(lib, []).append(result)
            results["workloads"][name] = {lib: merge_runs(r) for lib, r in per_run.items()}
            if name == "W3" and settings.profile and "ours" in adapters:
                try:
                    adapters["ours"].reset()
                    results["profile"] = await _profile(adapters["ours"], replace(ctx))
                    _log(f"profile: {results['profile']['summary_file']}")
                except Exception as exc:
                    results["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
                    _log(f"profile: FAILED {exc}")
    finally:
        for lib, adapter in adapters.items():
            try:
                await adapter.close()
                if not settings.keep_databases:
                    adapter.teardown()
            except Exception as exc:
                _log(f"{lib}: cleanup failed: {exc}")
    results["total_s"] = time.perf_counter() - began
    return results


def merge_runs(runs: list[dict[str, object]]) -> dict[str, object]:
    """Merge repeated results: medians of numbers (nested too), the rest from the first
    successful run, and every run under ``runs`` when there were several.
    """
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    merged = _median_of(good)
    if len(runs) > 1:
        merged["runs"] = runs
    return merged


def _median_of(items: list[dict[str, object]]) -> dict[str, object]:
    merged: dict[str, object] = {}
    for key, first in items[0].items():
        values = [item.get(key) for item in items]
        if isinstance(first, bool) or not isinstance(first, (int, float, dict)):
            merged[key] = first
        elif isinstance(first, dict):
            merged[key] = _median_of([v for v in values if isinstance(v, dict)])
        else:
            numbers = [v for v in values if isinstance(v, (int, float))]
            same = all(n == first for n in numbers)
            merged[key] = first if same or not numbers else statistics.median(numbers)
    return merged
