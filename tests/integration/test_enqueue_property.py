"""Property tests: valid enqueue arguments round-trip exactly; invalid ones write nothing.

One schema and one engine per driver serve the whole module; the jobs table is
cleared before each example.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, delete, event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from backfill_sa.dburl import async_url, sync_url
from backfill_sa.enqueue import (
    EnqueueOutcome,
    JobSpec,
    enqueue,
    enqueue_async,
    enqueue_batch,
    enqueue_many,
)
from backfill_sa.errors import JobValidationError
from backfill_sa.migrations import upgrade
from backfill_sa.models import Job
from backfill_sa.retry import RetryPolicy

EXAMPLES = settings(max_examples=60, deadline=None)

# --- strategies -----------------------------------------------------------------

# PostgreSQL text holds any Unicode but NUL; unpaired surrogates are not Unicode.
_chars = st.characters(codec="utf-8", exclude_characters="\x00")


def _names(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_chars, min_size=1, max_size=max_size)


# jsonb keeps numbers as numeric: floats written without an exponent (|x| < 1e16)
# come back as the same float; larger ones come back as integers (documented).
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    st.text(_chars, max_size=20),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(_chars, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_json_objects = st.dictionaries(st.text(_chars, max_size=8), _json, max_size=4)
_offsets = st.sampled_from([-720, -330, 0, 60, 345, 840]).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
_run_ats = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=_offsets
)


@st.composite
def _retry_policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.integers(1, 10**6))
    return RetryPolicy(
        max_attempts=draw(st.integers(1, 32767)),
        initial_delay=dt.timedelta(milliseconds=initial),
        max_delay=dt.timedelta(milliseconds=initial + draw(st.integers(0, 10**7))),
        multiplier=draw(st.floats(1.0, 10.0)),
        jitter=draw(st.floats(0.0, 1.0)),
    )


_valid_arguments = st.fixed_dictionaries(
    {
        "task": _names(200),
        "payload": st.none() | _json,
        "queue": _names(100),
        "priority": st.integers(-32768, 32767),
        "run_at": st.none() | _run_ats,
        "max_attempts": st.none() | st.integers(1, 32767),
        "retry": st.none() | _retry_policies(),
        "job_key": st.none() | _names(512),
        "job_key_mode": st.sampled_from(["replace", "preserve_run_at", "unsafe_dedupe"]),
        "metadata": st.none() | _json_objects,
    }
)

_bad_leaves = st.sampled_from(
    [float("nan"), float("inf"), -math.inf, {1, 2}, Decimal(1), b"x", "a\x00b", "\ud800"]
)
# (argument, bad value, the field the error must name)
_invalid_arguments = st.one_of(
    st.tuples(st.just("task"), st.sampled_from(["", "t" * 201, "a\x00", 7]), st.just("task")),
    st.tuples(st.just("queue"), st.sampled_from(["", "q" * 101, 7]), st.just("queue")),
    st.tuples(st.just("job_key"), st.sampled_from(["", "k" * 513]), st.just("job_key")),
    st.tuples(
        st.just("priority"),
        st.integers(max_value=-32769) | st.integers(min_value=32768) | st.just(True),
        st.just("priority"),
    ),
    st.tuples(st.just("run_at"), st.datetimes(), st.just("run_at")),
    st.tuples(
        st.just("max_attempts"),
        st.integers(max_value=0) | st.integers(min_value=32768),
        st.just("max_attempts"),
    ),
    st.tuples(
        st.just("job_key_mode"),
        _names(20).filter(lambda s: s not in ("replace", "preserve_run_at", "unsafe_dedupe")),
        st.just("job_key_mode"),
    ),
    st.tuples(
        st.just("payload"),
        st.tuples(_json, _bad_leaves).map(lambda t: {"ok": t[0], "bad": [t[0], t[1]]}),
        st.just("payload.bad[1]"),
    ),
    st.tuples(
        st.just("payload"),
        _json.map(lambda value: {"bad": [value, {7: value}]}),
        st.just("payload.bad[1][7]"),
    ),
    st.tuples(st.just("metadata"), st.lists(_json, max_size=3), st.just("metadata")),
    st.tuples(
        st.just("metadata"), _bad_leaves.map(lambda leaf: {"m": leaf}), st.just("metadata.m")
    ),
    st.tuples(
        st.just("max_payload_bytes"),
        st.integers(2, 30),
        st.just("payload"),  # with a 40-character payload below
    ),
)

# --- fixtures: one schema, one engine per driver, for the module ----------------


@pytest.fixture(scope="module")
def prop_schema(admin_engine: Engine) -> Iterator[str]:
    name = f"p_{uuid.uuid4().hex[:12]}"
    upgrade(admin_engine, schema=name)
    yield name
    with admin_engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture(scope="module")
def engine(database_url: str, prop_schema: str) -> Iterator[Engine]:
    engine = create_engine(
        sync_url(database_url),
        execution_options={"schema_translate_map": {"backfill": prop_schema}},
    )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def async_runner(
    database_url: str, prop_schema: str
) -> Iterator[tuple[asyncio.AbstractEventLoop, AsyncEngine]]:
    """An asyncpg engine and the one event loop its connections belong to."""
    loop = asyncio.new_event_loop()
    engine = create_async_engine(
        async_url(database_url),
        execution_options={"schema_translate_map": {"backfill": prop_schema}},
    )
    yield loop, engine
    loop.run_until_complete(engine.dispose())
    loop.close()


# --- checks ---------------------------------------------------------------------


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(Job))


def _snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(Job).order_by(Job.id))]


def _check_round_trip(engine: Engine, args: dict[str, Any], job_id: int) -> None:
    with Session(engine) as session:
        job = session.get_one(Job, job_id)
        now = session.execute(select(text("now()"))).scalar_one()
    retry: RetryPolicy | None = args["retry"]
    assert job.task == args["task"]
    assert job.queue == args["queue"]
    assert job.payload == ({} if args["payload"] is None else args["payload"])
    assert job.meta == ({} if args["metadata"] is None else args["metadata"])
    assert job.priority == args["priority"]
    assert job.job_key == args["job_key"]
    assert job.retry_policy == (None if retry is None else retry.to_json())
    expected_attempts = args["max_attempts"] or (retry.max_attempts if retry else 8)
    assert job.max_attempts == expected_attempts
    assert job.attempts == 0
    run_at: dt.datetime | None = args["run_at"]
    if run_at is None:
        assert job.state == "available"
    else:
        assert job.run_at == run_at
        if abs(run_at - now) > dt.timedelta(minutes=1):
            assert job.state == ("scheduled" if run_at > now else "available")


@EXAMPLES
@given(args=_valid_arguments)
def test_valid_arguments_round_trip_sync(engine: Engine, args: dict[str, Any]) -> None:
    _reset(engine)
    with Session(engine) as session, session.begin():
        result = enqueue(session, **args)
    assert result.outcome is EnqueueOutcome.INSERTED
    _check_round_trip(engine, args, result.id)


@EXAMPLES
@given(args=_valid_arguments)
def test_valid_arguments_round_trip_async(
    engine: Engine,
    async_runner: tuple[asyncio.AbstractEventLoop, AsyncEngine],
    args: dict[str, Any],
) -> None:
    loop, async_engine = async_runner
    _reset(engine)

    async def run() -> int:
        async with AsyncSession(async_engine) as session, session.begin():
            return (await enqueue_async(session, **args)).id

    _check_round_trip(engine, args, loop.run_until_complete(run()))


@EXAMPLES
@given(batch=st.lists(_valid_arguments, min_size=2, max_size=6))
def test_valid_batches_round_trip(engine: Engine, batch: list[dict[str, Any]]) -> None:
    """enqueue_many's batch statement (jobs without keys) keeps every field too."""
    for args in batch:
        args["job_key"] = None
    _reset(engine)
    with Session(engine) as session, session.begin():
        results = enqueue_many(session, [JobSpec(**args) for args in batch])
    assert [r.outcome for r in results] == [EnqueueOutcome.INSERTED] * len(batch)
    for args, result in zip(batch, results, strict=True):
        _check_round_trip(engine, args, result.id)


@EXAMPLES
@given(args=_valid_arguments, payloads=st.lists(st.none() | _json, min_size=1, max_size=6))
def test_valid_shared_batches_round_trip(
    engine: Engine, args: dict[str, Any], payloads: list[object]
) -> None:
    """enqueue_batch's statement (shared options, a JSON array of payloads) keeps every
    field of every job."""
    options = {k: v for k, v in args.items() if k not in ("task", "payload", "job_key")}
    del options["job_key_mode"]
    _reset(engine)
    with Session(engine) as session, session.begin():
        results = enqueue_batch(session, args["task"], payloads, **options)
    assert [r.outcome for r in results] == [EnqueueOutcome.INSERTED] * len(payloads)
    for payload, result in zip(payloads, results, strict=True):
        _check_round_trip(engine, {**args, "payload": payload, "job_key": None}, result.id)


def _invalid_call(base: dict[str, Any], bad: tuple[str, object, str]) -> tuple[dict[str, Any], str]:
    argument, value, field = bad
    args = {**base, argument: value}
    if argument == "max_payload_bytes":
        args["payload"] = "x" * 40
    return args, field


@EXAMPLES
@given(base=_valid_arguments, bad=_invalid_arguments)
def test_invalid_arguments_raise_and_write_nothing(
    engine: Engine,
    async_runner: tuple[asyncio.AbstractEventLoop, AsyncEngine],
    base: dict[str, Any],
    bad: tuple[str, object, str],
) -> None:
    args, field = _invalid_call(base, bad)
    loop, async_engine = async_runner
    _reset(engine)
    with Session(engine) as session, session.begin():
        enqueue(session, "existing", {"keep": True}, job_key="existing")
    before = _snapshot(engine)
    statements: list[str] = []

    def record(*event_args: Any) -> None:
        statements.append(event_args[2])

    event.listen(engine, "before_cursor_execute", record)
    event.listen(async_engine.sync_engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            with pytest.raises(JobValidationError) as info:
                enqueue(session, **args)
            assert info.value.field == field
            session.commit()

        async def run() -> None:
            async with AsyncSession(async_engine) as session:
                with pytest.raises(JobValidationError) as async_info:
                    await enqueue_async(session, **args)
                assert async_info.value.field == field
                await session.commit()

        loop.run_until_complete(run())
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(async_engine.sync_engine, "before_cursor_execute", record)
    assert statements == []
    assert _snapshot(engine) == before
