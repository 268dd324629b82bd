"""A registry with cron schedules, for ``cron list`` through the real CLI."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from backfill_sa.tasks import JobContext, TaskRegistry


async def report(payload: Any, ctx: JobContext) -> None:
    """Do nothing: only the schedules matter here."""


def make_registry() -> TaskRegistry:
    """Return a registry with two schedules of one task."""
    registry = TaskRegistry()
    registry.register("report", report, queue="fast")
    registry.cron("*/5 * * * *", "report")
    registry.cron(
        "30 2 * * *",
        "report",
        name="nightly",
        timezone="Europe/Berlin",
        queue="bulk",
        fill=timedelta(hours=6),
    )
    return registry
