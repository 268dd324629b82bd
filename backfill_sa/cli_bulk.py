"""Bulk mutations from the CLI: dry runs, the confirmation prompt, chunks and a progress bar.

A command that changes rows chosen by a filter (rather than by ids) counts them
first, then: with ``--dry-run`` says what it would do and stops; otherwise asks
``[y/N]`` on the terminal unless ``--yes`` is given (without a terminal to ask on,
``--yes`` is required). The work then runs in chunks of :data:`CHUNK` rows, one
transaction each, with a progress bar on stderr when it is a terminal and the
optional ``tqdm`` package is installed (extra ``progress``).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from backfill_sa.cli_ops import CommandError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

__all__ = ["CHUNK", "confirm", "in_chunks", "progress"]

CHUNK = 500
"""Rows per transaction in chunked bulk work."""


def confirm(question: str, *, yes: bool, stdin: TextIO | None = None) -> None:
    """Ask ``question [y/N]`` on stderr unless ``yes``; return only on "y".

    Raises:
        CommandError: the answer was not yes (exit code 1), or there is no terminal
            to ask on and ``--yes`` was not given (exit code 2).
    """
    if yes:
        return
    source = stdin or sys.stdin
    if not source.isatty():
        raise CommandError(f"--yes: needed to {question} without a terminal to confirm on")
    print(f"{question}? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = source.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CommandError("not confirmed; nothing changed", code=1)


class _Bar:
    """A progress bar that is tqdm's when it can be shown, else nothing."""

    def __init__(self, total: int, what: str) -> None:
        self._bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, unit=" entries", desc=what, file=sys.stderr)

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def progress(total: int, what: str) -> Iterator[_Bar]:
    """A progress bar over ``total`` rows on stderr (a terminal with tqdm), else silent."""
    bar = _Bar(total, what)
    try:
        yield bar
    finally:
        bar.close()


async def in_chunks(
    engine: AsyncEngine,
    ids: Sequence[int],
    work: Callable[[AsyncSession, list[int]], Awaitable[int]],
    *,
    what: str,
) -> int:
    """Run ``work`` on ``ids`` in chunks of :data:`CHUNK`, a transaction each; sum its results.

    A failure stops the work: the chunks before it stay done (and were counted).
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    done = 0
    with progress(len(ids), what) as bar:
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            async with AsyncSession(engine) as session, session.begin():
                done += await work(session, chunk)
            bar.update(len(chunk))
    return done
