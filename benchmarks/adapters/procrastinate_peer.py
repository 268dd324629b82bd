"""procrastinate adapter: ``defer_async`` / ``batch_defer_async``; its own worker CLI.

Workers run ``procrastinate worker --concurrency 10`` with its defaults (LISTEN/NOTIFY on,
finished jobs kept with status ``succeeded``, as procrastinate does unless told).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from procrastinate import App, PsycopgConnector

from benchmarks.adapters import Adapter, Payload, Poller, SqlPoller, WorkerSpec
from benchmarks.probe import LATENCY_FILE_ENV

__all__ = ["ProcrastinateAdapter"]


class ProcrastinateAdapter(Adapter):
    """procrastinate in database ``bench_proc``."""

    name: ClassVar[str] = "procrastinate"
    distribution: ClassVar[str] = "procrastinate"
    database: ClassVar[str] = "bench_proc"
    tables: ClassVar[tuple[str, ...]] = (
        "procrastinate_jobs",
        "procrastinate_events",
        "procrastinate_periodic_defers",
        "procrastinate_workers",
    )

    _app: App | None = None

    async def setup(self) -> None:
        """Create ``bench_proc`` and apply procrastinate's schema there.

        Raises:
            psycopg.Error: the server refused.
        """
        self.server.create_database(self.database)
        app = App(connector=PsycopgConnector(conninfo=self.dsn))
        await app.open_async()
        await app.schema_manager.apply_schema_async()
        self._app = app

    async def close(self) -> None:
        """Close the app's connection pool."""
        if self._app is not None:
            await self._app.close_async()
            self._app = None

    @property
    def app(self) -> App:
        """The harness's procrastinate app (after :meth:`setup`)."""
        if self._app is None:
            raise RuntimeError("procrastinate adapter: setup() has not run")
        return self._app

    async def enqueue_one(
        self, task: str, payload: Payload, *, queue: str = "bench", priority: int = 0
    ) -> None:
        """``defer_async``: one job, one autocommitted statement from the pool."""
        kwargs: dict[str, Any] = dict(payload)
        await self.app.configure_task(task, queue=queue, priority=priority).defer_async(**kwargs)

    async def enqueue_batch(
        self, task: str, payloads: Sequence[Payload], *, queue: str = "bench", priority: int = 0
    ) -> None:
        """``batch_defer_async``: the batch in one statement."""
        deferrer = self.app.configure_task(task, queue=queue, priority=priority)
        rows: list[dict[str, Any]] = [dict(p) for p in payloads]
        await deferrer.batch_defer_async(*rows)

    def worker(self, queues: Mapping[str, int], latency_file: Path) -> WorkerSpec:
        """``procrastinate worker`` on the queues, concurrency their sum."""
        env = self.base_env()
        env.update({"BENCH_DSN": self.dsn, LATENCY_FILE_ENV: str(latency_file)})
        return WorkerSpec(
            argv=[
                self.python,
                "-m",
                "procrastinate",
                "--app",
                "benchmarks.procrastinate_app.app",
                "worker",
                "--concurrency",
                str(sum(queues.values())),
                "--queues",
                ",".join(queues),
            ],
            env=env,
        )

    def open_poller(self) -> Poller:
        """Count jobs still to do or doing."""
        return SqlPoller(self.dsn, "procrastinate_jobs", "status IN ('todo', 'doing')")
