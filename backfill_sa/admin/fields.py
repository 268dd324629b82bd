"""Request fields of the admin API: JSON Schema that documents them and checks them.

Each parameter and body of the API is described once, as a JSON Schema fragment built
here; the OpenAPI document publishes that fragment and :func:`check` validates input
against the same fragment, so the two cannot disagree. Only the part of JSON Schema
the API uses is understood: ``type`` (one type, or one type and ``"null"``),
``minimum``/``maximum``, ``minLength``/``maxLength``, ``enum``, ``format: date-time``,
``items``/``maxItems``, and objects with ``properties``, ``required``,
``additionalProperties: false`` and ``anyOf`` a list of ``required`` alternatives.
Strings never contain NUL (PostgreSQL cannot store it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from backfill_sa.admin.protocol import ApiError

__all__ = [
    "BIGINT_MAX",
    "SMALLINT_MAX",
    "Schema",
    "array_of",
    "boolean",
    "check",
    "date_time",
    "enum_of",
    "integer",
    "nullable",
    "obj",
    "parse_text",
    "string",
]

Schema = dict[str, Any]
"""A JSON Schema fragment (OpenAPI 3.1 uses JSON Schema 2020-12)."""

BIGINT_MAX = 2**63 - 1
SMALLINT_MAX = 32767
_NO_NUL = "^[^\\x00]*$"
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def string(
    description: str = "", *, min_length: int | None = None, max_length: int | None = None
) -> Schema:
    """A string without NUL characters, optionally bounded in length (characters)."""
    schema: Schema = {"type": "string", "pattern": _NO_NUL}
    if min_length is not None:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if description:
        schema["description"] = description
    return schema


def enum_of(values: Iterable[str], description: str = "") -> Schema:
    """One of ``values`` (strings)."""
    schema: Schema = {"type": "string", "enum": list(values)}
    if description:
        schema["description"] = description
    return schema


def integer(minimum: int, maximum: int, description: str = "", **extra: Any) -> Schema:
    """A whole number from ``minimum`` to ``maximum``; ``extra`` adds e.g. a ``default``."""
    schema: Schema = {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}
    if description:
        schema["description"] = description
    return schema


def boolean(description: str = "", **extra: Any) -> Schema:
    """``true`` or ``false``."""
    schema: Schema = {"type": "boolean", **extra}
    if description:
        schema["description"] = description
    return schema


def date_time(description: str = "") -> Schema:
    """An RFC 3339 date-time with a UTC offset (``2030-01-01T00:00:00Z``)."""
    schema: Schema = {"type": "string", "format": "date-time"}
    if description:
        schema["description"] = description
    return schema


def array_of(items: Schema, *, max_items: int, description: str = "") -> Schema:
    """A list of at most ``max_items`` values that each match ``items``."""
    schema: Schema = {"type": "array", "items": items, "maxItems": max_items}
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    """``schema`` or ``null`` (for bodies, ``null`` means the same as leaving it out)."""
    return {**schema, "type": [schema["type"], "null"]}


def obj(
    properties: dict[str, Schema], *, required: Iterable[str] = (), any_of: Iterable[str] = ()
) -> Schema:
    """An object with exactly these ``properties`` (unknown keys are refused).

    Args:
        properties: the allowed keys and their schemas.
        required: keys that must be present (and not null).
        any_of: at least one of these keys must be present.
    """
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    required = list(required)
    if required:
        schema["required"] = required
    alternatives = [{"required": [key]} for key in any_of]
    if alternatives:
        schema["anyOf"] = alternatives
    return schema


def _types(schema: Schema) -> list[str]:
    kind = schema.get("type")
    return list(kind) if isinstance(kind, list) else [str(kind)]


def _parse_date_time(field: str, value: str) -> dt.datetime:
    match = _RFC3339.fullmatch(value)
    rule = "must be an RFC 3339 date-time with a UTC offset, e.g. 2030-01-01T00:00:00Z"
    if match is None:
        raise ApiError.invalid(field, rule)
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    micro = int((match[7] or "0")[:6].ljust(6, "0"))
    if match[8]:
        offset = dt.timedelta(0)
    else:
        sign = -1 if match[9] == "-" else 1
        offset = sign * dt.timedelta(hours=int(match[10]), minutes=int(match[11]))
    try:
        # A leap second (:60) is the last moment of its minute.
        moment = dt.datetime(
            year, month, day, hour, minute, min(second, 59), micro, tzinfo=dt.timezone(offset)
        )
        return moment.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise ApiError.invalid(field, rule) from None


def _check_string(field: str, value: object, schema: Schema) -> object:
    if not isinstance(value, str):
        raise ApiError.invalid(field, "must be a string")
    if "\x00" in value:
        raise ApiError.invalid(field, "must not contain NUL characters")
    if "enum" in schema and value not in schema["enum"]:
        raise ApiError.invalid(field, f"must be one of {', '.join(schema['enum'])}")
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(value) < low or (high is not None and len(value) > high):
        limit = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ApiError.invalid(field, f"must be {limit} characters")
    if schema.get("format") == "date-time":
        return _parse_date_time(field, value)
    return value


def _check_integer(field: str, value: object, schema: Schema) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 3.0 as an integer
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError.invalid(field, "must be a whole number")
    low, high = schema["minimum"], schema["maximum"]
    if not low <= value <= high:
        raise ApiError.invalid(field, f"must be a whole number between {low} and {high}")
    return value


def _check_array(field: str, value: object, schema: Schema) -> list[Any]:
    items: Schema = schema["items"]
    if items.get("type") == "integer":
        rule = f"must be a list of whole numbers from {items['minimum']} to {items['maximum']}"
    else:
        rule = "must be a list of valid items"
    if not isinstance(value, list):
        raise ApiError.invalid(field, rule)
    if len(value) > schema["maxItems"]:
        raise ApiError.invalid(field, f"must have at most {schema['maxItems']} items")
    try:
        return [check(field, item, items) for item in value]
    except ApiError:
        raise ApiError.invalid(field, rule) from None


def _check_object(field: str, value: object, schema: Schema) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError.invalid(field, "must be a JSON object")
    properties: dict[str, Schema] = schema["properties"]
    for key in value:
        if key not in properties:
            expected = ", ".join(sorted(properties))
            raise ApiError.invalid(str(key), f"is not a known field (expected: {expected})")
    for key in schema.get("required", ()):
        if value.get(key) is None:
            raise ApiError.invalid(key, "is required")
    choices = [alternative["required"] for alternative in schema.get("anyOf", ())]
    if choices and not any(all(key in value for key in keys) for keys in choices):
        first, *others = (" and ".join(keys) for keys in choices)
        raise ApiError.invalid(first, f"give {first} or at least one filter ({', '.join(others)})")
    return {key: check(key, item, properties[key]) for key, item in value.items()}


def check(field: str, value: object, schema: Schema) -> Any:
    """Return ``value`` if it matches ``schema`` (date-times become aware datetimes).

    Args:
        field: the name the error names (a parameter or body field).
        value: the decoded JSON value (or a query parameter after :func:`parse_text`).
        schema: a fragment built by this module's functions.

    Raises:
        ApiError: a 400 naming ``field`` (or an unknown key) and the rule it breaks.
    """
    kinds = _types(schema)
    if value is None and "null" in kinds:
        return None
    kind = kinds[0]
    if kind == "string":
        return _check_string(field, value, schema)
    if kind == "integer":
        return _check_integer(field, value, schema)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ApiError.invalid(field, "must be true or false")
        return value
    if kind == "array":
        return _check_array(field, value, schema)
    if kind == "object":
        return _check_object(field, value, schema)
    raise TypeError(f"{field}: unsupported schema type {kind!r}")  # pragma: no cover


def parse_text(field: str, raw: str, schema: Schema) -> Any:
    """Return the query or path parameter ``raw`` converted to its schema's type, checked.

    Raises:
        ApiError: a 400 naming ``field``: not a whole number, not ``true``/``false``,
            or it breaks the schema's rules.
    """
    kind = _types(schema)[0]
    value: object = raw
    if kind == "integer":
        text = raw.strip()
        value = int(text) if text.isascii() and text.lstrip("+-").isdigit() else raw
    elif kind == "boolean":
        value = {"true": True, "false": False}.get(raw, raw)
    return check(field, value, schema)
