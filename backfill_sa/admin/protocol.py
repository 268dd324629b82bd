"""HTTP plumbing of the admin app: JSON responses, errors, page headers, origin check.

Errors share one JSON shape, ``{"error": code, "message": text}`` plus ``field`` and
``rule`` when one input is at fault, so a client can point at the bad field.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import json

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["ApiError", "JsonResponse", "forbidden_origin", "page_headers"]


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


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def page_headers(script: str | None, style: str) -> dict[str, str]:
    """Security headers of an HTML page carrying exactly this inline ``script`` and ``style``.

    A Content-Security-Policy that allows that script and style (by hash), requests
    and form posts to the page's own origin only, and no framing (no clickjacking).
    """
    script_src = _sha256(script) if script is not None else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {script_src}; style-src {_sha256(style)}; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
