"""The dashboard's login page: trade a token for an HttpOnly, SameSite=Strict cookie.

Only apps built with :class:`~backfill_sa.admin.auth.TokenAuth` have one; with your
own authenticator, signing in is your application's business and ``/login`` is 404.
The page has no script; a form posts the token, and a wrong token is logged
(:mod:`backfill_sa.admin.audit`). Cross-site posts are refused, as for the API.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from backfill_sa.admin.audit import audit_login
from backfill_sa.admin.auth import COOKIE, TokenAuth
from backfill_sa.admin.protocol import forbidden_origin, page_headers

__all__ = ["LoginPages"]

_BODY_MAX = 4096
_STYLE = """
:root{--bg:#f7f7f8;--fg:#1c1c1f;--muted:#6b6b76;--card:#fff;--line:#e3e3e8;--accent:#2f5bd3;
--bad:#c0392b}
@media (prefers-color-scheme:dark){:root{--bg:#141417;--fg:#e8e8ec;--muted:#9a9aa6;
--card:#1d1d22;--line:#2c2c33;--accent:#7ea0ff;--bad:#ff6b5e}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
background:var(--bg);color:var(--fg);display:flex;justify-content:center;padding:12vh 16px}
form{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:24px;
width:100%;max-width:360px}
h1{font-size:18px;margin:0 0 16px}
label{display:block;color:var(--muted);font-size:13px;margin-bottom:4px}
input{width:100%;font:inherit;padding:8px;border:1px solid var(--line);border-radius:6px;
background:var(--bg);color:var(--fg)}
button{margin-top:16px;width:100%;font:inherit;padding:8px;border-radius:6px;cursor:pointer;
border:1px solid var(--accent);background:var(--accent);color:#fff}
.error{color:var(--bad);margin:0 0 12px}
"""


_HEADERS = page_headers(None, _STYLE)


def _page(error: str | None, status: int) -> HTMLResponse:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>backfill_sa admin: sign in</title>'
        f"<style>{_STYLE}</style></head><body>"
        '<form method="post" action="login"><h1>backfill_sa admin</h1>'
        f'{message}<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        'required autofocus><button type="submit">Sign in</button></form></body></html>\n'
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + "/"


class LoginPages:
    """``GET /login``, ``POST /login`` and ``POST /logout`` for ``auth`` (None: no page)."""

    def __init__(self, auth: TokenAuth | None) -> None:
        self.auth = auth

    async def page(self, request: Request) -> Response:
        """GET /login: the sign-in form."""
        if self.auth is None:
            return _not_found()
        return _page(None, 200)

    async def submit(self, request: Request) -> Response:
        """POST /login: check the token; on success set the cookie and go to the dashboard."""
        if self.auth is None:
            return _not_found()
        if forbidden_origin(request):
            return _page("Cross-site sign-in refused.", 403)
        raw = await request.body()
        fields = dict(parse_qsl(raw[:_BODY_MAX].decode("utf-8", "replace"), max_num_fields=4))
        token = fields.get("token", "").strip()
        user = self.auth.check(token) if token else None
        client = request.client.host if request.client else "unknown"
        audit_login(user.name if user else None, client)
        if user is None:
            return _page("That token is not valid.", 401)
        response = Response(status_code=303, headers={"Location": _root(request)})
        response.set_cookie(
            COOKIE,
            token,
            path=_root(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """POST /logout: forget the cookie and show the sign-in form."""
        if self.auth is None:
            return _not_found()
        if forbidden_origin(request):
            return _page("Cross-site sign-out refused.", 403)
        response = Response(status_code=303, headers={"Location": _root(request) + "login"})
        response.delete_cookie(COOKIE, path=_root(request), httponly=True, samesite="strict")
        return response


def _not_found() -> Response:
    return Response(
        "no login page: this app uses the application's own authentication",
        status_code=404,
        media_type="text/plain",
    )
