"""Optional admin HTTP API and dashboard (the ``admin`` extra: Starlette and uvicorn).

This package is the only part of backfill_sa that imports a web framework, and
``import backfill_sa`` never loads it. Two entry points:

* :func:`create_app` returns an ASGI app for an engine you own: serve it with any
  ASGI server or mount it into your Starlette/FastAPI application;
* :func:`serve` runs it with uvicorn from a database URL (what
  ``python -m backfill_sa admin`` calls).

Every request must authenticate: with bearer tokens (:class:`TokenAuth`, which the
standalone server reads from ``BACKFILL_ADMIN_TOKEN`` and
``BACKFILL_ADMIN_READONLY_TOKEN``), or with your application's own login through an
``auth`` callable that returns a :class:`Principal`. ``read_only=True`` refuses every
change. ``/openapi.json`` describes the API. See ``docs/admin.md``.

Example::

    from backfill_sa.admin import Principal, TokenAuth, create_app

    auth = TokenAuth({os.environ["ADMIN_TOKEN"]: Principal("ops")})
    app.mount("/admin", create_app(engine, auth=auth))  # FastAPI / Starlette
"""

from __future__ import annotations

try:
    from backfill_sa.admin.app import create_app
    from backfill_sa.admin.auth import (
        Authenticator,
        InsecureNoAuth,
        Principal,
        TokenAuth,
        insecure_no_auth,
    )
    from backfill_sa.admin.server import serve
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name not in ("starlette", "uvicorn"):
        raise
    raise ModuleNotFoundError(
        f"backfill_sa.admin needs {exc.name}: install the 'admin' extra "
        "(pip install -e '.[admin]' in a clone of backfill_sa)",
        name=exc.name,
    ) from exc

__all__ = [
    "Authenticator",
    "InsecureNoAuth",
    "Principal",
    "TokenAuth",
    "create_app",
    "insecure_no_auth",
    "serve",
]
