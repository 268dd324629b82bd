"""SQL text rendered ahead of time from the Core builders, for the worker.

The worker runs a fixed set of statements (:mod:`backfill_sa.statements.jobs_runtime`
and :mod:`backfill_sa.statements.workers`). Compiling them needs SQLAlchemy, which
would be about 17 MB of a worker's memory for nothing else, so they are compiled once
at development time by :mod:`backfill_sa.statements.render` into
:mod:`backfill_sa.statements.worker_sql`, and a test checks that the two agree. This
module holds the container they are stored in and imports nothing outside the
standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["SCHEMA_PLACEHOLDER", "RenderedSql"]

SCHEMA_PLACEHOLDER = "__backfill_schema__"
"""The schema name the statements are rendered with; replaced by the real one at use."""


@dataclass(frozen=True, slots=True)
class RenderedSql:
    """One statement compiled for asyncpg (``$n`` placeholders).

    Attributes:
        name: the Core builder it was rendered from.
        text: the SQL, with every table qualified by :data:`SCHEMA_PLACEHOLDER`.
        params: the parameter names, in placeholder order.
        defaults: values of the parameters bound inside the statement itself.
    """

    name: str
    text: str
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def for_schema(self, schema: str) -> str:
        """Return the SQL with its tables in ``schema``.

        ``schema`` must be a validated schema name (lower-case letters, digits and
        underscores: it never needs quoting).
        """
        return self.text.replace(f"{SCHEMA_PLACEHOLDER}.", f"{schema}.")

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """Return the positional arguments for ``values``, defaults filled in.

        Raises:
            KeyError: a parameter without a default is missing from ``values``.
        """
        defaults = self.defaults
        try:
            return [values[n] if n in values else defaults[n] for n in self.params]
        except KeyError as exc:
            raise KeyError(f"{self.name}: parameter {exc.args[0]!r} was not given") from None
