"""Dead-letter queue administration against a real PostgreSQL, sync and async."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import inspect
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from backfill_sa import dlq
from backfill_sa.dlq import (
    DeadLetterNotFoundError,
    annotate_dead_letter,
    annotate_dead_letter_async,
    count_dead_letters,
    count_dead_letters_async,
    delete_dead_letters,
    delete_dead_letters_async,
    get_dead_letter,
    get_dead_letter_async,
    list_dead_letters,
    list_dead_letters_async,
    purge_dead_letters,
    purge_dead_letters_async,
    requeue_dead_letters,
    requeue_dead_letters_async,
)
from backfill_sa.errors import JobValidationError
from backfill_sa.models import DeadLetterJob, FailureReason, Job
from backfill_sa.notify import channel_for

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def _entry(**overrides: Any) -> DeadLetterJob:
    values: dict[str, Any] = {
        "original_job_id": 1000,
        "task": "send_email",
        "queue": "bulk",
        "payload": {"to": "a@example.com"},
        "priority": 0,
        "job_key": None,
        "max_attempts": 8,
        "failure_reason": FailureReason.MAX_ATTEMPTS_EXCEEDED.value,
        "failure_count": 8,
        "last_error": {"type": "ValueError", "message": "boom"},
        "retry_policy": None,
        "meta": {"tag": "x"},
        "original_created_at": T0,
        "original_run_at": T0,
        "failed_at": T0,
    }
    values.update(overrides)
    return DeadLetterJob(**values)


def _insert(engine: Engine, *entries: DeadLetterJob) -> list[int]:
    with Session(engine) as session, session.begin():
        session.add_all(entries)
        session.flush()
        return [e.id for e in entries]


@pytest.fixture
def session(sync_engine: Engine) -> Iterator[Session]:
    with Session(sync_engine) as s:
        yield s


# -- list / count / get ---------------------------------------------------------------


def test_list_filters_and_orders_newest_first(sync_engine: Engine, session: Session) -> None:
    a, b, c, d = _insert(
        sync_engine,
        _entry(task="a", failed_at=T0),
        _entry(task="a", queue="fast", failed_at=T0 + dt.timedelta(hours=1)),
        _entry(
            task="b",
            failure_reason=FailureReason.PERMANENT_ERROR.value,
            failed_at=T0 + dt.timedelta(hours=2),
        ),
        _entry(task="a", failed_at=T0 + dt.timedelta(hours=3)),
    )
    assert [e.id for e in list_dead_letters(session)] == [d, c, b, a]
    assert [e.id for e in list_dead_letters(session, task="a")] == [d, b, a]
    assert [e.id for e in list_dead_letters(session, task="a", queue="fast")] == [b]
    by_reason = list_dead_letters(session, failure_reason=FailureReason.PERMANENT_ERROR)
    assert [e.id for e in by_reason] == [c]
    window = list_dead_letters(
        session,
        failed_after=T0 + dt.timedelta(hours=1),
        failed_before=T0 + dt.timedelta(hours=3),
    )
    assert [e.id for e in window] == [c, b]
    assert [e.id for e in list_dead_letters(session, limit=2, offset=1)] == [c, b]
    assert count_dead_letters(session) == 4
    assert count_dead_letters(session, task="a") == 3
    assert count_dead_letters(session, failed_before=T0 + dt.timedelta(minutes=1)) == 1
    entry = get_dead_letter(session, c)
    assert entry is not None
    assert (entry.task, entry.payload, entry.meta) == ("b", {"to": "a@example.com"}, {"tag": "x"})
    assert get_dead_letter(session, d + 1000) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"failed_after": dt.datetime(2026, 1, 1)}, "failed_after"),
        ({"failed_before": dt.datetime(2026, 1, 1)}, "failed_before"),
    ],
)
def test_list_rejects_bad_arguments(session: Session, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(JobValidationError) as info:
        list_dead_letters(session, **kwargs)
    assert info.value.field == field


# -- requeue ----------------------------------------------------------------------------


def test_requeue_moves_entry_into_jobs(sync_engine: Engine, session: Session) -> None:
    (entry_id,) = _insert(
        sync_engine,
        _entry(
            task="charge",
            queue="fast",
            payload={"amount": 3},
            priority=-10,
            job_key="charge-1",
            max_attempts=5,
            retry_policy={"max_attempts": 5},
            requeued_count=2,
            notes="card fixed",
            meta={"traceparent": "00-abc", "backfill": {"other": 1}},
        ),
    )
    with session.begin():
        result = requeue_dead_letters(session, [entry_id])
        db_now = session.execute(select(func.now())).scalar_one()
    assert result.requeued_ids == (entry_id,)
    assert result.skipped_ids == ()
    (job_id,) = result.job_ids

    job = session.get(Job, job_id)
    assert job is not None
    assert (job.task, job.queue, job.payload, job.priority) == (
        "charge",
        "fast",
        {"amount": 3},
        -10,
    )
    assert (job.state, job.attempts, job.max_attempts, job.job_key) == (
        "available",
        0,
        5,
        "charge-1",
    )
    assert job.retry_policy == {"max_attempts": 5}
    assert job.last_error == {"type": "ValueError", "message": "boom"}
    assert job.created_at == T0
    assert job.run_at == db_now
    assert job.locked_by is None
    assert job.meta["traceparent"] == "00-abc"
    bookkeeping = job.meta["backfill"]
    assert bookkeeping["other"] == 1
    assert bookkeeping["requeued_count"] == 3
    assert bookkeeping["dead_letter_notes"] == "card fixed"
    assert bookkeeping["dead_letter_id"] == entry_id
    assert bookkeeping["original_job_id"] == 1000
    assert dt.datetime.fromisoformat(bookkeeping["last_requeued_at"]) == db_now
    assert get_dead_letter(session, entry_id) is None
    assert count_dead_letters(session) == 0


def test_requeue_overrides_and_future_run_at(sync_engine: Engine, session: Session) -> None:
    ids = _insert(sync_engine, _entry(task="a"), _entry(task="a"), _entry(task="b"))
    later = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    with session.begin():
        result = requeue_dead_letters(
            session, task="a", run_at=later, queue_override="fast", max_attempts=2
        )
    assert result.requeued_ids == tuple(ids[:2])
    jobs = session.execute(select(Job).where(Job.id.in_(result.job_ids))).scalars().all()
    assert {(j.state, j.queue, j.max_attempts, j.run_at) for j in jobs} == {
        ("scheduled", "fast", 2, later)
    }
    assert [e.task for e in list_dead_letters(session)] == ["b"]


def test_requeue_past_run_at_is_available(sync_engine: Engine, session: Session) -> None:
    (entry_id,) = _insert(sync_engine, _entry())
    with session.begin():
        (job_id,) = requeue_dead_letters(session, [entry_id], run_at=T0).job_ids
    job = session.get(Job, job_id)
    assert job is not None
    assert (job.state, job.run_at) == ("available", T0)


def test_requeue_skips_entry_whose_key_is_live(sync_engine: Engine, session: Session) -> None:
    clash, free, dup_old, dup_new = _insert(
        sync_engine,
        _entry(job_key="k1"),
        _entry(job_key="k2"),
        _entry(job_key="k3"),
        _entry(job_key="k3"),
    )
    with session.begin():
        session.add(Job(task="live", job_key="k1"))
    with session.begin():
        result = requeue_dead_letters(session, [clash, free, dup_old, dup_new])
    assert result.requeued_ids == (free, dup_new)
    assert set(result.skipped_ids) == {clash, dup_old}
    keys = session.execute(select(Job.job_key, Job.task).order_by(Job.job_key)).all()
    assert [tuple(r) for r in keys] == [("k1", "live"), ("k2", "send_email"), ("k3", "send_email")]
    assert {e.id for e in list_dead_letters(session)} == {clash, dup_old}


def test_requeue_needs_ids_or_filter(session: Session) -> None:
    with pytest.raises(JobValidationError) as info:
        requeue_dead_letters(session)
    assert info.value.field == "ids"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"run_at": dt.datetime(2026, 1, 1)}, "run_at"),
        ({"queue_override": ""}, "queue_override"),
        ({"queue_override": "q" * 101}, "queue_override"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 40000}, "max_attempts"),
    ],
)
def test_requeue_rejects_bad_options(
    sync_engine: Engine, session: Session, kwargs: dict[str, Any], field: str
) -> None:
    (entry_id,) = _insert(sync_engine, _entry())
    with pytest.raises(JobValidationError) as info:
        requeue_dead_letters(session, [entry_id], **kwargs)
    assert info.value.field == field
    session.rollback()
    assert count_dead_letters(session) == 1


def test_requeue_rolls_back_with_caller(sync_engine: Engine, session: Session) -> None:
    (entry_id,) = _insert(sync_engine, _entry())
    requeue_dead_letters(session, [entry_id])
    session.rollback()
    assert count_dead_letters(session) == 1
    assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_requeue_notifies_workers_on_commit(
    sync_engine: Engine, session: Session, schema: str
) -> None:
    ids = _insert(sync_engine, _entry(queue="fast"), _entry(queue="fast"), _entry(queue="bulk"))
    with sync_engine.connect() as listener:
        raw = listener.connection.driver_connection
        assert raw is not None
        listener.execute(text(f'LISTEN "{channel_for(schema)}"'))
        listener.commit()
        with session.begin():
            requeue_dead_letters(session, ids)
        listener.execute(text("SELECT 1"))
        payloads = sorted(n.payload for n in raw.notifies(timeout=5, stop_after=2))
    assert payloads == ["bulk", "fast"]


def test_requeued_job_dead_lettered_again_keeps_count(
    sync_engine: Engine, session: Session
) -> None:
    """The worker's DLQ move reads metadata->'backfill'->>'requeued_count'."""
    from backfill_sa.statements.jobs_runtime import job_dead_letter_many

    (entry_id,) = _insert(sync_engine, _entry(requeued_count=1))
    with session.begin():
        (job_id,) = requeue_dead_letters(session, [entry_id]).job_ids
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state="running", lease=1, attempts=1, locked_by="w")
        )
        session.execute(
            job_dead_letter_many,
            {"ids": [job_id], "leases": [1], "reasons": ["permanent_error"], "errors": [None]},
        )
    (again,) = list_dead_letters(session)
    assert (again.original_job_id, again.requeued_count) == (job_id, 2)


# -- delete / purge / annotate -----------------------------------------------------------


def test_delete_by_ids_and_filters(sync_engine: Engine, session: Session) -> None:
    a, b, c, _d = _insert(
        sync_engine,
        _entry(task="a"),
        _entry(task="a", failed_at=T0 + dt.timedelta(days=1)),
        _entry(task="b", failure_reason=FailureReason.UNKNOWN_TASK.value),
        _entry(task="c"),
    )
    loaded = get_dead_letter(session, a)
    with session.begin_nested():
        assert delete_dead_letters(session, [a, c], task="a") == 1
    assert loaded is not None
    assert sa_inspect(loaded).was_deleted
    assert delete_dead_letters(session, failure_reason=FailureReason.UNKNOWN_TASK) == 1
    assert delete_dead_letters(session, failed_before=T0 + dt.timedelta(hours=1)) == 1
    session.commit()
    assert [e.id for e in list_dead_letters(session)] == [b]
    with pytest.raises(JobValidationError) as info:
        delete_dead_letters(session)
    assert info.value.field == "ids"


def test_purge_older_than(sync_engine: Engine, session: Session) -> None:
    now = dt.datetime.now(UTC)
    _old, _older, fresh = _insert(
        sync_engine,
        _entry(failed_at=now - dt.timedelta(days=8)),
        _entry(failed_at=now - dt.timedelta(days=30)),
        _entry(failed_at=now - dt.timedelta(days=1)),
    )
    with session.begin():
        assert purge_dead_letters(session, older_than=dt.timedelta(days=7)) == 2
    assert [e.id for e in list_dead_letters(session)] == [fresh]
    with pytest.raises(JobValidationError) as info:
        purge_dead_letters(session, older_than=dt.timedelta(seconds=-1))
    assert info.value.field == "older_than"


def test_annotate(sync_engine: Engine, session: Session) -> None:
    (entry_id,) = _insert(sync_engine, _entry())
    loaded = get_dead_letter(session, entry_id)
    assert loaded is not None
    annotate_dead_letter(session, entry_id, "looked at it")
    assert loaded.notes == "looked at it"
    session.commit()
    with Session(sync_engine) as other:
        again = get_dead_letter(other, entry_id)
        assert again is not None
        assert again.notes == "looked at it"
    with pytest.raises(DeadLetterNotFoundError) as info:
        annotate_dead_letter(session, entry_id + 1, "nope")
    assert info.value.entry_id == entry_id + 1


# -- async twins --------------------------------------------------------------------------


async def test_async_twins(sync_engine: Engine, async_engine: AsyncEngine) -> None:
    now = dt.datetime.now(UTC)
    a, b, c, d = _insert(
        sync_engine,
        _entry(task="a", job_key="ka", failed_at=now - dt.timedelta(days=10)),
        _entry(task="a", failed_at=now - dt.timedelta(hours=1)),
        _entry(task="b", failed_at=now - dt.timedelta(minutes=1)),
        _entry(task="c", job_key="kd", failed_at=now),
    )
    with Session(sync_engine) as s, s.begin():
        s.add(Job(task="live", job_key="kd"))
    async with AsyncSession(async_engine) as session:
        assert [e.id for e in await list_dead_letters_async(session, task="a")] == [b, a]
        assert await count_dead_letters_async(session, task="a") == 2
        got = await get_dead_letter_async(session, c)
        assert got is not None
        assert got.task == "b"
        assert await get_dead_letter_async(session, d + 99) is None
        await annotate_dead_letter_async(session, c, "note")
        assert got.notes == "note"
        with pytest.raises(DeadLetterNotFoundError):
            await annotate_dead_letter_async(session, d + 99, "x")
        await session.commit()

        result = await requeue_dead_letters_async(session, [c, d])
        assert (result.requeued_ids, result.skipped_ids) == ((c,), (d,))
        job = await session.get(Job, result.job_ids[0])
        assert job is not None
        assert job.meta["backfill"]["dead_letter_notes"] == "note"
        assert job.meta["backfill"]["requeued_count"] == 1
        await session.commit()
        with pytest.raises(JobValidationError):
            await requeue_dead_letters_async(session)

        assert await purge_dead_letters_async(session, older_than=dt.timedelta(days=7)) == 1
        assert await delete_dead_letters_async(session, task="a") == 1
        with pytest.raises(JobValidationError):
            await delete_dead_letters_async(session)
        await session.commit()
        assert [e.id for e in await list_dead_letters_async(session)] == [d]


def test_sync_and_async_twins_share_signatures() -> None:
    """The async twin of every function takes the same arguments (no drift)."""
    names = [n for n in dlq.__all__ if n.endswith("_async")]
    assert len(names) == 8
    for name in names:
        sync_sig = inspect.signature(getattr(dlq, name.removesuffix("_async")))
        async_sig = inspect.signature(getattr(dlq, name))
        assert list(sync_sig.parameters)[1:] == list(async_sig.parameters)[1:], name
        for param in list(sync_sig.parameters)[1:]:
            s, a = sync_sig.parameters[param], async_sig.parameters[param]
            assert (s.kind, s.default, s.annotation) == (a.kind, a.default, a.annotation), name
        assert sync_sig.return_annotation == async_sig.return_annotation, name


async def test_docs_snippets_run(sync_engine: Engine, async_engine: AsyncEngine) -> None:
    """The ```python blocks of docs/dlq.md run, in order, against a real database."""
    doc = Path(__file__).parents[2] / "docs" / "dlq.md"
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), flags=re.S | re.M)
    assert len(blocks) == 3
    now = dt.datetime.now(UTC)
    _insert(
        sync_engine,
        _entry(task="send_email", failed_at=now),
        _entry(task="send_email", job_key="mail-2", failed_at=now),
        _entry(task="other", failure_reason=FailureReason.PERMANENT_ERROR.value, failed_at=now),
        _entry(task="ancient", failed_at=now - dt.timedelta(days=31)),
    )
    with Session(sync_engine) as s, s.begin():
        s.add(Job(task="live", job_key="mail-2"))
    namespace: dict[str, Any] = {"engine": sync_engine}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)
    result = namespace["result"]
    assert (len(result.requeued_ids), len(result.skipped_ids)) == (1, 1)
    await namespace["retry_permanent_failures"](async_engine)
    with Session(sync_engine) as session:
        assert [e.job_key for e in list_dead_letters(session)] == ["mail-2"]
        tasks = session.execute(select(Job.task).order_by(Job.id)).scalars().all()
        assert tasks == ["live", "send_email", "other"]


def test_concurrent_requeues_of_one_entry_make_one_job(
    sync_engine: Engine, admin_engine: Engine
) -> None:
    """The second requeue waits on the entry's row lock, then finds it gone."""
    (entry_id,) = _insert(sync_engine, _entry())
    with Session(sync_engine) as first, Session(sync_engine) as second:
        first_result = requeue_dead_letters(first, [entry_id])
        first_pid = first.execute(select(func.pg_backend_pid())).scalar_one()
        second_pid = second.execute(select(func.pg_backend_pid())).scalar_one()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(requeue_dead_letters, second, [entry_id])
            with admin_engine.connect() as admin:
                blocked = text("SELECT :blocker = ANY(pg_blocking_pids(:pid))")
                for _ in range(500):  # until the second requeue is waiting on our lock
                    if admin.execute(blocked, {"blocker": first_pid, "pid": second_pid}).scalar():
                        break
                    threading.Event().wait(0.01)
                else:
                    pytest.fail("the second requeue never waited for the first")
            first.commit()
            second_result = pending.result(timeout=30)
        second.commit()
    assert len(first_result.job_ids) == 1
    assert second_result == dlq.RequeueResult((), (), ())
    with Session(sync_engine) as session:
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == 1
        assert count_dead_letters(session) == 0
