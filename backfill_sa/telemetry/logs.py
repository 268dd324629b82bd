"""Log records that join traces: a filter adding trace and span ids, a JSON formatter.

The library never configures logging; these are for the application (and the CLI's
``--log-format json``) to install::

    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)

Inside a job's ``process {queue}`` span (or any other span), every record then has
``trace_id`` and ``span_id`` (lower-case hex, as in ``traceparent``). Records the
worker logs about a job carry ``job_id``, ``task``, ``queue`` and ``attempt`` as
attributes (``extra=``), and :attr:`backfill_sa.JobContext.logger` adds them to
every record a handler logs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from opentelemetry import trace

__all__ = ["JOB_FIELDS", "JsonFormatter", "TraceContextFilter"]

JOB_FIELDS = ("job_id", "task", "queue", "attempt")
"""The structured fields on every record the worker logs about a job."""

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the current span to each record.

    Install it on a handler (``handler.addFilter(TraceContextFilter())``) so that it
    runs in the thread and context that logged. Outside any valid span both are
    empty strings, so format strings such as ``%(trace_id)s`` always work. It never
    drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.trace_id`` and ``record.span_id``; keep the record."""
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line.

    Keys: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then every
    attribute given with ``extra=`` (``job_id``, ``task``, ...) and non-empty
    ``trace_id``/``span_id`` from :class:`TraceContextFilter`; ``exception`` holds the
    formatted traceback when there is one. Values JSON cannot hold are written with
    ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        body: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in body and value != "":
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return json.dumps(body, default=str)
