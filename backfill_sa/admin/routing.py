"""Request plumbing of the admin API: checked calls, refusals and per-request transactions.

A handler receives a :class:`Call` whose parameters and body were already converted
and checked against the endpoint's declared JSON Schema (:mod:`.fields`), and runs
each change in a :func:`transaction` of its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from backfill_sa.admin.auth import Principal
from backfill_sa.admin.endpoints import Endpoint
from backfill_sa.admin.fields import check, parse_text
from backfill_sa.admin.protocol import ApiError

__all__ = ["Call", "Handler", "Refusal", "parse_body", "parse_params", "transaction"]


@dataclass(frozen=True)
class Call:
    """One checked API request: who asks, its parameters and its body, all validated."""

    request: Request
    user: Principal
    params: dict[str, Any]
    body: dict[str, Any]


Handler = Callable[[Call], Awaitable[Response]]


def parse_params(endpoint: Endpoint, request: Request) -> dict[str, Any]:
    """Return the path and query parameters of ``endpoint``, converted and checked.

    An empty query value means "not given"; declared defaults fill the gaps.

    Raises:
        ApiError: 400 naming a parameter that is unknown, repeated or breaks its rule.
    """
    declared = {p.name: p for p in endpoint.params if p.location == "query"}
    params: dict[str, Any] = {}
    for p in endpoint.params:
        if p.location == "path":
            params[p.name] = parse_text(p.name, str(request.path_params[p.name]), p.schema)
    seen: set[str] = set()
    for key, raw in request.query_params.multi_items():
        if key not in declared:
            expected = ", ".join(sorted(declared)) or "none"
            raise ApiError.invalid(key, f"is not a known parameter (expected: {expected})")
        if key in seen:
            raise ApiError.invalid(key, "must be given at most once")
        seen.add(key)
        if raw != "":  # an empty value means no filter
            params[key] = parse_text(key, raw, declared[key].schema)
    for key, p in declared.items():
        if key not in params and "default" in p.schema:
            params[key] = p.schema["default"]
    return params


async def parse_body(endpoint: Endpoint, request: Request) -> dict[str, Any]:
    """Return the JSON body of ``endpoint`` checked against its schema, nulls dropped.

    An empty body is ``{}`` when the body is optional.

    Raises:
        ApiError: 400 naming ``body`` (missing, not JSON, not an object) or the field
            that breaks its rule.
    """
    if endpoint.body is None:
        return {}
    raw = await request.body()
    if not raw.strip():
        if endpoint.body_required:
            raise ApiError.invalid("body", "must be a JSON object")
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError.invalid("body", "must be a JSON object") from None
    checked: dict[str, Any] = check("body", value, endpoint.body)
    return {key: item for key, item in checked.items() if item is not None}


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession], *, dry_run: bool = False
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that commits at the end, or rolls back on a dry run."""
    async with sessions() as session:
        await session.begin()
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        if dry_run:
            await session.rollback()
        else:
            await session.commit()


class Refusal(Exception):
    """Authentication failed; carries the response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__("authentication required")
        self.response = response
