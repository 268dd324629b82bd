"""assert_enqueued / refute_enqueued / enqueued_jobs inside the test's transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from backfill_sa.enqueue import enqueue, enqueue_fast
from backfill_sa.models import Job
from backfill_sa.testing import (
    assert_enqueued,
    enqueued_jobs,
    joined_sessionmaker,
    outer_transaction,
    payload_matches,
    refute_enqueued,
)


def test_payload_matches_objects_partially_and_the_rest_exactly() -> None:
    actual = {"order": {"id": 42, "lines": [1, 2]}, "to": "ada@example.com"}

    assert payload_matches({"order": {"id": 42}}, actual)
    assert payload_matches({}, actual)
    assert not payload_matches({"order": {"id": 43}}, actual)
    assert not payload_matches({"order": {"lines": [1]}}, actual)
    assert not payload_matches({"missing": None}, actual)
    assert payload_matches([1, 2], [1, 2])
    assert not payload_matches({"a": 1}, [1])


def test_assert_enqueued_matches_task_payload_queue_priority_and_count(
    backfill_session: Session,
) -> None:
    enqueue_fast(backfill_session, "send_receipt", {"order_id": 42, "to": "ada@example.com"})
    enqueue(backfill_session, "send_receipt", {"order_id": 43})

    found = assert_enqueued(
        backfill_session, task="send_receipt", payload={"order_id": 42}, queue="fast", priority=-5
    )
    assert [j.payload for j in found] == [{"order_id": 42, "to": "ada@example.com"}]
    assert_enqueued(backfill_session, task="send_receipt", count=2)
    assert_enqueued(backfill_session, queue="bulk", count=1)
    refute_enqueued(backfill_session, task="send_receipt", payload={"order_id": 44})
    refute_enqueued(backfill_session, task="other")


def test_assert_enqueued_failure_lists_what_was_enqueued_instead(
    backfill_session: Session,
) -> None:
    enqueue(backfill_session, "send_receipt", {"order_id": 43}, queue="fast")

    with pytest.raises(AssertionError) as failure:
        assert_enqueued(backfill_session, task="send_receipt", payload={"order_id": 42})

    message = str(failure.value)
    assert "expected at least 1 enqueued job(s) with task='send_receipt'" in message
    assert "payload matching {'order_id': 42}" in message
    assert "found 0" in message
    assert "task='send_receipt' queue='fast'" in message
    assert "payload={'order_id': 43}" in message


def test_assert_enqueued_with_count_fails_on_more(backfill_session: Session) -> None:
    enqueue(backfill_session, "a", {})
    enqueue(backfill_session, "a", {})

    with pytest.raises(AssertionError, match="expected 1 enqueued job"):
        assert_enqueued(backfill_session, task="a", count=1)


def test_assert_enqueued_on_an_empty_queue_says_so(backfill_session: Session) -> None:
    with pytest.raises(AssertionError, match="no job is enqueued"):
        assert_enqueued(backfill_session, task="a")


def test_refute_enqueued_fails_listing_the_matches(backfill_session: Session) -> None:
    enqueue(backfill_session, "a", {"n": 1})

    with pytest.raises(AssertionError, match=r"(?s)expected no enqueued job with task='a'.*'n': 1"):
        refute_enqueued(backfill_session, task="a")


def test_enqueued_jobs_lists_scheduled_jobs_with_their_state(backfill_session: Session) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    enqueue(backfill_session, "now", {})
    enqueue(backfill_session, "later", {}, run_at=later)

    jobs = enqueued_jobs(backfill_session)

    assert [(j.task, j.state) for j in jobs] == [("now", "available"), ("later", "scheduled")]
    assert enqueued_jobs(backfill_session, task="later")[0].run_at == later


def test_committed_jobs_are_rolled_back_with_the_outer_transaction(
    backfill_engine: Engine,
) -> None:
    with outer_transaction(backfill_engine) as connection:
        maker = joined_sessionmaker(connection)
        with maker() as session, session.begin():
            enqueue(session, "a", {})  # commit() releases a savepoint only
        with maker() as session:
            assert_enqueued(session, task="a", count=1)
        with backfill_engine.connect() as outside:
            assert outside.scalar(select(func.count()).select_from(Job)) == 0

    with backfill_engine.connect() as after:
        assert after.scalar(select(func.count()).select_from(Job)) == 0


def test_a_rolled_back_session_drops_its_jobs_but_not_the_tests(
    backfill_sessionmaker: sessionmaker[Session], backfill_session: Session
) -> None:
    enqueue(backfill_session, "kept", {})
    backfill_session.commit()
    with backfill_sessionmaker() as other:
        enqueue(other, "dropped", {})
        other.rollback()

    assert [j.task for j in enqueued_jobs(backfill_session)] == ["kept"]
