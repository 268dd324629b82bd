"""Argument parsing for the CLI: the parser class, value types, and the options every command takes.

Usage errors are one line on stderr naming the flag, with exit code 2. The options
every command takes (``--schema``, ``--log-level``) are accepted before or after the
command's own words (``dlq --schema s list`` and ``dlq list --schema s`` alike): they
are defined at each level with ``SUPPRESS`` defaults, so a lower level never resets
what a higher one set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any, NoReturn

__all__ = [
    "LOG_LEVELS",
    "Parser",
    "aware_datetime",
    "bare_command",
    "common_options",
    "duration",
    "int_value",
    "json_value",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "queue_spec",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` on one line and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def bare_command(parser: argparse.ArgumentParser, what: str) -> int:
    """Answer a command given without its ``what``: its help on stdout, one line on
    stderr saying what is missing, and exit code 2 (a usage error)."""
    parser.print_help()
    print(f"{parser.prog}: error: {what} is required (see above)", file=sys.stderr)
    return 2


def common_options() -> Parser:
    """Return the parent parser of the options every command takes."""
    common = Parser(add_help=False)
    common.add_argument(
        "--schema",
        default=argparse.SUPPRESS,
        help="schema of backfill_sa's tables (env BACKFILL_SCHEMA; default backfill)",
    )
    common.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="worker: INFO, demo: ERROR, others: WARNING",
    )
    return common


def positive_int(value: str) -> int:
    """A whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def non_negative_int(value: str) -> int:
    """A whole number of at least 0."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more")
    return number


def positive_float(value: str) -> float:
    """A finite number above 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number above 0")
    return number


def queue_spec(value: str) -> tuple[str, int]:
    """``NAME=CONCURRENCY``."""
    name, sep, count = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r} must be NAME=CONCURRENCY, e.g. fast=10")
    try:
        return name.strip(), positive_int(count)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: concurrency {exc}") from None


def json_value(value: str) -> Any:
    """Any JSON text."""
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None


def aware_datetime(value: str) -> dt.datetime:
    """An ISO 8601 date-time with a time zone (``Z`` allowed)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date-time, e.g. 2030-01-31T09:00:00+00:00"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a time zone offset, e.g. +00:00 or Z")
    return moment


def int_value(value: str) -> int:
    """Any whole number."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


_DURATION_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def duration(value: str) -> dt.timedelta:
    """A duration such as ``7d``, ``12h``, ``1d12h``, ``30m`` or ``90s``."""
    text = value.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration; write e.g. 7d, 12h, 1d12h, 30m or 90s"
        )
    total = dt.timedelta()
    for number, unit in parts:
        total += dt.timedelta(**{_UNITS[unit]: int(number)})
    return total
