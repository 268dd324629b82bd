"""Command-line interface: ``python -m backfill_sa COMMAND``; the only place logging is configured.

Commands: ``migrate``, ``worker``, ``enqueue``, ``dlq``, ``demo``, ``admin``, ``embedded``,
``cron`` and ``queues``.
Every command that needs a database finds it the same way
(:func:`backfill_sa.embedded.resolve_database_url`): ``DATABASE_URL``, else the
embedded PostgreSQL in ``.backfill/`` when the ``embedded`` extra is installed.

Exit codes: 0 success; 1 the work failed (database unreachable, migration failed);
2 bad usage or configuration (a flag, an environment variable, a missing schema),
always with a single line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from backfill_sa.cli_cron import add_cron_command
from backfill_sa.cli_flow import add_queues_command
from backfill_sa.cli_ops import (
    CommandError,
    cmd_dlq,
    cmd_enqueue,
    database_url,
    one_line,
    schema_name,
)
from backfill_sa.errors import (
    BackfillError,
    ConfigurationError,
    JobValidationError,
    MigrationError,
)

if TYPE_CHECKING:
    from backfill_sa.config import WorkerConfig
    from backfill_sa.tasks import TaskRegistry

__all__ = ["build_parser", "load_registry", "main", "run_event_loop", "worker_config"]

T = TypeVar("T")

PROG = "backfill_sa"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------- argument types


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number above 0")
    return number


def _queue_spec(value: str) -> tuple[str, int]:
    name, sep, count = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r} must be NAME=CONCURRENCY, e.g. fast=10")
    try:
        return name.strip(), _positive_int(count)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: concurrency {exc}") from None


def _json_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None


def _aware_datetime(value: str) -> dt.datetime:
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


def _int_value(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


# ---------------------------------------------------------------- shared helpers


def load_registry(spec: str) -> TaskRegistry:
    """Import ``package.module:attribute`` and return the TaskRegistry it names.

    The attribute may also be a function without arguments that returns one. The
    current directory is importable, as it is for ``python -m``.

    Raises:
        CommandError: the module cannot be imported, the attribute is missing, or it
            is not a TaskRegistry.
    """
    from backfill_sa.tasks import TaskRegistry

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"--tasks: {spec!r} must be package.module:registry")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"--tasks: cannot import {module_name!r}: {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CommandError(f"--tasks: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if inspect.isfunction(target):
        try:
            target = target()
        except Exception as exc:
            raise CommandError(
                f"--tasks: {spec}() raised {type(exc).__name__}: {one_line(exc)}"
            ) from exc
    if not isinstance(target, TaskRegistry):
        raise CommandError(f"--tasks: {spec!r} is a {type(target).__name__}, not a TaskRegistry")
    return target


# ---------------------------------------------------------------- commands


def _cmd_migrate(args: argparse.Namespace) -> int:
    from backfill_sa.migrations.runner import run_migrate

    schema = schema_name(args)
    if args.action == "current" and (args.revision or args.sql):
        raise CommandError("migrate current: takes neither a revision nor --sql")
    # --sql never connects: it only needs a URL to pick the dialect.
    url = os.environ.get("DATABASE_URL") or "postgresql://localhost/backfill"
    if not args.sql:
        url = database_url()
    try:
        code = run_migrate(
            url,
            schema=schema,
            action=args.action,
            revision=args.revision,
            sql=args.sql,
            out=sys.stdout,
        )
    except MigrationError as exc:
        raise CommandError(str(exc), code=1) from exc
    if code == 0 and args.action != "current" and not args.sql:
        target = args.revision or ("heads" if args.action == "upgrade" else "base")
        print(f"schema {schema!r}: {args.action} to {target} done")
    return code


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """Build the worker's config from the environment with the flags on top.

    ``--queue`` flags, when given, name every queue the worker serves (replacing the
    ``fast``/``bulk`` defaults and their environment variables).

    Raises:
        CommandError: a flag repeats a queue.
        ConfigurationError: an environment variable or flag breaks a rule.
    """
    from backfill_sa.config import WorkerConfig

    overrides: dict[str, object] = {}
    if args.queue:
        queues: dict[str, int] = {}
        for name, limit in args.queue:
            if name in queues:
                raise CommandError(f"--queue: queue {name!r} is given twice")
            queues[name] = limit
        overrides["queues"] = queues
    if args.schema:
        overrides["schema"] = schema_name(args)
    if args.poll_interval_ms is not None:
        overrides["poll_interval"] = timedelta(milliseconds=args.poll_interval_ms)
    if args.shutdown_timeout_secs is not None:
        overrides["shutdown_timeout"] = timedelta(seconds=args.shutdown_timeout_secs)
    # Validate flags and environment before any server is started; the real URL
    # replaces the placeholder once it is known.
    placeholder = os.environ.get("DATABASE_URL") or "postgresql://localhost/unresolved"
    return WorkerConfig.from_env(os.environ, database_url=placeholder, **overrides)


def _cmd_worker(args: argparse.Namespace) -> int:
    config = worker_config(args)
    registry = load_registry(args.tasks)
    config = dataclasses.replace(config, database_url=database_url())

    async def run() -> str:
        from backfill_sa.worker import WorkerRunner

        runner = WorkerRunner(config, registry)
        try:
            ready = await runner.schema_ready()
        except OSError as exc:  # asyncpg's errors are OSError or PostgresError
            raise CommandError(f"database: cannot connect: {one_line(exc)}", code=1) from exc
        except Exception as exc:
            raise CommandError(f"database: {one_line(exc)}", code=1) from exc
        if not ready:
            hint = "" if config.schema == "backfill" else f" --schema {config.schema}"
            raise CommandError(
                f"schema {config.schema!r} has no backfill_sa tables; "
                f"run `python -m backfill_sa migrate{hint}` first"
            )
        result = await runner.run(burst=args.burst, handle_signals=True)
        return (
            f"worker: {result.succeeded} succeeded, {result.retried} retried, "
            f"{result.snoozed} snoozed, {result.dead_lettered} dead-lettered"
        )

    print(run_event_loop(run(), args.loop))
    return 0


def run_event_loop(main_coroutine: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run ``main_coroutine`` to completion on a new event loop and return its result.

    ``loop`` is ``"asyncio"`` (the standard loop), ``"uvloop"`` (the ``uvloop`` extra:
    about an eighth less worker CPU per job in the W3 drain, see docs/benchmarks.md) or ``"auto"``
    (uvloop when it is installed, else asyncio).

    Raises:
        CommandError: ``"uvloop"`` was asked for and it is not installed.
    """
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main_coroutine.close()
                raise CommandError(
                    "--loop uvloop: uvloop is not installed (pip install 'backfill-sa[uvloop]')"
                ) from None
        else:
            result: T = uvloop.run(main_coroutine)
            return result
    return asyncio.run(main_coroutine)


def _cmd_demo(args: argparse.Namespace) -> int:
    from backfill_sa.demo import run_demo

    summary = asyncio.run(
        run_demo(database_url(), schema=args.schema or "backfill_demo", jobs=args.jobs)
    )
    return 0 if summary.ok else 1


def _cmd_embedded(args: argparse.Namespace) -> int:
    from backfill_sa.embedded import (
        embedded_available,
        ensure_embedded_url,
        find_running,
        resolve_data_dir,
        stop_embedded,
    )

    if not embedded_available():
        raise CommandError("embedded: not installed; pip install 'backfill-sa[embedded]'")
    data_dir = resolve_data_dir()
    if args.action == "start":
        print(ensure_embedded_url(data_dir))
    elif args.action == "stop":
        print("stopped" if stop_embedded(data_dir) else f"not running in {data_dir}")
    else:
        running = find_running(data_dir)
        print(running.url if running else f"not running in {data_dir}")
        return 0 if running else 3
    return 0


# ---------------------------------------------------------------- parser


def _cmd_admin(args: argparse.Namespace) -> int:
    try:
        from backfill_sa.admin import serve
    except ImportError as exc:  # the 'admin' extra is not installed
        raise CommandError(f"admin: {exc}; pip install 'backfill-sa[admin]'") from exc

    def ready(url: str) -> None:
        mode = ", read-only" if args.read_only else ""
        mode += ", NO AUTHENTICATION" if args.insecure else ""
        print(f"admin: serving {url} (schema {schema!r}{mode}); Ctrl-C stops", file=sys.stderr)

    schema = schema_name(args)
    serve(
        database_url(),
        schema=schema,
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        insecure=args.insecure,
        on_ready=ready,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m backfill_sa``."""
    parser = _Parser(
        prog=PROG,
        description="PostgreSQL-backed priority job queue for SQLAlchemy.",
        epilog="DATABASE_URL selects the server; unset, an embedded PostgreSQL in "
        ".backfill/ is used when the 'embedded' extra is installed.",
    )
    common = _Parser(add_help=False)
    common.add_argument("--schema", help="schema of backfill_sa's tables (env BACKFILL_SCHEMA)")
    common.add_argument(
        "--log-level",
        type=str.upper,
        choices=_LOG_LEVELS,
        default=None,
        help="worker: INFO, demo: ERROR, others: WARNING",
    )
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one object per line, with job fields and trace ids (default text)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    migrate = commands.add_parser(
        "migrate", parents=[common], help="create, upgrade or downgrade backfill_sa's schema"
    )
    migrate.add_argument("action", choices=("upgrade", "downgrade", "current"))
    migrate.add_argument(
        "revision", nargs="?", help="target (upgrade: heads; downgrade: base, all dropped)"
    )
    migrate.add_argument("--sql", action="store_true", help="print the DDL instead of running it")
    migrate.set_defaults(handler=_cmd_migrate)

    worker = commands.add_parser("worker", parents=[common], help="run jobs")
    worker.add_argument("--tasks", required=True, help="package.module:registry")
    worker.add_argument(
        "--queue",
        action="append",
        type=_queue_spec,
        metavar="NAME=N",
        help="a queue and its concurrency; repeat; replaces fast/bulk (env *_QUEUE_CONCURRENCY)",
    )
    worker.add_argument("--burst", action="store_true", help="run what is due, then exit")
    worker.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or force one",
    )
    worker.add_argument("--poll-interval-ms", type=_positive_int, help="env POLL_INTERVAL_MS")
    worker.add_argument(
        "--shutdown-timeout-secs", type=_positive_float, help="env SHUTDOWN_TIMEOUT_SECS"
    )
    worker.set_defaults(handler=_cmd_worker)

    enqueue = commands.add_parser("enqueue", parents=[common], help="enqueue one job")
    enqueue.add_argument("task")
    enqueue.add_argument("--payload", type=_json_value, default=None, help="JSON payload")
    enqueue.add_argument("--queue")
    enqueue.add_argument("--priority", type=_int_value, help="lower runs first")
    enqueue.add_argument("--run-at", type=_aware_datetime, help="ISO 8601 with a time zone")
    enqueue.add_argument("--max-attempts", type=_positive_int)
    enqueue.add_argument("--job-key")
    enqueue.set_defaults(handler=cmd_enqueue)

    dlq = commands.add_parser("dlq", parents=[common], help="inspect and requeue dead letters")
    dlq_actions = dlq.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    dlq_list = dlq_actions.add_parser("list", parents=[common], help="newest entries first")
    dlq_list.add_argument("--task")
    dlq_list.add_argument("--queue")
    dlq_list.add_argument("--reason", help="e.g. max_attempts_exceeded, permanent_error")
    dlq_list.add_argument("--limit", type=_positive_int, default=50)
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, text in (("requeue", "move entries back to the jobs table"), ("delete", "")):
        action = dlq_actions.add_parser(name, parents=[common], help=text or "delete entries")
        action.add_argument("ids", nargs="+", type=_positive_int, metavar="ID")
    dlq.set_defaults(handler=cmd_dlq)

    demo = commands.add_parser(
        "demo", parents=[common], help="see it work: enqueue, run, retry, dead-letter, requeue"
    )
    demo.add_argument("--jobs", type=_positive_int, default=2000, help="jobs to enqueue")
    demo.set_defaults(handler=_cmd_demo)

    embedded = commands.add_parser(
        "embedded", parents=[common], help="start, stop or show the embedded PostgreSQL"
    )
    embedded.add_argument("action", choices=("start", "stop", "status"))
    embedded.set_defaults(handler=_cmd_embedded)
    admin = commands.add_parser(
        "admin", parents=[common], help="serve the admin API and dashboard (extra 'admin')"
    )
    admin.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: local only)"
    )
    admin.add_argument("--port", type=_positive_int, default=8080, help="TCP port (default 8080)")
    admin.add_argument("--read-only", action="store_true", help="refuse every change (403)")
    admin.add_argument(
        "--insecure",
        action="store_true",
        help="serve WITHOUT authentication, loopback only (default: BACKFILL_ADMIN_TOKEN "
        "is required)",
    )
    admin.set_defaults(handler=_cmd_admin)
    add_cron_command(commands, common)
    add_queues_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code.

    Raises:
        SystemExit: for ``--help`` and usage errors (code 2), as argparse does.
    """
    args = build_parser().parse_args(argv)
    # The demo narrates what happens itself; worker warnings would cut its progress bar.
    default_level = {"worker": "INFO", "demo": "ERROR"}.get(args.command, "WARNING")
    logging.basicConfig(
        level=args.log_level or default_level, handlers=[_log_handler(args.log_format)]
    )
    handler: Command = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        return _fail(args.command, str(exc), exc.code)
    except (ConfigurationError, JobValidationError) as exc:
        return _fail(args.command, str(exc), 2)
    except BrokenPipeError:
        # The reader went away (``... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if not isinstance(exc, (BackfillError, OSError)) and not _is_sqlalchemy_error(exc):
            raise
        return _fail(args.command, f"{type(exc).__name__}: {one_line(exc)}", 1)
    except KeyboardInterrupt:
        return 130


def _log_handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from backfill_sa.telemetry.logs import JsonFormatter, TraceContextFilter

        handler.addFilter(TraceContextFilter())
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _is_sqlalchemy_error(exc: BaseException) -> bool:
    # A command that never loaded SQLAlchemy (the worker) cannot have raised its errors.
    loaded = sys.modules.get("sqlalchemy.exc")
    return loaded is not None and isinstance(exc, loaded.SQLAlchemyError)


def _fail(command: str, message: str, code: int) -> int:
    print(f"{PROG} {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return code
