"""HTTP plumbing of the admin API: JSON responses, errors, parameter parsing, origin check.

Errors share one JSON shape, ``{"error": code, "message": text}`` plus ``field`` and
``rule`` when one input is at fault, so a client can point at the bad field.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
from collections.abc import Collection, Mapping
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "BIGINT_MAX",
    "ApiError",
    "JsonResponse",
    "enum_param",
    "forbidden_origin",
    "int_param",
    "json_body",
    "path_id",
    "query_params",
    "text_field",
]

BIGINT_MAX = 2**63 - 1
"""The largest id PostgreSQL's bigint holds."""
_E = TypeVar("_E", bound=enum.Enum)


class ApiError(Exception):
    """An error response: HTTP ``status``, a short ``code`` and a message.

    Args:
        status: HTTP status code.
        code: machine-readable error kind (``invalid``, ``not_found``, ``conflict``,
            ``forbidden``, ...).
        message: one sentence for people.
        field: the input at fault, if one is.
        rule: what that input must be.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.rule = rule
        super().__init__(message)

    @classmethod
    def invalid(cls, field: str, rule: str) -> ApiError:
        """Return a 400 error naming the bad ``field`` and the ``rule`` it breaks."""
        return cls(400, "invalid", f"{field}: {rule}", field=field, rule=rule)

    @classmethod
    def not_found(cls, what: str, field: str = "id") -> ApiError:
        """Return a 404 error saying which ``what`` does not exist."""
        return cls(404, "not_found", f"{what} does not exist", field=field)

    def response(self) -> JsonResponse:
        """Return this error as a JSON response."""
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.rule is not None:
            body["rule"] = self.rule
        return JsonResponse(body, status_code=self.status)


def _default(value: object) -> object:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonResponse(Response):
    """A JSON response that serialises datetimes (ISO 8601) and is never cached."""

    media_type = "application/json"

    def __init__(self, content: object, status_code: int = 200) -> None:
        super().__init__(content, status_code, headers={"Cache-Control": "no-store"})

    def render(self, content: object) -> bytes:
        """Serialise ``content`` to compact UTF-8 JSON."""
        return json.dumps(
            content, default=_default, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")


def query_params(request: Request, allowed: Collection[str]) -> dict[str, str]:
    """Return the query parameters, empty values dropped, after checking their names.

    Raises:
        ApiError: a parameter is unknown, given twice, or contains a NUL character.
    """
    seen: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise ApiError.invalid(key, f"is not a known parameter (expected: {expected})")
        if key in seen:
            raise ApiError.invalid(key, "must be given at most once")
        seen[key] = value
    return {key: text_field(key, value) for key, value in seen.items() if value != ""}


def text_field(field: str, value: object) -> str:
    """Return ``value`` if it is a string PostgreSQL can store.

    Raises:
        ApiError: not a string, or it contains a NUL character.
    """
    if not isinstance(value, str):
        raise ApiError.invalid(field, "must be a string")
    if "\x00" in value:
        raise ApiError.invalid(field, "must not contain NUL characters")
    return value


def int_param(
    params: Mapping[str, str], field: str, *, default: int, minimum: int, maximum: int
) -> int:
    """Return the whole number ``params[field]`` (``default`` when absent).

    Raises:
        ApiError: not a whole number, or outside ``minimum``..``maximum``.
    """
    raw = params.get(field)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError.invalid(field, "must be a whole number") from None
    if not minimum <= value <= maximum:
        raise ApiError.invalid(field, f"must be between {minimum} and {maximum}")
    return value


def enum_param(enum_type: type[_E], field: str, value: str | None) -> _E | None:
    """Return the member of ``enum_type`` whose value is ``value`` (None stays None).

    Raises:
        ApiError: ``value`` is not one of the members' values.
    """
    if value is None:
        return None
    try:
        return enum_type(value)
    except ValueError:
        names = ", ".join(str(member.value) for member in enum_type)
        raise ApiError.invalid(field, f"must be one of {names}") from None


def path_id(request: Request, name: str = "id") -> int:
    """Return the id in the URL path, a positive bigint.

    Raises:
        ApiError: the path segment is not a whole number from 1 to 2**63-1.
    """
    raw = str(request.path_params[name])
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= BIGINT_MAX:
        raise ApiError.invalid(name, f"must be a whole number from 1 to {BIGINT_MAX}")
    return int(raw)


async def json_body(
    request: Request, allowed: Collection[str], *, required: bool
) -> dict[str, object]:
    """Return the request's JSON object body after checking its keys.

    An empty body is ``{}`` unless ``required``.

    Raises:
        ApiError: the body is missing (when required), not a JSON object, or has a
            key outside ``allowed``.
    """
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError.invalid("body", "must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError.invalid("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError.invalid("body", "must be a JSON object")
    for key in body:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            raise ApiError.invalid(key, f"is not a known field (expected: {expected})")
    return body


def forbidden_origin(request: Request) -> bool:
    """Return True when a browser sent this request from another site (CSRF).

    Browsers say where a request comes from: ``Sec-Fetch-Site`` (modern browsers),
    else ``Origin``. Requests without either (curl, scripts) are not cross-origin.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = origin.split("://", 1)[-1]
    return origin == "null" or host.lower() != request.headers.get("host", "").lower()
