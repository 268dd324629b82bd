"""Eight worker processes of concurrency 10 on one queue, direct and through PgBouncer.

Every job is completed exactly once (each handler run is logged to a file, so a
second run of any job would show). The test prints throughput and the most
connections each worker held (run with ``-s``). CI drains 5,000 jobs; the full
50,000 of docs/reliability.md run with ``nox -s many_workers`` (which sets
``BACKFILL_RELIABILITY_JOBS=50000``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from backfill_sa.enqueue import JobSpec
from tests.reliability.conftest import DATABASE, OwnSchema
from tests.reliability.procs import WorkerProc, ended_once, read_runs, started_together
from tests.reliability.servers import PgBouncer
from tests.worker.conftest import add_jobs, count, poll_db

pytestmark = pytest.mark.slow

WORKERS = 8
CONCURRENCY = 10
JOBS = int(os.environ.get("BACKFILL_RELIABILITY_JOBS", "5000"))


class PeakSampler:
    """Samples ``sample()`` (worker id -> connections) every 200 ms; keeps each worker's peak."""

    def __init__(self, sample: Callable[[], Counter[str]]) -> None:
        self.sample = sample
        self.peak: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-sampler")

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                now = self.sample()
            except Exception:  # a sample lost to load is only a missed sample
                continue
            for worker, n in now.items():
                self.peak[worker] = max(self.peak[worker], n)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _server_sessions(own_schema: OwnSchema) -> Counter[str]:
    with own_schema.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE application_name LIKE 'many-%' GROUP BY 1"
            )
        )
        return Counter({name: int(n) for name, n in found})


def _bouncer_clients(bouncer: PgBouncer) -> Counter[str]:
    # The admin console speaks the simple query protocol only: psql does.
    out = subprocess.run(
        [
            *("psql", "-h", "127.0.0.1", "-p", str(bouncer.port), "-U", "postgres"),
            *("-X", "-A", "-F", "\t", "-c", "SHOW CLIENTS", "pgbouncer"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.splitlines()
    header = out[0].split("\t")
    column = header.index("application_name")
    names = [line.split("\t")[column] for line in out[1:] if "\t" in line]
    return Counter(n for n in names if n.startswith("many-"))


@pytest.mark.parametrize("route", ["direct", "pgbouncer"])
def test_eight_workers_complete_every_job_exactly_once(
    route: str, request: pytest.FixtureRequest, own_schema: OwnSchema, tmp_path: Path
) -> None:
    if route == "pgbouncer":
        bouncer: PgBouncer = request.getfixturevalue("bouncer")
        url = bouncer.url_for(DATABASE)
        # LISTEN straight to the server; claims and completions through the pooler.
        extra: tuple[str, ...] = ("--pooled", "--listen-url", own_schema.url)
        sample: Callable[[], Counter[str]] = lambda: _bouncer_clients(bouncer)  # noqa: E731
    else:
        url, extra = own_schema.url, ()
        sample = lambda: _server_sessions(own_schema)  # noqa: E731
    ids = add_jobs(own_schema.engine, [JobSpec("record", {"n": n}) for n in range(JOBS)])
    procs = [
        WorkerProc.start(
            url=url,
            schema=own_schema.name,
            worker_id=f"many-{route}-{i}",
            runs_dir=tmp_path,
            # Not a burst: each worker runs as in production (LISTEN, heartbeats,
            # maintenance), so the connections sampled are what a deployment holds.
            extra=(*extra, "--concurrency", str(CONCURRENCY), "--wait-go"),
        )
        for i in range(WORKERS)
    ]
    with PeakSampler(sample) as sampler, started_together(procs) as started:
        poll_db(lambda: count(own_schema.engine, "jobs") == 0, timeout=600, what="the drain")
        elapsed = time.monotonic() - started
        for p in procs:
            p.proc.send_signal(signal.SIGTERM)
        counts = [p.finish(timeout=60) for p in procs]
    runs = read_runs(p.runs for p in procs)
    ended = ended_once(runs)
    per_worker = Counter(r.worker for r in runs if r.event == "end")
    print(
        f"\n{route}: {JOBS} jobs, {WORKERS}x{CONCURRENCY}: {elapsed:.1f}s,"
        f" {JOBS / elapsed:.0f} jobs/s (from the start signal to an empty table);"
        f" peak connections per worker {sorted(sampler.peak.values())};"
        f" jobs per worker {sorted(per_worker.values())}"
    )
    assert sorted(ended) == ids
    assert [job_id for job_id, n in ended.items() if n > 1] == []
    assert len(runs) == 2 * JOBS  # one start and one end per job: nothing ran twice
    assert sum(c["succeeded"] for c in counts) == JOBS
    assert {(c["retried"], c["dead_lettered"], c["refused"]) for c in counts} == {(0, 0, 0)}
    assert count(own_schema.engine, "jobs") == 0
    assert count(own_schema.engine, "dead_letter_jobs") == 0
    assert len(per_worker) >= 2, per_worker  # the processes really shared the queue
