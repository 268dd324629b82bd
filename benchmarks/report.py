"""The results table (text or Markdown) with our ratio to each peer, and the JSON file.

Ratios read "how many times better ours is": ours / peer for rates, peer / ours for
times, CPU and memory; above 1 means ours is ahead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.imports import summary_line

__all__ = ["Row", "ROWS", "render", "write_json"]

Results = Mapping[str, Any]


@dataclass(frozen=True)
class Row:
    """One line of the table: where its value lives and which way is better.

    Attributes:
        label: what the line says.
        workload: key in ``results["workloads"]``.
        path: keys inside one library's result.
        higher_is_better: rates yes; times, CPU and memory no.
        digits: decimals shown.
    """

    label: str
    workload: str
    path: tuple[str, ...]
    higher_is_better: bool
    digits: int = 0


ROWS: tuple[Row, ...] = (
    Row("W1 enqueue, 1 job/txn (jobs/s)", "W1", ("jobs_per_s",), True),
    Row("W1 per call p50 (us)", "W1", ("call_p50_us",), False),
    Row("W1 client CPU per job (us)", "W1", ("client_cpu_us_per_job",), False),
    Row("W1 PostgreSQL CPU per job (us)", "W1", ("pg_cpu_us_per_job",), False),
    Row("W1 sync Session (jobs/s)", "W1sync", ("jobs_per_s",), True),
    Row("W1 autocommit AsyncSession (jobs/s)", "W1auto", ("async", "jobs_per_s"), True),
    Row("W1 autocommit sync Session (jobs/s)", "W1auto", ("sync", "jobs_per_s"), True),
    Row("W1 autocommit sync Session, held (jobs/s)", "W1auto", ("held", "jobs_per_s"), True),
    Row("W1 ceiling: our statement, bare asyncpg (jobs/s)", "W1raw", ("async", "jobs_per_s"), True),
    Row("W1 ceiling: our statement, bare psycopg (jobs/s)", "W1raw", ("sync", "jobs_per_s"), True),
    Row("W1 ceiling: our statement, libpq (jobs/s)", "W1raw", ("libpq", "jobs_per_s"), True),
    Row("W1 floor: AsyncSession, 1-row INSERT (txn/s)", "W1floor", ("async", "jobs_per_s"), True),
    Row("W1 floor: sync Session, 1-row INSERT (txn/s)", "W1floor", ("sync", "jobs_per_s"), True),
    Row("W1client standalone producer (jobs/s)", "W1client", ("jobs_per_s",), True),
    Row("W1client client CPU per job (us)", "W1client", ("client_cpu_us_per_job",), False),
    Row("W1client SyncBackfillClient (jobs/s)", "W1clientsync", ("jobs_per_s",), True),
    Row("W1tx row + job, AsyncSession (txn/s)", "W1tx", ("async", "jobs_per_s"), True),
    Row("W1tx row + job, sync Session (txn/s)", "W1tx", ("sync", "jobs_per_s"), True),
    Row("W1tx floor: row alone, AsyncSession (txn/s)", "W1tx", ("floor_async", "jobs_per_s"), True),
    Row("W1tx floor: row alone, sync Session (txn/s)", "W1tx", ("floor_sync", "jobs_per_s"), True),
    Row("W2 bulk enqueue, 1,000/txn (jobs/s)", "W2", ("jobs_per_s",), True),
    Row("W2 as JobSpecs via enqueue_many (jobs/s)", "W2specs", ("jobs_per_s",), True),
    Row("W3 drain (jobs/s)", "W3", ("jobs_per_s",), True),
    Row("W3 CPU per job, worker + PG (ms)", "W3", ("cpu_ms_per_job",), False, 3),
    Row("W3 worker CPU (s)", "W3", ("worker_cpu_s",), False, 2),
    Row("W3 PostgreSQL CPU (s)", "W3", ("pg_cpu_s",), False, 2),
    Row("W3 transactions per job", "W3", ("transactions_per_job",), False, 2),
    Row("W3 worker peak RSS (MB)", "W3", ("worker_peak_rss_mb",), False, 1),
    Row("W3limit drain, non-binding global limit (jobs/s)", "W3limit", ("jobs_per_s",), True),
    Row("W3limit CPU per job (ms)", "W3limit", ("cpu_ms_per_job",), False, 3),
    Row("W3 transactional no-op tasks (jobs/s)", "W3tx", ("jobs_per_s",), True),
    Row("W3 transactional CPU per job (ms)", "W3tx", ("cpu_ms_per_job",), False, 3),
    Row("W4 pickup latency p50 (ms)", "W4", ("p50_ms",), False, 2),
    Row("W4 pickup latency p99 (ms)", "W4", ("p99_ms",), False, 2),
    Row("W4 worker RSS after warm-up (MB)", "W4", ("worker_rss_after_warmup_mb",), False, 1),
    Row("W4client pickup p50, BackfillClient (ms)", "W4client", ("p50_ms",), False, 2),
    Row("W4client pickup p99, BackfillClient (ms)", "W4client", ("p99_ms",), False, 2),
    Row("W5 drain, 1M other jobs (jobs/s)", "W5", ("jobs_per_s",), True),
    Row("W5 CPU per job (ms)", "W5", ("cpu_ms_per_job",), False, 3),
    Row("W6 drain, 4 workers (jobs/s)", "W6", ("jobs_per_s",), True),
    Row("W6 CPU per job (ms)", "W6", ("cpu_ms_per_job",), False, 3),
    Row("W8 marginal enqueue, async (us)", "W8", ("async", "marginal_p50_us"), False),
    Row("W8 enqueue call, async p50 (us)", "W8", ("async", "call_p50_us"), False),
    Row("W8 marginal enqueue, sync (us)", "W8", ("sync", "marginal_p50_us"), False),
    Row("W8 enqueue call, sync p50 (us)", "W8", ("sync", "call_p50_us"), False),
)


def _value(results: Results, row: Row, lib: str) -> float | None:
    node: Any = results.get("workloads", {}).get(row.workload, {}).get(lib)
    for key in row.path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return float(node) if isinstance(node, (int, float)) else None


def _error(results: Results, workload: str, lib: str) -> str | None:
    node = results.get("workloads", {}).get(workload, {}).get(lib)
    if isinstance(node, Mapping) and "error" in node:
        return "error"
    return None


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours: float | None, peer: float | None, higher_is_better: bool) -> str:
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return "-"
    ratio = ours / peer if higher_is_better else peer / ours
    return f"{ratio:.2f}x"


def _table(results: Results) -> tuple[list[str], list[list[str]]]:
    libs: Sequence[str] = results.get("libraries_run", [])
    peers = [lib for lib in libs if lib != "ours"]
    header = ["workload", *libs, *[f"ours vs {p}" for p in peers if "ours" in libs]]
    body: list[list[str]] = []
    for row in ROWS:
        values = {lib: _value(results, row, lib) for lib in libs}
        if all(v is None for v in values.values()) and not any(
            _error(results, row.workload, lib) for lib in libs
        ):
            continue
        cells = [row.label]
        cells += [
            _fmt(values[lib], row.digits)
            if values[lib] is not None
            else (_error(results, row.workload, lib) or "-")
            for lib in libs
        ]
        if "ours" in libs:
            cells += [_ratio(values["ours"], values[p], row.higher_is_better) for p in peers]
        body.append(cells)
    return header, body


def _extras(results: Results) -> list[str]:
    lines: list[str] = []
    workloads = results.get("workloads", {})
    bench = results.get("baseline", {}).get("pgbench")
    w1 = _value(results, ROWS[0], "ours")
    if isinstance(bench, Mapping) and "insert" in bench:
        tps = float(bench["insert"]["tps"])
        txn = float(bench["begin_insert_commit"]["tps"])
        share = f"; ours W1 = {100 * w1 / tps:.0f}% of it" if w1 else ""
        auto = _value(results, Row("", "W1auto", ("async", "jobs_per_s"), True), "ours")
        share += f", W1 autocommit = {100 * auto / tps:.0f}%" if auto else ""
        in_txn = f" (ours W1 = {100 * w1 / txn:.0f}% of it)" if w1 else ""
        lines.append(
            f"pgbench, 1 connection, one-row INSERT: {tps:,.0f} tps{share}; "
            f"BEGIN/INSERT/COMMIT: {txn:,.0f} tps{in_txn}"
        )
        shares = [
            f"{name} {100 * value / tps:.0f}%"
            for name, workload, path in (
                ("bare asyncpg", "W1raw", ("async", "jobs_per_s")),
                ("bare psycopg", "W1raw", ("sync", "jobs_per_s")),
                ("libpq", "W1raw", ("libpq", "jobs_per_s")),
                ("autocommit sync Session", "W1auto", ("sync", "jobs_per_s")),
                ("held autocommit Session", "W1auto", ("held", "jobs_per_s")),
            )
            if (value := _value(results, Row("", workload, path, True), "ours"))
        ]
        if shares:
            lines.append(
                f"W1's server target, within 15% of that ({0.85 * tps:,.0f} tps); our statement"
                f" reaches, by client: {', '.join(shares)}"
            )
        ours_sql = bench.get("enqueue_statement")
        if isinstance(ours_sql, Mapping):
            mine = float(ours_sql["tps"])
            lines.append(
                f"pgbench running our enqueue statement (prepared): {mine:,.0f} tps"
                f" ({100 * mine / tps:.0f}% of the one-row INSERT)"
            )
    w3 = _value(results, Row("", "W3", ("jobs_per_s",), True), "ours")
    w5 = _value(results, Row("", "W5", ("jobs_per_s",), True), "ours")
    if w3 and w5:
        lines.append(f"W5/W3 (ours): {w5 / w3:.2f} (goal >= 0.9)")
    w7 = workloads.get("W7", {}).get("ours")
    if isinstance(w7, Mapping) and "latency" in w7:
        lines.append(
            f"W7 (ours): bulk backlog {w7['bulk_backlog']:,} jobs, "
            f"{int(w7['backlog_left_at_stream_end'] or 0):,} left when the stream ended; "
            f"{w7['rate_per_s']:.0f} latency jobs/s for {w7['stream_s']:.0f} s"
        )
        for label, summary in w7["latency"].items():
            lines.append(
                f"  {label:>10}: p50 {summary['p50_ms']:8.2f} ms  p99 {summary['p99_ms']:8.2f} ms"
                f"  (n={summary['count']})"
            )
    imports = results.get("imports")
    if isinstance(imports, list):
        line = summary_line(imports)
        if line:
            lines.append(line)
    for workload, per_lib in workloads.items():
        for lib, result in per_lib.items():
            if isinstance(result, Mapping) and "error" in result:
                first = str(result["error"]).splitlines()[0] if result["error"] else ""
                lines.append(f"{workload} {lib}: {first}")
    return lines


def render(results: Results, *, markdown: bool = False) -> str:
    """Render the table and the notes under it as plain text or Markdown."""
    header, body = _table(results)
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in body]
        out += [""] + [f"- {line.strip()}" for line in _extras(results)]
        return "\n".join(out) + "\n"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        for cells in [header, *body]
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*out, "", *_extras(results)]) + "\n"


def write_json(results: Results, path: Path) -> None:
    """Write ``results`` to ``path`` (creating its folder), indented.

    Raises:
        OSError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
