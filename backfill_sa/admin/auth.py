"""Who is calling the admin app: bearer tokens, your own auth callable, or nobody (insecure).

``create_app(engine, auth=...)`` takes one of:

* :class:`TokenAuth`: bearer tokens compared in constant time, each with a name and a
  read-only flag; :meth:`TokenAuth.from_env` reads ``BACKFILL_ADMIN_TOKEN`` and
  ``BACKFILL_ADMIN_READONLY_TOKEN``. The dashboard's login page stores the token in
  an ``HttpOnly``, ``SameSite=Strict`` cookie;
* any callable ``(request) -> Principal | None`` (sync or async): the application that
  mounts the admin app decides with its own login (``None`` means 401);
* :func:`insecure_no_auth`: everybody may do everything, for a local demo only.
"""

from __future__ import annotations

import hmac
import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request

from backfill_sa.errors import ConfigurationError

__all__ = [
    "COOKIE",
    "Authenticator",
    "InsecureNoAuth",
    "Principal",
    "TokenAuth",
    "authenticate",
    "insecure_no_auth",
]

COOKIE = "backfill_admin_token"
"""The dashboard's login cookie (holds the token; HttpOnly, SameSite=Strict)."""
TOKEN_MIN = 16
"""The shortest token :class:`TokenAuth` accepts (characters)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: who it is, as the audit log names them.
        read_only: may look but not change anything (mutations answer 403).
    """

    name: str
    read_only: bool = False


Authenticator = Callable[[Request], "Principal | Awaitable[Principal | None] | None"]
"""Your own authentication: given the request, the caller, or ``None`` for 401."""


class TokenAuth:
    """Bearer tokens, each standing for a :class:`Principal`.

    A request authenticates with ``Authorization: Bearer <token>`` or with the
    dashboard's login cookie. Tokens are compared with :func:`hmac.compare_digest`,
    against every configured token, so timing tells nothing about any of them.

    Args:
        tokens: token -> principal. Each token must be at least 16 characters.

    Raises:
        ConfigurationError: no tokens, or a token is too short or has whitespace.

    Example::

        auth = TokenAuth({os.environ["ADMIN_TOKEN"]: Principal("ops")})
        app = create_app(engine, auth=auth)
    """

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        if not tokens:
            raise ConfigurationError("tokens", "must name at least one token")
        for token in tokens:
            if len(token) < TOKEN_MIN or token != token.strip() or " " in token:
                raise ConfigurationError(
                    "tokens", f"each token must be at least {TOKEN_MIN} characters, no spaces"
                )
        self._tokens = [(token.encode(), principal) for token, principal in tokens.items()]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TokenAuth | None:
        """Return the tokens of ``BACKFILL_ADMIN_TOKEN`` (read-write, named ``admin``)
        and ``BACKFILL_ADMIN_READONLY_TOKEN`` (named ``read-only``), or None if neither
        is set.

        Raises:
            ConfigurationError: a token is too short, or both variables hold the same.
        """
        env = os.environ if environ is None else environ
        tokens: dict[str, Principal] = {}
        admin = env.get("BACKFILL_ADMIN_TOKEN", "")
        viewer = env.get("BACKFILL_ADMIN_READONLY_TOKEN", "")
        if admin and admin == viewer:
            raise ConfigurationError(
                "BACKFILL_ADMIN_READONLY_TOKEN", "must differ from BACKFILL_ADMIN_TOKEN"
            )
        if admin:
            tokens[admin] = Principal("admin")
        if viewer:
            tokens[viewer] = Principal("read-only", read_only=True)
        if not tokens:
            return None
        try:
            return cls(tokens)
        except ConfigurationError as exc:
            name = "BACKFILL_ADMIN_TOKEN" if admin else "BACKFILL_ADMIN_READONLY_TOKEN"
            raise ConfigurationError(name, exc.rule) from None

    def check(self, token: str) -> Principal | None:
        """Return the principal of ``token``, or None if it is none of the tokens."""
        given = token.encode()
        found: Principal | None = None
        for expected, principal in self._tokens:
            if hmac.compare_digest(given, expected) and found is None:
                found = principal
        return found

    def __call__(self, request: Request) -> Principal | None:
        """Return the caller of ``request`` (bearer header, else login cookie), or None."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header and scheme.lower() == "bearer":
            return self.check(token.strip())
        cookie = request.cookies.get(COOKIE)
        return self.check(cookie) if cookie else None


class InsecureNoAuth:
    """Lets everybody in, as ``anonymous``, read-write: see :func:`insecure_no_auth`."""

    def __call__(self, request: Request) -> Principal:
        """Return the ``anonymous`` read-write principal, whatever the request."""
        return Principal("anonymous")


def insecure_no_auth() -> InsecureNoAuth:
    """Return an authenticator that lets everybody in, as ``anonymous``, read-write.

    Only for a local demo: anyone who reaches the port can change everything.
    """
    return InsecureNoAuth()


async def authenticate(auth: TokenAuth | Authenticator, request: Request) -> Principal | None:
    """Run ``auth`` (sync or async) on ``request``.

    Raises:
        TypeError: ``auth`` returned something other than a Principal or None.
    """
    found = auth(request)
    if inspect.isawaitable(found):
        found = await found
    if found is not None and not isinstance(found, Principal):
        raise TypeError(f"auth must return a Principal or None, not {type(found).__name__}")
    return found
