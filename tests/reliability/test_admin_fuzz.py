"""Bad input to the admin API (hypothesis): whatever the body, path or query, never a 5xx.

The app is built by tests/admin/conftest.py's ``client`` fixture, so whatever that
fixture adds (authentication, headers) applies here too; a refusal (4xx) is a fine
answer, a server error (5xx, including 503 for a database error the input caused)
is not. The tables hold a job, a dead letter and a queue row, so that ids and names
sometimes hit something.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.admin.conftest import Rows, client, rows  # noqa: F401 - fixtures used below

_chars = st.characters(codec="utf-8")
_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(_chars, max_size=30),
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(_chars, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_fields = ("ids", "task", "queue", "reason", "run_at", "queue_override", "max_attempts")
_bodies = st.one_of(
    st.binary(max_size=60),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(_fields), _json, max_size=4).map(
        lambda v: json.dumps(v).encode()
    ),
    st.dictionaries(st.sampled_from(_fields), _json, max_size=4).map(
        lambda v: json.dumps(v).encode("utf-16")
    ),
)
_ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(_chars, min_size=1, max_size=20),
    st.sampled_from(["1", "0", "-1", "9223372036854775808", "1e3", "0x10", " 1", "NaN"]),
)
_params = st.dictionaries(
    st.sampled_from(["limit", "offset", "state", "reason", "queue", "task", "x", "page"]),
    st.one_of(_ids, st.text(_chars, max_size=10)),
    max_size=4,
)
_routes = st.sampled_from(
    [
        ("GET", "/api/overview"),
        ("GET", "/api/queues"),
        ("POST", "/api/queues/{}/pause"),
        ("POST", "/api/queues/{}/resume"),
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/{}"),
        ("POST", "/api/jobs/{}/cancel"),
        ("GET", "/api/workers"),
        ("GET", "/api/dlq"),
        ("POST", "/api/dlq/requeue"),
        ("GET", "/api/dlq/{}"),
        ("DELETE", "/api/dlq/{}"),
        ("POST", "/api/dlq/{}/requeue"),
    ]
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=_routes,
    segment=_ids,
    params=_params,
    body=_bodies,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
)
async def test_the_admin_api_never_answers_5xx(
    *,
    client: httpx.AsyncClient,  # noqa: F811 - the admin tests' fixture
    rows: Rows,  # noqa: F811
    route: tuple[str, str],
    segment: str,
    params: dict[str, str],
    body: bytes,
    content_type: str,
) -> None:
    if not await rows.jobs():
        await rows.add_job()
        await rows.add_dead_letter()
        await rows.add_queue("bulk")
    method, template = route
    path = template.format(quote(segment, safe=""))
    headers: dict[str, Any] = {"content-type": content_type} if content_type else {}
    response = await client.request(
        method, path, params=params, content=body if method != "GET" else None, headers=headers
    )
    assert response.status_code < 500, (method, path, params, body, response.text)
