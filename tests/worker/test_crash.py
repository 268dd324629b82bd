"""Crashes: a worker killed with SIGKILL mid-batch, and every connection cut under a worker."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from subprocess import Popen
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from backfill_sa.config import WorkerConfig
from backfill_sa.enqueue import JobSpec
from backfill_sa.statements.worker_sql import job_claim_batch, job_complete_and_claim
from backfill_sa.tasks import JobContext, TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.worker.conftest import (
    UNFINISHED,
    add,
    add_jobs,
    count,
    create_result_tables,
    execute,
    poll_db,
    read_json_line,
    rows,
    start_script,
    unfinished,
    wait_for,
)
from tests.worker.proxy import FaultyProxy


def _named(database_url: str, application_name: str) -> str:
    """``database_url`` with an ``application_name``, to find its sessions on the server."""
    url = make_url(database_url).update_query_dict({"application_name": application_name})
    return url.render_as_string(hide_password=False)


def _sessions(admin_engine: Engine, application_name: str) -> list[dict[str, Any]]:
    with admin_engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND application_name = :app"
            ),
            {"app": application_name},
        )
        return [dict(r._mapping) for r in found]


def _terminate(admin_engine: Engine, pids: list[int]) -> int:
    with admin_engine.connect() as conn:
        killed = conn.execute(
            text("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest(:p) pid"),
            {"p": pids},
        )
        return int(killed.scalar_one())


async def test_sigkill_mid_batch_then_rescue_completes_every_job_once(
    *,
    database_url: str,
    schema: str,
    sync_engine: Engine,
    admin_engine: Engine,
    async_engine: AsyncEngine,
    config: Callable[..., WorkerConfig],
    processes: list[Popen[str]],
) -> None:
    create_result_tables(sync_engine)
    ids = add_jobs(sync_engine, [JobSpec("record", {"n": n}) for n in range(24)])
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    proc = start_script(
        "worker_proc.py",
        *("--url", _named(database_url, victim), "--schema", schema),
        *("--worker-id", victim, "--concurrency", "4", "--sleep", "0.3"),
    )
    processes.append(proc)
    assert read_json_line(proc) == {"ready": True}
    poll_db(
        lambda: (
            unfinished(sync_engine) <= len(ids) - 4
            and count(sync_engine, "jobs", "state = 'running'") >= 1
        ),
        what="some jobs done and some running",
    )

    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    # Statements the victim sent just before dying finish on the server first.
    poll_db(lambda: not _sessions(admin_engine, victim), what="the victim's sessions to end")

    left = rows(
        sync_engine, f"SELECT id, state, locked_by, attempts FROM {{s}}.jobs WHERE {UNFINISHED}"
    )
    held = {r["id"] for r in left if r["state"] == "running"}
    waiting = {r["id"] for r in left if r["state"] != "running"}
    finished = set(ids) - held - waiting
    assert held, "the kill landed while jobs were running"
    assert finished, "the kill landed after some jobs were completed"
    assert {r["locked_by"] for r in left if r["state"] == "running"} == {victim}
    assert all(r["attempts"] == 1 for r in left if r["id"] in held)
    # The victim's heartbeat and leader lease would expire in 60 s; age them now.
    execute(
        sync_engine,
        "UPDATE {s}.workers SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :w",
        w=victim,
    )
    execute(sync_engine, "UPDATE {s}.leader SET expires_at = now() - interval '1 second'")

    registry = TaskRegistry()
    quoted = f'"{schema}"'

    @registry.task("record")
    async def record(payload: Any, ctx: JobContext) -> None:
        async with async_engine.begin() as conn:
            await conn.execute(
                text(f"INSERT INTO {quoted}.runs (job_id, worker_id, attempt) VALUES (:j, :w, :a)"),
                {"j": ctx.job_id, "w": ctx.worker_id, "a": ctx.attempt},
            )
            await conn.execute(
                text(
                    f"INSERT INTO {quoted}.results (job_id, worker_id) VALUES (:j, :w)"
                    " ON CONFLICT DO NOTHING"
                ),
                {"j": ctx.job_id, "w": ctx.worker_id},
            )

    runner = WorkerRunner(config(worker_id="rescuer", queues={"bulk": 8}), registry)
    result = await runner.run_once()

    assert result.rescued == len(held)
    assert (result.succeeded, result.retried, result.dead_lettered) == (len(left), 0, 0)
    assert unfinished(sync_engine) == 0
    assert count(sync_engine, "dead_letter_jobs") == 0
    done = rows(sync_engine, "SELECT job_id FROM {s}.results")
    assert sorted(r["job_id"] for r in done) == ids
    runs = rows(sync_engine, "SELECT job_id, worker_id, attempt FROM {s}.runs")
    by_victim = Counter(r["job_id"] for r in runs if r["worker_id"] == victim)
    by_rescuer = {r["job_id"]: r["attempt"] for r in runs if r["worker_id"] == "rescuer"}
    assert len(by_rescuer) == sum(r["worker_id"] == "rescuer" for r in runs)  # once each
    # Completed before the kill: ran once, by the victim, never again.
    assert {j: by_victim[j] for j in finished} == dict.fromkeys(finished, 1)
    assert finished.isdisjoint(by_rescuer)
    # Held by the victim: run again after the rescue, with the lost attempt counted.
    assert {j: by_rescuer.get(j) for j in held} == dict.fromkeys(held, 2)
    assert all(by_victim[j] <= 1 for j in held)
    # Never claimed: run once, by the rescuer.
    assert {j: by_rescuer.get(j) for j in waiting} == dict.fromkeys(waiting, 1)
    assert not any(by_victim[j] for j in waiting)


async def test_worker_recovers_when_all_its_connections_are_terminated(
    *,
    database_url: str,
    schema: str,
    sync_engine: Engine,
    admin_engine: Engine,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    app = f"bf-{schema}"
    total = 150
    ran: Counter[int] = Counter()
    enough = asyncio.Event()
    all_done = asyncio.Event()
    pinged = asyncio.Event()

    @registry.task("work")
    async def work(payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(0.02)
        ran[ctx.job_id] += 1
        if len(ran) >= 30:
            enough.set()
        if len(ran) == total:
            all_done.set()

    @registry.task("ping")
    async def ping(payload: Any, ctx: JobContext) -> None:
        pinged.set()

    ids = add_jobs(sync_engine, [JobSpec("work", {"n": n}) for n in range(total)])
    runner = WorkerRunner(
        config(
            database_url=_named(database_url, app),
            queues={"bulk": 4},
            poll_interval=timedelta(seconds=30),  # so recovery cannot lean on polling
        ),
        registry,
    )
    handle = runner.start()
    try:
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            what="the LISTEN connection",
        )
        listener = runner.listener
        assert listener is not None
        await asyncio.wait_for(enough.wait(), timeout=20)

        # Round 1, mid-run: every session of the worker, the LISTEN one included.
        sessions = await asyncio.to_thread(_sessions, admin_engine, app)
        assert any(s["query"].startswith("LISTEN") for s in sessions), sessions
        assert len(sessions) >= 2
        killed = await asyncio.to_thread(_terminate, admin_engine, [s["pid"] for s in sessions])
        assert killed == len(sessions)
        assert not all_done.is_set(), "the cut landed mid-run"

        await asyncio.wait_for(all_done.wait(), timeout=60)
        await wait_for(
            lambda: listener.connections_made >= 2 and listener.connected.is_set(),
            what="the LISTEN connection to come back",
        )

        # Round 2, idle: cut everything again, then wake the worker with a NOTIFY only.
        reconnected = listener.connections_made
        sessions = await asyncio.to_thread(_sessions, admin_engine, app)
        await asyncio.to_thread(_terminate, admin_engine, [s["pid"] for s in sessions])
        await wait_for(
            lambda: listener.connections_made > reconnected and listener.connected.is_set(),
            what="the LISTEN connection to come back again",
        )
        add(sync_engine, "ping")
        await asyncio.wait_for(pinged.wait(), timeout=10)
    finally:
        await asyncio.wait_for(handle.stop(), timeout=20)

    assert ran == dict.fromkeys(ids, 1)  # every job ran, none twice
    assert unfinished(sync_engine) == 0
    assert count(sync_engine, "dead_letter_jobs") == 0


def is_claim(schema: str) -> Callable[[str], bool]:
    """Whether SQL is one of the worker's claims (batches of up to 4) in ``schema``.

    The proxy loses the reply of the claim itself: other statements (the LISTEN
    connection's probe, heartbeats) return rows too, at times of their own.
    """
    claims = {
        statement.for_schema(schema, {"limit": limit})
        for statement in (job_claim_batch, job_complete_and_claim)
        for limit in range(1, 5)
    }
    return claims.__contains__


async def test_claim_whose_reply_was_lost_is_not_left_running(
    *,
    database_url: str,
    sync_engine: Engine,
    schema: str,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    """The server commits a claim, the connection dies before the reply arrives.

    The worker never learns which jobs it claimed. They must not stay ``running``
    under a live worker's name (the rescuer leaves live workers' claims alone for
    the 30-minute stale-lock timeout): the worker has to give them back.
    """
    total = 10
    ran: Counter[int] = Counter()
    all_done = asyncio.Event()

    @registry.task("work")
    async def work(payload: Any, ctx: JobContext) -> None:
        ran[ctx.job_id] += 1
        if len(ran) == total:
            all_done.set()

    proxy = FaultyProxy(database_url)
    via_proxy = await proxy.start()
    runner = WorkerRunner(
        config(
            database_url=via_proxy,
            worker_id="lossy",
            queues={"bulk": 4},
        ),
        registry,
    )
    handle = runner.start()
    try:
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            what="the LISTEN connection",
        )
        proxy.arm(is_claim(schema))
        ids = add_jobs(sync_engine, [JobSpec("work", {"n": n}) for n in range(total)])
        await asyncio.wait_for(proxy.tripped.wait(), timeout=10)
        lost = rows(sync_engine, "SELECT id FROM {s}.jobs WHERE state = 'running'")
        assert len(lost) == 4, "the claim of 4 jobs committed; its reply was swallowed"
        assert proxy.cut_dark() == 1

        try:
            await asyncio.wait_for(all_done.wait(), timeout=10)
        except asyncio.TimeoutError:
            stuck = rows(
                sync_engine,
                "SELECT id, state, locked_by, attempts FROM {s}.jobs ORDER BY id",
            )
            raise AssertionError(
                f"jobs never ran: {sorted(set(ids) - set(ran))}; still in the table: {stuck}"
            ) from None
    finally:
        result = await asyncio.wait_for(handle.stop(), timeout=20)
        await proxy.close()

    assert ran == dict.fromkeys(ids, 1)
    assert result.succeeded == total
    assert unfinished(sync_engine) == 0


async def test_stop_is_not_held_up_by_a_claim_whose_reply_never_comes(
    *,
    database_url: str,
    sync_engine: Engine,
    schema: str,
    registry: TaskRegistry,
    config: Callable[..., WorkerConfig],
) -> None:
    """The claim commits, its reply never arrives and the connection stays open.

    A network that drops packets without a reset leaves the fetcher waiting for a
    reply for as long as TCP keeps the connection. A stop must still return (after
    at most the shutdown timeout for that claim), and the jobs the lost claim took
    must run once, under the next worker, once this one has unregistered.
    """
    total = 10
    ran: Counter[int] = Counter()

    @registry.task("work")
    async def work(payload: Any, ctx: JobContext) -> None:
        ran[ctx.job_id] += 1

    proxy = FaultyProxy(database_url)
    via_proxy = await proxy.start()
    runner = WorkerRunner(
        config(database_url=via_proxy, worker_id="dark", queues={"bulk": 4}), registry
    )
    handle = runner.start()
    try:
        await wait_for(
            lambda: runner.listener is not None and runner.listener.connected.is_set(),
            what="the LISTEN connection",
        )
        proxy.arm(is_claim(schema))
        ids = add_jobs(sync_engine, [JobSpec("work", {"n": n}) for n in range(total)])
        await asyncio.wait_for(proxy.tripped.wait(), timeout=10)
        taken = rows(sync_engine, "SELECT id FROM {s}.jobs WHERE state = 'running'")
        assert len(taken) == 4, "the claim of 4 jobs committed; its reply is held"
        # The claim's connection stays open, silent: no cut_dark().
        first = await asyncio.wait_for(handle.stop(), timeout=20)
    finally:
        await proxy.close()

    assert first.succeeded == 0
    assert count(sync_engine, "workers", "id = 'dark'") == 0, "the stopped worker unregistered"
    second = await WorkerRunner(config(worker_id="next"), registry).run(burst=True)
    assert second.rescued == 4
    assert second.succeeded == total
    assert ran == dict.fromkeys(ids, 1)
    assert unfinished(sync_engine) == 0
