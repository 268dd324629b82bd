"""Bad enqueue arguments (hypothesis): any value of any type in any argument.

tests/integration/test_enqueue_property.py checks chosen invalid values field by field;
this throws arbitrary Python values (wrong types, NaN, naive datetimes, huge numbers,
NUL characters, nested junk) at every argument of ``enqueue``. Each call either
enqueues a job or raises :class:`~backfill_sa.errors.JobValidationError` naming a
field, with no SQL sent; never a ``TypeError``, a driver error or a half-written row.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from backfill_sa.enqueue import enqueue
from backfill_sa.errors import JobValidationError
from backfill_sa.retry import RetryPolicy
from tests.worker.conftest import count, execute

ARGUMENTS = (
    "task",
    "payload",
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "retry",
    "job_key",
    "job_key_mode",
    "metadata",
    "max_payload_bytes",
)

_anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.decimals(allow_nan=True),
        st.text(max_size=20),
        st.text(max_size=3).map(lambda t: t + "\x00"),
        st.binary(max_size=10),
        st.datetimes(),
        st.datetimes(timezones=st.just(dt.timezone.utc)),
        st.timedeltas(),
        st.just(RetryPolicy()),
        st.just(object()),
        st.just(math.inf),
        st.just(Decimal("1e400")),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=2)
    ),
    max_leaves=6,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(bad=st.dictionaries(st.sampled_from(ARGUMENTS), _anything, min_size=1, max_size=3))
def test_any_argument_value_enqueues_or_raises_a_validation_error(
    sync_engine: Engine, bad: dict[str, Any]
) -> None:
    execute(sync_engine, "DELETE FROM {s}.jobs")
    args: dict[str, Any] = {"task": "t", "payload": {"n": 1}, **bad}
    statements: list[str] = []

    def record(*event_args: Any) -> None:
        statements.append(event_args[2])

    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        with Session(sync_engine) as session, session.begin():
            error: JobValidationError | None = None
            try:
                enqueue(session, **args)
            except JobValidationError as exc:
                error = exc
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    if error is not None:
        assert error.field, "the error names the field"
        assert statements == [], "nothing is sent for a refused job"
    assert count(sync_engine, "jobs") == (0 if error is not None else 1)
