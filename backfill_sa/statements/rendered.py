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
        inline: integer parameters written into the SQL text rather than bound
            (``LIMIT``: see :func:`backfill_sa.statements.jobs_runtime._any_of`); the
            text holds ``__[POSTCOMPILE_<name>]`` for each.
    """

    name: str
    text: str
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    inline: tuple[str, ...] = ()

    def for_schema(self, schema: str, values: Mapping[str, Any] | None = None) -> str:
        """Return the SQL with its tables in ``schema`` and its inline values written in.

        ``schema`` must be a validated schema name (lower-case letters, digits and
        underscores: it never needs quoting).

        Raises:
            KeyError: an inline parameter is missing from ``values``.
            TypeError: an inline value is not an ``int``.
        """
        sql = self.text.replace(f"{SCHEMA_PLACEHOLDER}.", f"{schema}.")
        for name in self.inline:
            value = (values or {}).get(name)
            if type(value) is not int:
                if value is None:
                    raise KeyError(f"{self.name}: parameter {name!r} was not given")
                raise TypeError(f"{self.name}: parameter {name!r} must be an int, not {value!r}")
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", str(value))
        return sql

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
