"""WorkerConfig.from_env: environment variables, overrides, and the errors for bad values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill_sa.config import WorkerConfig
from backfill_sa.errors import ConfigurationError

URL = "postgresql://u@localhost/db"


def test_defaults_when_only_the_url_is_set() -> None:
    config = WorkerConfig.from_env({"DATABASE_URL": URL})

    assert config.database_url == URL
    assert config.schema == "backfill"
    assert dict(config.queues) == {"fast": 10, "bulk": 5}
    assert config.poll_interval == timedelta(milliseconds=200)
    assert config.shutdown_timeout == timedelta(seconds=30)
    assert config.stale_lock_cleanup_interval == timedelta(seconds=60)
    assert config.stale_job_lock_timeout == timedelta(minutes=30)


def test_every_variable_is_read() -> None:
    config = WorkerConfig.from_env(
        {
            "DATABASE_URL": URL,
            "BACKFILL_SCHEMA": "jobs_eu",
            "FAST_QUEUE_CONCURRENCY": "3",
            "BULK_QUEUE_CONCURRENCY": " 7 ",
            "POLL_INTERVAL_MS": "50",
            "SHUTDOWN_TIMEOUT_SECS": "4",
            "BACKFILL_RETENTION_SECS": "0",
        }
    )

    assert config.schema == "jobs_eu"
    assert dict(config.queues) == {"fast": 3, "bulk": 7}
    assert config.poll_interval == timedelta(milliseconds=50)
    assert config.shutdown_timeout == timedelta(seconds=4)
    assert config.retention == timedelta(0)


def test_overrides_win_over_the_environment() -> None:
    env = {"DATABASE_URL": URL, "BACKFILL_SCHEMA": "from_env", "POLL_INTERVAL_MS": "900"}

    config = WorkerConfig.from_env(
        env,
        database_url="postgresql://other/db",
        schema="from_flag",
        queues={"emails": 2},
        poll_interval=timedelta(milliseconds=10),
    )

    assert config.database_url == "postgresql://other/db"
    assert config.schema == "from_flag"
    assert dict(config.queues) == {"emails": 2}
    assert config.poll_interval == timedelta(milliseconds=10)


def test_empty_values_fall_back_to_defaults() -> None:
    config = WorkerConfig.from_env(
        {"DATABASE_URL": URL, "BACKFILL_SCHEMA": "", "FAST_QUEUE_CONCURRENCY": " "}
    )

    assert config.schema == "backfill"
    assert config.queues["fast"] == 10


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("BULK_QUEUE_CONCURRENCY", "2")

    config = WorkerConfig.from_env()

    assert config.database_url == URL
    assert config.queues["bulk"] == 2


def test_missing_database_url_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkerConfig.from_env({})

    assert info.value.field == "DATABASE_URL"


@pytest.mark.parametrize(
    "name", ["FAST_QUEUE_CONCURRENCY", "BULK_QUEUE_CONCURRENCY", "POLL_INTERVAL_MS"]
)
@pytest.mark.parametrize("raw", ["abc", "1.5", "ten", "0x10"])
def test_a_non_integer_variable_is_named_in_the_error(name: str, raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkerConfig.from_env({"DATABASE_URL": URL, name: raw})

    assert info.value.field == name
    assert raw in str(info.value)


@pytest.mark.parametrize(
    ("name", "raw", "field"),
    [
        ("FAST_QUEUE_CONCURRENCY", "0", "FAST_QUEUE_CONCURRENCY"),
        ("BULK_QUEUE_CONCURRENCY", "-1", "BULK_QUEUE_CONCURRENCY"),
        ("POLL_INTERVAL_MS", "0", "POLL_INTERVAL_MS"),
        ("SHUTDOWN_TIMEOUT_SECS", "-5", "SHUTDOWN_TIMEOUT_SECS"),
        ("BACKFILL_RETENTION_SECS", "-1", "BACKFILL_RETENTION_SECS"),
        ("BACKFILL_SCHEMA", "Has-Caps", "BACKFILL_SCHEMA"),
    ],
)
def test_out_of_range_values_are_refused(name: str, raw: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkerConfig.from_env({"DATABASE_URL": URL, name: raw})

    assert info.value.field == field


def test_stale_job_lock_timeout_under_five_minutes_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkerConfig.from_env({"DATABASE_URL": URL}, stale_job_lock_timeout=timedelta(minutes=4))

    assert info.value.field == "stale_job_lock_timeout"
    assert WorkerConfig.from_env(
        {"DATABASE_URL": URL}, stale_job_lock_timeout=timedelta(minutes=5)
    ).stale_job_lock_timeout == timedelta(minutes=5)


def test_heartbeat_expiry_must_exceed_the_interval() -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkerConfig.from_env(
            {"DATABASE_URL": URL},
            heartbeat_interval=timedelta(seconds=10),
            heartbeat_expiry=timedelta(seconds=10),
        )

    assert info.value.field == "heartbeat_expiry"


def test_cleanup_can_be_disabled() -> None:
    config = WorkerConfig.from_env({"DATABASE_URL": URL}, stale_lock_cleanup_interval=None)

    assert config.stale_lock_cleanup_interval is None


def test_queues_are_read_only_and_copied() -> None:
    queues = {"fast": 1}
    config = WorkerConfig.from_env({"DATABASE_URL": URL}, queues=queues)
    queues["fast"] = 99

    assert config.queues["fast"] == 1
    with pytest.raises(TypeError):
        config.queues["fast"] = 2  # type: ignore[index]


@given(fast=st.integers(1, 10_000), bulk=st.integers(1, 10_000), poll=st.integers(1, 10**7))
def test_any_positive_integers_round_trip(fast: int, bulk: int, poll: int) -> None:
    config = WorkerConfig.from_env(
        {
            "DATABASE_URL": URL,
            "FAST_QUEUE_CONCURRENCY": str(fast),
            "BULK_QUEUE_CONCURRENCY": str(bulk),
            "POLL_INTERVAL_MS": str(poll),
        }
    )

    assert dict(config.queues) == {"fast": fast, "bulk": bulk}
    assert config.poll_interval == timedelta(milliseconds=poll)
