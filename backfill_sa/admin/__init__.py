"""Optional admin HTTP API and dashboard (the ``admin`` extra: Starlette and uvicorn).

This package is the only part of backfill_sa that imports a web framework, and
``import backfill_sa`` never loads it. Two entry points:

* :func:`create_app` returns an ASGI app for an engine you own: serve it with any
  ASGI server or mount it into your Starlette/FastAPI application;
* :func:`serve` runs it with uvicorn from a database URL (what
  ``python -m backfill_sa admin`` calls).

There is no authentication built in: bind to localhost, or put the app behind your
own authentication; ``read_only=True`` refuses every change. See ``docs/admin.md``.

Example::

    from backfill_sa.admin import create_app

    admin = create_app(engine, schema="backfill", read_only=True)
    app.mount("/admin", admin)  # FastAPI / Starlette
"""

from __future__ import annotations

try:
    from backfill_sa.admin.app import create_app
    from backfill_sa.admin.server import serve
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name not in ("starlette", "uvicorn"):
        raise
    raise ModuleNotFoundError(
        f"backfill_sa.admin needs {exc.name}: install the 'admin' extra "
        "(pip install -e '.[admin]' in a clone of backfill_sa)",
        name=exc.name,
    ) from exc

__all__ = ["create_app", "serve"]
