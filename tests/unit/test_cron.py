"""Cron expressions without a database: syntax, errors at registration, ticks, DST."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from backfill_sa.cron import CronSchedule, cron_job_key
from backfill_sa.errors import ConfigurationError, JobValidationError
from backfill_sa.tasks import TaskRegistry

UTC = dt.timezone.utc


def _at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def _hm(ticks: list[dt.datetime], zone: str = "UTC") -> list[str]:
    tz = ZoneInfo(zone)
    return [f"{t.astimezone(tz):%a %d %H:%M}" for t in ticks]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/20 * * * *", ["Mon 01 00:20", "Mon 01 00:40", "Mon 01 01:00"]),
        ("5 9-10 * * *", ["Mon 01 09:05", "Mon 01 10:05", "Tue 02 09:05"]),
        ("0 12 * * mon-fri", ["Mon 01 12:00", "Tue 02 12:00", "Wed 03 12:00"]),
        ("0 0 * * SAT,sun", ["Sat 06 00:00", "Sun 07 00:00", "Sat 13 00:00"]),
        ("0 0 1 jan,jul *", ["Sun 01 00:00", "Tue 01 00:00", "Mon 01 00:00"]),
        ("@hourly", ["Mon 01 01:00", "Mon 01 02:00", "Mon 01 03:00"]),
        ("@daily", ["Tue 02 00:00", "Wed 03 00:00", "Thu 04 00:00"]),
        ("@midnight", ["Tue 02 00:00", "Wed 03 00:00", "Thu 04 00:00"]),
        ("@weekly", ["Sun 07 00:00", "Sun 14 00:00", "Sun 21 00:00"]),
        ("@monthly", ["Thu 01 00:00", "Thu 01 00:00", "Sun 01 00:00"]),
        ("  0   0 * *   * ", ["Tue 02 00:00", "Wed 03 00:00", "Thu 04 00:00"]),
    ],
)
def test_five_field_syntax_and_shorthands(expression: str, expected: list[str]) -> None:
    schedule = CronSchedule("s", expression, "t")
    ticks = []
    after = _at(2029, 1, 1)  # a Monday
    for _ in range(3):
        tick = schedule.next_tick(after)
        assert tick is not None
        ticks.append(tick)
        after = tick
    assert _hm(ticks) == expected


@pytest.mark.parametrize(
    ("options", "field", "rule"),
    [
        ({"expression": "61 * * * *"}, "expression", "not a valid cron expression"),
        ({"expression": "* * *"}, "expression", "must have five fields"),
        ({"expression": "0 * * * * *"}, "expression", "must have five fields"),
        ({"expression": "@reboot"}, "expression", "shorthands are @yearly"),
        ({"expression": "0 0 30 feb *"}, "expression", "never matches a date"),
        ({"expression": "0 0 * * funday"}, "expression", "not a valid cron expression"),
        ({"expression": 5}, "expression", "must be a string"),
        ({"timezone": "Mars/Olympus"}, "timezone", "not a known IANA zone"),
        ({"fill": timedelta(seconds=-1)}, "fill", "zero or more"),
        ({"fill": 60}, "fill", "must be a timedelta"),
        ({"name": ""}, "name", "1-200 characters"),
    ],
)
def test_bad_schedules_are_refused_at_registration(
    options: dict[str, object], field: str, rule: str
) -> None:
    registry = TaskRegistry()
    values: dict[str, object] = {"expression": "* * * * *", "task": "t", **options}
    with pytest.raises(ConfigurationError, match=rule) as caught:
        registry.cron(**values)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert registry.schedules == ()


def test_bad_job_options_are_refused_at_registration() -> None:
    registry = TaskRegistry()
    with pytest.raises(JobValidationError, match="payload"):
        registry.cron("* * * * *", "t", payload={"when": dt.date(2026, 1, 1)})
    with pytest.raises(JobValidationError, match="priority"):
        registry.cron("* * * * *", "t", priority=70000)
    with pytest.raises(JobValidationError, match="queue"):
        registry.cron("* * * * *", "t", queue="")


def test_schedule_names_are_unique_and_default_to_the_task() -> None:
    registry = TaskRegistry()
    first = registry.cron("@daily", "report")
    assert first.name == "report"
    with pytest.raises(ConfigurationError, match="named 'report' exists"):
        registry.cron("@hourly", "report")
    second = registry.cron("@hourly", "report", name="report-hourly")
    assert registry.schedules == (first, second)


def test_ticks_are_the_window_exclusive_of_its_start() -> None:
    schedule = CronSchedule("s", "*/15 * * * *", "t")
    ticks = schedule.ticks(_at(2026, 6, 1, 10, 0), _at(2026, 6, 1, 11, 0))
    assert _hm(ticks) == ["Mon 01 10:15", "Mon 01 10:30", "Mon 01 10:45", "Mon 01 11:00"]
    assert schedule.ticks(_at(2026, 6, 1, 10, 1), _at(2026, 6, 1, 10, 14)) == []


def test_a_schedule_is_read_in_its_time_zone() -> None:
    schedule = CronSchedule("s", "0 9 * * *", "t", timezone="America/New_York")
    tick = schedule.next_tick(_at(2026, 6, 1))
    assert tick == _at(2026, 6, 1, 13, 0)  # 09:00 EDT


def test_spring_forward_skipped_times_run_after_the_gap_once() -> None:
    zone = "America/New_York"  # 2026-03-08 02:00 EST -> 03:00 EDT
    daily = CronSchedule("d", "30 2 * * *", "t", timezone=zone)
    ticks = daily.ticks(_at(2026, 3, 6, 12), _at(2026, 3, 10, 0))
    assert _hm(ticks, zone) == ["Sat 07 02:30", "Sun 08 03:30", "Mon 09 02:30"]
    quarter = CronSchedule("q", "*/15 * * * *", "t", timezone=zone)
    ticks = quarter.ticks(_at(2026, 3, 8, 6, 30), _at(2026, 3, 8, 7, 45))
    # Every 15 minutes of real time: the skipped hour adds no extra jobs.
    assert [t - ticks[0] for t in ticks] == [timedelta(minutes=15 * i) for i in range(5)]
    assert _hm(ticks, zone) == [
        "Sun 08 01:45",
        "Sun 08 03:00",
        "Sun 08 03:15",
        "Sun 08 03:30",
        "Sun 08 03:45",
    ]


def test_fall_back_repeated_times_run_once_unless_every_hour() -> None:
    zone = "America/New_York"  # 2026-11-01 02:00 EDT -> 01:00 EST
    daily = CronSchedule("d", "30 1 * * *", "t", timezone=zone)
    ticks = daily.ticks(_at(2026, 10, 31, 12), _at(2026, 11, 2, 12))
    assert ticks == [_at(2026, 11, 1, 5, 30), _at(2026, 11, 2, 6, 30)]  # 01:30 EDT, 01:30 EST
    hourly = CronSchedule("h", "30 * * * *", "t", timezone=zone)
    ticks = hourly.ticks(_at(2026, 11, 1, 4), _at(2026, 11, 1, 8))
    assert [f"{t:%H:%M}" for t in ticks] == ["04:30", "05:30", "06:30", "07:30"]


def test_job_keys_name_the_schedule_and_the_utc_tick() -> None:
    tick = dt.datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert cron_job_key("nightly", tick) == "cron:nightly:2026-06-01T10:00Z"


def test_the_scheduling_doc_example_registers_its_schedules() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "scheduling.md").read_text()
    block = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/scheduling.md", "exec"), namespace)
    registry = namespace["registry"]
    assert isinstance(registry, TaskRegistry)
    assert [(s.name, s.expression, s.timezone) for s in registry.schedules] == [
        ("sync_accounts", "*/5 * * * *", "UTC"),
        ("nightly-report", "30 2 * * *", "Europe/Berlin"),
    ]
