"""WorkerConfig's pooler settings: listen_url and pooled, from fields and environment."""

from __future__ import annotations

import pytest

from backfill_sa.config import WorkerConfig
from backfill_sa.errors import ConfigurationError

URL = "postgresql://app@pgbouncer:6432/app"
DIRECT = "postgresql://app@db:5432/app"


def test_defaults_listen_on_the_database_url_without_pooling() -> None:
    config = WorkerConfig.from_env({"DATABASE_URL": URL})
    assert (config.listen_url, config.pooled) == (None, False)


def test_the_environment_sets_both() -> None:
    config = WorkerConfig.from_env(
        {"DATABASE_URL": URL, "BACKFILL_LISTEN_URL": DIRECT, "BACKFILL_POOLED": "1"}
    )
    assert (config.listen_url, config.pooled) == (DIRECT, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("YES", True), ("on", True), ("0", False), ("off", False), ("", False)],
)
def test_pooled_reads_the_usual_yes_and_no_words(raw: str, expected: bool) -> None:
    config = WorkerConfig.from_env({"DATABASE_URL": URL, "BACKFILL_POOLED": raw})
    assert config.pooled is expected


def test_a_pooled_value_that_is_not_yes_or_no_is_named() -> None:
    with pytest.raises(ConfigurationError, match="BACKFILL_POOLED"):
        WorkerConfig.from_env({"DATABASE_URL": URL, "BACKFILL_POOLED": "sometimes"})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"listen_url": ""}, "listen_url"), ({"pooled": "yes"}, "pooled")],
)
def test_bad_fields_are_refused(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        WorkerConfig(database_url=URL, **overrides)  # type: ignore[arg-type]
