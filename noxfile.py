"""Developer sessions: ``nox -s lint typecheck tests`` (what CI checks) and ``nox -s bench``.

Tests and benchmarks need PostgreSQL: ``DATABASE_URL``, else the embedded server
(extra ``embedded``; its data directory is in README.md, "The embedded PostgreSQL").
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks (see pyproject)."""
    session.install("-e", ".[dev,embedded]")
    session.run("mypy", "--strict")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against a real PostgreSQL; extra arguments go to pytest.

    Runs on the interpreter nox runs on; ``nox -s tests --python 3.10`` picks another.
    """
    session.install("-e", ".[dev,embedded]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks: ``python -m benchmarks run``; extra arguments go to it."""
    session.install("-e", ".[dev,embedded,bench]")
    session.run("python", "-m", "benchmarks", "run", *session.posargs)
