"""Exceptions raised by backfill_sa: one root, one subclass per failure users handle.

Two families live here:

* errors the library raises to the caller (:class:`BackfillError` and its subclasses);
* control-flow exceptions that task handlers raise to tell the worker what to do with
  the current attempt (:class:`RetryableError`, :class:`PermanentError`, :class:`Snooze`).
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "BackfillError",
    "ConfigurationError",
    "DatabaseNotConfiguredError",
    "InvalidPayloadError",
    "JobValidationError",
    "MigrationError",
    "PermanentError",
    "RetryableError",
    "Snooze",
    "TaskError",
    "UnknownTaskError",
]


class BackfillError(Exception):
    """Root of every error that backfill_sa raises to its caller."""


class ConfigurationError(BackfillError, ValueError):
    """A configuration value is invalid; the message names the setting and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class DatabaseNotConfiguredError(ConfigurationError):
    """No database is configured and no embedded PostgreSQL is available."""


class JobValidationError(BackfillError, ValueError):
    """A job's arguments break a rule; raised before any SQL runs.

    Attributes:
        field: the argument that is wrong (``"payload"``, ``"priority"``, ...), with a
            dotted path inside the payload where that helps (``"payload.items[2]"``).
        rule: a sentence saying what the value must be.
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class MigrationError(BackfillError):
    """The database schema could not be brought to the expected revision."""


class UnknownTaskError(BackfillError, LookupError):
    """No handler is registered under the requested task name."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(f"task: no handler is registered under the name {task!r}")


class TaskError(Exception):
    """Base class of the exceptions a task handler raises to steer its own retry."""


class RetryableError(TaskError):
    """The attempt failed but a later attempt may succeed: retry with backoff."""


class PermanentError(TaskError):
    """The job can never succeed: move it to the dead-letter queue without retrying."""


class InvalidPayloadError(PermanentError):
    """The handler cannot accept the job's payload: dead-letter it at once.

    Raised by a task's ``parse`` hook (or by the handler itself) when the payload has
    the wrong shape; the job goes to the DLQ with reason ``invalid_payload``.
    """


class Snooze(TaskError):
    """Run the job again after ``delay`` without using up an attempt.

    Args:
        delay: how long to wait before the job becomes runnable again; a
            :class:`~datetime.timedelta` or a number of seconds (>= 0).

    Raises:
        ValueError: ``delay`` is negative.
    """

    def __init__(self, delay: timedelta | float) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("delay: must be zero or more seconds")
        self.delay = timedelta(seconds=seconds)
        super().__init__(f"snoozed for {seconds:g}s")
