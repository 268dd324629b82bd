"""DATABASE_URL forms: plain libpq URLs and SQLAlchemy URLs, with the TLS mode kept."""

from __future__ import annotations

import pytest

from backfill_sa.dburl import async_url, libpq_dsn, sync_url
from backfill_sa.errors import ConfigurationError


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db.example:5433/app",
        "postgres://u:p@db.example:5433/app",
        "postgresql+psycopg://u:p@db.example:5433/app",
        "postgresql+asyncpg://u:p@db.example:5433/app",
    ],
)
def test_every_form_gives_each_part_its_driver(url: str) -> None:
    assert async_url(url).drivername == "postgresql+asyncpg"
    assert sync_url(url).drivername in ("postgresql+psycopg", "postgresql+psycopg2")
    assert libpq_dsn(url) == "postgresql://u:p@db.example:5433/app"


@pytest.mark.parametrize("mode", ["disable", "prefer", "require", "verify-full"])
def test_the_tls_mode_survives_every_conversion(mode: str) -> None:
    url = f"postgresql://u@db.example/app?sslmode={mode}"
    assert async_url(url).query["ssl"] == mode
    assert "sslmode" not in async_url(url).query
    assert libpq_dsn(url).endswith(f"?sslmode={mode}")
    assert libpq_dsn(async_url(url)).endswith(f"?sslmode={mode}")
    assert sync_url(url).query["sslmode"] == mode


def test_a_non_postgresql_url_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        async_url("mysql://u@db/app")


def test_redacted_url_hides_the_password_only() -> None:
    from backfill_sa.dburl import redacted_url

    assert redacted_url("postgresql://u:secret@db:5432/app") == "postgresql://u:***@db:5432/app"
    assert redacted_url("postgresql://u@db/app?password=x&a=1") == (
        "postgresql://u@db/app?password=***&a=1"
    )
    assert redacted_url("postgresql://u@/db?host=/tmp/s") == "postgresql://u@/db?host=/tmp/s"


def test_async_connect_args_carry_libpqs_connect_timeout() -> None:
    from backfill_sa.dburl import async_connect_args, async_url

    url = "postgresql://u@db/app?connect_timeout=3&sslmode=require"

    assert async_connect_args(url) == {"timeout": 3.0}
    assert "connect_timeout" not in async_url(url).query
    assert async_connect_args("postgresql://u@db/app") == {}
