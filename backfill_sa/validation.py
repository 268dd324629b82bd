"""Validation and normalisation of job arguments, before any SQL runs (no database here).

:class:`JobSpec` is a job's arguments, checked once on creation and kept with the
column values they normalise to (the payload already serialised to JSON text), so
``enqueue`` and ``enqueue_many`` only bind them. Jobs added ORM-style
(``session.add(Job(...))``) go through the same checks (see :mod:`backfill_sa.enqueue`).

Limits (each error names the field and the rule):

* ``task``: 1-200 characters; ``queue``: 1-100; ``job_key``: ``None`` or 1-512; none
  may contain the NUL character or unpaired surrogates (PostgreSQL text cannot);
* ``priority``: an ``int`` (not ``bool``) in the smallint range -32768..32767;
* ``run_at``: ``None`` (now) or a timezone-aware :class:`~datetime.datetime`;
* ``max_attempts``: ``None`` or 1..32767;
* ``job_key_mode``: ``"replace"``, ``"preserve_run_at"``, ``"unsafe_dedupe"`` or
  ``"period"``;
* ``payload``: any JSON value (``None`` means ``{}``); ``metadata``: a JSON object.
  Dict keys must be strings; no NaN or Infinity; strings without NUL; the
  serialised UTF-8 text at most ``max_payload_bytes`` (default 1 MiB) each.
"""

from __future__ import annotations

import datetime as dt
import json
import json.encoder
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from backfill_sa.errors import JobValidationError
from backfill_sa.priority import BULK, Priority
from backfill_sa.retry import DEFAULT as DEFAULT_RETRY
from backfill_sa.retry import RetryPolicy

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "JOB_KEY_MAX_LENGTH",
    "JOB_KEY_MODES",
    "MAX_ATTEMPTS_MAX",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "QUEUE_MAX_LENGTH",
    "TASK_MAX_LENGTH",
    "JobKeyMode",
    "JobRow",
    "JobSpec",
    "batch_payloads",
    "check_job_key_mode",
    "check_max_attempts",
    "check_name",
    "check_priority",
    "check_run_at",
    "dump_json",
    "dump_json_object",
]

TASK_MAX_LENGTH = 200
QUEUE_MAX_LENGTH = 100
JOB_KEY_MAX_LENGTH = 512
PRIORITY_MIN = -32768
PRIORITY_MAX = 32767
MAX_ATTEMPTS_MAX = 32767
DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
DEFAULT_MAX_ATTEMPTS = DEFAULT_RETRY.max_attempts
"""Attempts a job gets when neither ``max_attempts`` nor ``retry`` says (8)."""

JobKeyMode = Literal["replace", "preserve_run_at", "unsafe_dedupe", "period"]
JOB_KEY_MODES: frozenset[str] = frozenset({"replace", "preserve_run_at", "unsafe_dedupe", "period"})


def _make_encoder() -> Callable[[object], str]:
    """Return a compact JSON encoder (no NaN/Infinity, non-ASCII kept as is).

    ``JSONEncoder.encode`` builds a new C encoder on every call; this builds it once
    (without circular-reference markers: a cycle ends in ``RecursionError``, which
    :func:`dump_json` reports like any other refusal). Pure Python runs fall back to
    ``JSONEncoder.encode``. ensure_ascii=False keeps the text short; size is measured
    in bytes.
    """
    encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    make: Callable[..., Callable[[object, int], Iterable[str]]] | None = getattr(
        json.encoder, "c_make_encoder", None
    )
    if make is None:  # pragma: no cover - CPython has the C accelerator
        return encoder.encode
    chunks = make(
        None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    join = "".join

    def encode(value: object) -> str:
        return join(chunks(value, 0))

    return encode


_ENCODE = _make_encoder()
"""Compact JSON text of a value; raises TypeError, ValueError or RecursionError."""
_CONTAINERS = (dict, list, tuple)
_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
_is_str = str.__instancecheck__


class JobRow(NamedTuple):
    """The column values a :class:`JobSpec` normalises to, ready to bind."""

    task: str
    queue: str
    payload: str
    """Payload as compact JSON text (cast to jsonb in SQL)."""
    priority: int
    run_at: dt.datetime | None
    """In UTC; ``None`` means the database's ``now()``."""
    max_attempts: int
    job_key: str | None
    retry_policy: str | None
    """``RetryPolicy.to_json()`` as JSON text, or ``None``."""
    metadata: str


def check_name(field_name: str, value: object, max_length: int) -> str:
    """Check a task name, queue name or job key and return it as a plain ``str``.

    Raises:
        JobValidationError: not a string, empty, longer than ``max_length``
            characters, or holding NUL or unpaired surrogates.
    """
    if not isinstance(value, str):
        raise JobValidationError(field_name, f"must be a string, not {type(value).__name__}")
    length = len(value)
    if not 0 < length <= max_length:
        raise JobValidationError(
            field_name, f"must be 1 to {max_length} characters long (got {length})"
        )
    if "\x00" in value:
        raise JobValidationError(field_name, "must not contain the NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JobValidationError(
                field_name, "must be valid Unicode (no unpaired surrogates)"
            ) from exc
    return value if type(value) is str else str.__str__(value)


def check_priority(value: object) -> int:
    """Check a priority and return it as a plain ``int``.

    Raises:
        JobValidationError: not an ``int`` (``bool`` is refused) or outside -32768..32767.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobValidationError("priority", f"must be an integer, not {type(value).__name__}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise JobValidationError(
            "priority", f"must be between {PRIORITY_MIN} and {PRIORITY_MAX} (got {value})"
        )
    return int(value)


def check_run_at(value: object) -> dt.datetime | None:
    """Check ``run_at`` and return it in UTC (``None`` stays ``None``: run now).

    Raises:
        JobValidationError: not a datetime, naive, or not representable in UTC.
    """
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise JobValidationError("run_at", f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise JobValidationError("run_at", "must be timezone-aware (naive datetimes are refused)")
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError as exc:
        raise JobValidationError("run_at", "must be representable in UTC") from exc


def check_max_attempts(value: object, retry: RetryPolicy | None) -> int:
    """Resolve ``max_attempts``: the value given, else ``retry.max_attempts``, else 8.

    Raises:
        JobValidationError: not an ``int`` or outside 1..32767.
    """
    if value is None:
        return retry.max_attempts if retry is not None else DEFAULT_MAX_ATTEMPTS
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobValidationError(
            "max_attempts", f"must be an integer or None, not {type(value).__name__}"
        )
    if not 1 <= value <= MAX_ATTEMPTS_MAX:
        raise JobValidationError(
            "max_attempts", f"must be between 1 and {MAX_ATTEMPTS_MAX} (got {value})"
        )
    return int(value)


def check_job_key_mode(value: object) -> JobKeyMode:
    """Check ``job_key_mode``.

    Raises:
        JobValidationError: not one of ``replace``, ``preserve_run_at``,
            ``unsafe_dedupe``, ``period``.
    """
    if value == "replace":
        return "replace"
    if value == "preserve_run_at":
        return "preserve_run_at"
    if value == "unsafe_dedupe":
        return "unsafe_dedupe"
    if value == "period":
        return "period"
    raise JobValidationError(
        "job_key_mode",
        f"must be 'replace', 'preserve_run_at', 'unsafe_dedupe' or 'period' (got {value!r})",
    )


def dump_json(value: object, field_name: str, max_bytes: int) -> str:
    """Serialise ``value`` to compact JSON text that PostgreSQL's jsonb accepts.

    Args:
        value: the JSON value (dicts with string keys, lists, tuples, str, int, float,
            bool, None).
        field_name: name used in errors (``"payload"``); a path inside the value is
            appended to it (``"payload.items[2]"``).
        max_bytes: largest allowed size of the UTF-8 text.

    Raises:
        JobValidationError: a value is not JSON, a key is not a string, a float is NaN
            or infinite, a string holds NUL or unpaired surrogates, the nesting is too
            deep, or the text is longer than ``max_bytes``.
    """
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _locate_error(value, field_name) from exc
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _locate_error(value, field_name) from exc
    if size > max_bytes:
        raise JobValidationError(
            field_name, f"serialised JSON must be at most {max_bytes} bytes (got {size})"
        )
    if "\\u0000" in text or ("{" in text and not _keys_are_strings(value)):
        error = _find_problem(value, field_name)
        if error is not None:
            raise error
    return text


def dump_json_object(value: object, field_name: str, max_bytes: int) -> str:
    """Like :func:`dump_json`, but ``value`` must be a JSON object (a mapping).

    Raises:
        JobValidationError: ``value`` is not a mapping, or :func:`dump_json` refuses it.
    """
    if not isinstance(value, Mapping):
        raise JobValidationError(
            field_name,
            f"must be a JSON object (a dict with string keys), not {type(value).__name__}",
        )
    return dump_json(value if isinstance(value, dict) else dict(value), field_name, max_bytes)


def _keys_are_strings(value: object) -> bool:
    """Whether every dict key inside ``value`` is a string (json would coerce others)."""
    # The usual payload, a flat dict with string keys, is answered in C.
    if (
        type(value) is dict
        and all(map(_is_str, value))
        and _SCALARS.issuperset(map(type, value.values()))
    ):
        return True
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(map(_is_str, item)):
                return False
            children: Iterable[object] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        # Most payloads are flat: check the value types in C before looping in Python.
        if not _SCALARS.issuperset(map(type, children)):
            stack.extend(child for child in children if isinstance(child, _CONTAINERS))
    return True


def _locate_error(value: object, field_name: str) -> JobValidationError:
    error = _find_problem(value, field_name)
    return error or JobValidationError(field_name, "must be JSON-serialisable")


def _find_problem(value: object, field_name: str) -> JobValidationError | None:
    try:
        found = _walk(value, field_name, set())
    except RecursionError:
        return JobValidationError(field_name, "is nested too deeply")
    return None if found is None else JobValidationError(*found)


def _child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "strings must not contain the NUL character (jsonb cannot store \\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "strings must be valid Unicode (no unpaired surrogates)"
    return None


def _walk(value: object, path: str, active: set[int]) -> tuple[str, str] | None:
    """Return ``(path, rule)`` of the first part of ``value`` jsonb cannot take."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, str):
        rule = _string_problem(value)
        return None if rule is None else (path, rule)
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "NaN and Infinity are not valid JSON")
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            return path, "refers to itself (circular reference)"
        active.add(id(value))
        found = _walk_container(value, path, active)
        active.discard(id(value))
        return found
    return (
        path,
        f"{type(value).__name__} is not JSON-serialisable"
        " (use dict, list, str, int, float, bool or None)",
    )


def _walk_container(
    value: dict[object, object] | list[object] | tuple[object, ...], path: str, active: set[int]
) -> tuple[str, str] | None:
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}]", f"keys must be strings, not {type(key).__name__}"
            child_path = _child_path(path, key)
            rule = _string_problem(key)
            if rule is not None:
                return child_path, rule.replace("strings", "keys")
            found = _walk(child, child_path, active)
            if found is not None:
                return found
        return None
    for index, child in enumerate(value):
        found = _walk(child, f"{path}[{index}]", active)
        if found is not None:
            return found
    return None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job's arguments, validated on creation; the unit of ``enqueue_many``.

    The payload and metadata are serialised here, once: later changes to the dicts
    passed in are not seen. ``row`` holds the normalised column values.

    Args:
        task: name of the task handler (1-200 characters).
        payload: the job's JSON value; ``None`` means ``{}``. Tuples come back as lists.
        queue: queue name (1-100 characters), ``"bulk"`` by default.
        priority: lower runs first; any smallint, :class:`~backfill_sa.Priority` names
            the usual ones (default ``BULK_DEFAULT``, 0).
        run_at: earliest time to run (timezone-aware); ``None`` means now.
        max_attempts: attempts in all (1-32767); ``None`` means ``retry.max_attempts``
            when ``retry`` is given, else 8. When both are given this one wins.
        retry: backoff for this job, stored in ``jobs.retry_policy``.
        job_key: idempotency key (1-512 characters), unique among unfinished jobs.
        job_key_mode: what a second job with the same key does (see ``enqueue``).
        metadata: a JSON object of tags and trace context (``None`` means ``{}``).
        max_payload_bytes: limit on the serialised payload and metadata, each
            (default 1 MiB).

    Raises:
        JobValidationError: an argument breaks a rule; the error names it.
    """

    task: str
    payload: object = field(default=None, hash=False)
    queue: str = BULK
    priority: int = Priority.BULK_DEFAULT
    run_at: dt.datetime | None = None
    max_attempts: int | None = None
    retry: RetryPolicy | None = None
    job_key: str | None = None
    job_key_mode: JobKeyMode = "replace"
    metadata: Mapping[str, object] | None = field(default=None, hash=False)
    max_payload_bytes: int = field(default=DEFAULT_MAX_PAYLOAD_BYTES, kw_only=True)
    row: JobRow = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Fast paths for the common, valid case; the check_* functions give the errors.
        limit = self.max_payload_bytes
        if type(limit) is not int or limit < 2:
            raise JobValidationError("max_payload_bytes", "must be an integer of at least 2")
        retry = self.retry
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise JobValidationError("retry", "must be a RetryPolicy or None")
        if self.job_key_mode != "replace":
            check_job_key_mode(self.job_key_mode)
        # Plain ASCII names without NUL need none of check_name's slower checks.
        task = self.task
        if not (
            type(task) is str
            and 0 < len(task) <= TASK_MAX_LENGTH
            and task.isascii()
            and "\x00" not in task
        ):
            task = check_name("task", task, TASK_MAX_LENGTH)
        queue = self.queue
        if not (
            type(queue) is str
            and 0 < len(queue) <= QUEUE_MAX_LENGTH
            and queue.isascii()
            and "\x00" not in queue
        ):
            queue = check_name("queue", queue, QUEUE_MAX_LENGTH)
        job_key = self.job_key
        if job_key is not None:
            job_key = check_name("job_key", job_key, JOB_KEY_MAX_LENGTH)
        priority = self.priority
        if type(priority) is Priority:  # the default and the named ones: all in range
            priority = priority._value_
        elif type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            priority = check_priority(priority)
        run_at = self.run_at
        if run_at is not None:
            run_at = check_run_at(run_at)
        max_attempts = self.max_attempts
        if max_attempts is None and retry is None:
            max_attempts = DEFAULT_MAX_ATTEMPTS
        else:
            max_attempts = check_max_attempts(max_attempts, retry)
        payload = self.payload
        metadata = self.metadata
        row = JobRow(
            task,
            queue,
            "{}" if payload is None else dump_json(payload, "payload", limit),
            priority,
            run_at,
            max_attempts,
            job_key,
            None if retry is None else _ENCODE(retry.to_json()),
            "{}" if metadata is None else dump_json_object(metadata, "metadata", limit),
        )
        object.__setattr__(self, "row", row)


def batch_payloads(template: JobSpec, payloads: Iterable[object]) -> list[str]:
    """Serialise ``payloads`` for jobs that all take ``template``'s validated options.

    Each payload is checked as ``JobSpec`` checks its ``payload`` (``None`` is
    ``{}``); an error names the payload by its position: ``payloads[3]`` or
    ``payloads[3].items[2]``.

    Raises:
        JobValidationError: ``payloads`` is a single value rather than a collection of
            them (a mapping, ``str`` or ``bytes``), ``template`` has a ``job_key`` (a key
            belongs to one job), or a payload is not JSON or is too large.
    """
    if isinstance(payloads, (Mapping, str, bytes, bytearray)):
        raise JobValidationError(
            "payloads",
            f"must be a collection of payloads (a list, say), not one {type(payloads).__name__}",
        )
    if template.job_key is not None:
        raise JobValidationError("job_key", "must be None in a batch: a key belongs to one job")
    limit = template.max_payload_bytes
    texts: list[str] = []
    append = texts.append
    for index, payload in enumerate(payloads):
        try:
            append("{}" if payload is None else dump_json(payload, "payload", limit))
        except JobValidationError as error:
            path = error.field.removeprefix("payload")
            raise JobValidationError(f"payloads[{index}]{path}", error.rule) from None
    return texts
