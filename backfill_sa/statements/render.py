"""Render the worker's Core statements to SQL text (a development tool).

``python -m backfill_sa.statements.render`` rewrites
:mod:`backfill_sa.statements.worker_sql` from the builders in
:mod:`backfill_sa.statements.jobs_runtime`, :mod:`backfill_sa.statements.workers` and
:mod:`backfill_sa.statements.queue_stats` (and formats it with ruff). Run it after
changing a builder; the test suite fails until the two agree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from backfill_sa.schema_name import DEFAULT_SCHEMA
from backfill_sa.statements import cron, jobs_flow, jobs_runtime, queue_stats, workers
from backfill_sa.statements.rendered import SCHEMA_PLACEHOLDER, RenderedSql

__all__ = ["WORKER_SQL_PATH", "main", "module_source", "render", "render_all"]

WORKER_SQL_PATH = Path(__file__).with_name("worker_sql.py")
"""The generated module."""

_SOURCES = (jobs_runtime, jobs_flow, workers, cron, queue_stats)


def render(name: str, statement: Any) -> RenderedSql:
    """Compile one Core statement for asyncpg with the schema left as a placeholder.

    Raises:
        TypeError: ``statement`` is not a SQLAlchemy statement.
    """
    if not isinstance(statement, ClauseElement):
        raise TypeError(f"{name}: not a SQLAlchemy statement: {statement!r}")
    compiled = statement.compile(
        dialect=PGDialect_asyncpg(),  # type: ignore[no-untyped-call]
        schema_translate_map={DEFAULT_SCHEMA: SCHEMA_PLACEHOLDER},
        render_schema_translate=True,
    )
    assert isinstance(compiled, SQLCompiler)
    inline = tuple(sorted(b.key for b in compiled.literal_execute_params))
    params = tuple(p for p in compiled.positiontup or () if p not in inline)
    # A parameter bound inside the statement (a literal, or NULL) is not required.
    defaults = {n: compiled.binds[n].value for n in params if not compiled.binds[n].required}
    return RenderedSql(name, compiled.string, params, defaults, inline)


def render_all() -> dict[str, RenderedSql]:
    """Render every statement the builders' modules export, by name."""
    rendered: dict[str, RenderedSql] = {}
    for module in _SOURCES:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, ClauseElement):
                rendered[name] = render(name, value)
    return rendered


def module_source() -> str:
    """Return the source of :mod:`backfill_sa.statements.worker_sql`."""
    lines = [
        '"""The worker\'s SQL, rendered from the Core builders: do not edit by hand.',
        "",
        "Regenerate with ``python -m backfill_sa.statements.render`` after changing",
        ":mod:`backfill_sa.statements.jobs_runtime` or :mod:`backfill_sa.statements.workers`.",
        '"""',
        "",
        "# ruff: noqa: E501",
        "from __future__ import annotations",
        "",
        "from types import MappingProxyType",
        "",
        "from backfill_sa.statements.rendered import RenderedSql",
        "",
    ]
    rendered = render_all()
    lines.append(f"__all__ = [{', '.join(repr(n) for n in sorted(rendered))}]")
    for name, sql in rendered.items():
        chunks = sql.text.splitlines(keepends=True)
        lines += ["", f"{name} = RenderedSql(", f"    {name!r},", "    ("]
        lines += [f"        {chunk!r}" for chunk in chunks]
        lines.append("    ),")
        params = "".join(f"{p!r}, " for p in sql.params).rstrip(" ")
        lines.append(f"    ({params}),")
        if sql.defaults:
            items = ", ".join(f"{k!r}: {v!r}" for k, v in sql.defaults.items())
            lines.append(f"    MappingProxyType({{{items}}}),")
        if sql.inline:
            lines.append(f"    inline={sql.inline!r},")
        lines.append(")")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Rewrite the generated module and format it; return the exit code.

    Raises:
        OSError: the file cannot be written.
    """
    WORKER_SQL_PATH.write_text(module_source())
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", str(WORKER_SQL_PATH)], check=False
    )
    print(f"wrote {WORKER_SQL_PATH}")
    return formatted.returncode


if __name__ == "__main__":
    sys.exit(main())
