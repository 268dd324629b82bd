"""Runs the chosen workloads on the chosen libraries, one library at a time per workload.

Workloads are interleaved across libraries (W1 for all, then W2 for all, ...) so slow
drifts of the machine spread over everyone. A failing workload is recorded with its
error and the run goes on.
"""

from __future__ import annotations

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
from benchmarks.machine import describe_machine, package_version
from benchmarks.pgbench import run_pgbench
from benchmarks.profiling import Profiler, summarize_collapsed
from benchmarks.workloads import (
    WorkloadContext,
    load_queue,
    w1_enqueue_one,
    w1_enqueue_one_sync,
    w2_enqueue_batches,
    w3_drain,
    w4_pickup_latency,
)

__all__ = ["ALL_WORKLOADS", "RunSettings", "run"]

Workload = Callable[[Adapter, WorkloadContext], Awaitable[dict[str, object]]]


def _ours_only(name: str) -> Workload:
    async def call(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
        from benchmarks import scaling

        fn: Workload = getattr(scaling, name)
        return await fn(adapter, ctx)

    return call


WORKLOADS: Mapping[str, tuple[Workload, bool]] = {
    "W1": (w1_enqueue_one, False),
    "W1sync": (w1_enqueue_one_sync, True),
    "W2": (w2_enqueue_batches, False),
    "W3": (w3_drain, False),
    "W4": (w4_pickup_latency, False),
    "W5": (_ours_only("w5_backlog_drain"), True),
    "W6": (_ours_only("w6_four_workers"), True),
    "W7": (_ours_only("w7_mixed_priorities"), True),
    "W8": (_ours_only("w8_marginal_enqueue"), True),
}
"""Workload -> (function, backfill_sa only)."""

ALL_WORKLOADS = ("pgbench", *WORKLOADS)


@dataclass(frozen=True)
class RunSettings:
    """What ``python -m benchmarks run`` was asked to do."""

    only: tuple[str, ...]
    libs: tuple[str, ...]
    json_path: Path
    profile: bool
    keep_databases: bool
    context: WorkloadContext


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _headline(name: str, result: Mapping[str, object]) -> str:
    for key in ("jobs_per_s", "p50_ms", "tps"):
        value = result.get(key)
        if isinstance(value, float):
            return f"{key}={value:,.1f}"
    return ", ".join(f"{k}={v}" for k, v in list(result.items())[:3])


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
    await load_queue(adapter, ctx.jobs)
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


async def run(settings: RunSettings) -> dict[str, Any]:
    """Run everything ``settings`` asks for and return the results (JSON-ready).

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
    if "pgbench" in settings.only:
        try:
            results["baseline"]["pgbench"] = run_pgbench(server, ctx.pgbench_seconds)
            _log(f"pgbench: {results['baseline']['pgbench']['insert']['tps']:,.0f} tps")
        except Exception as exc:
            results["baseline"]["pgbench"] = {"error": f"{type(exc).__name__}: {exc}"}
            _log(f"pgbench: {exc}")
    adapters = await _setup(settings, results)
    results["libraries_run"] = [lib for lib in settings.libs if lib in ADAPTERS]
    try:
        for name, (workload, ours_only) in WORKLOADS.items():
            if name not in settings.only:
                continue
            per_lib: dict[str, object] = {}
            results["workloads"][name] = per_lib
            for lib, adapter in adapters.items():
                if ours_only and lib != "ours":
                    continue
                try:
                    adapter.reset()
                    start = time.perf_counter()
                    result = await workload(adapter, ctx)
                    result["wall_s"] = time.perf_counter() - start
                    per_lib[lib] = result
                    _log(f"{name} {lib}: {_headline(name, result)}")
                except Exception as exc:
                    per_lib[lib] = {
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=6),
                    }
                    _log(f"{name} {lib}: FAILED {type(exc).__name__}: {exc}")
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
