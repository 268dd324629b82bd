"""/openapi.json: generated from the routes' own definitions, and the server keeps to it."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Mount, Route

from backfill_sa.admin import create_app
from backfill_sa.admin.endpoints import ENDPOINTS
from tests.admin.conftest import AUTH, Rows, assert_invalid, client_for

PAGES = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}


def _served_operations(app: Any) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path.replace(":int}", "}")))
    return found


async def test_the_document_lists_exactly_the_served_routes(
    async_engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/"}]
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = _served_operations(create_app(async_engine, auth=AUTH))
    assert documented == served - PAGES - {("GET", "/openapi.json")}
    assert len(documented) == len(ENDPOINTS)
    # Each operation is handled by the method its operationId names.
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert sorted(ids) == sorted(e.name for e in ENDPOINTS)
    assert document["security"] == [{"bearer": []}, {"cookie": []}]


async def test_every_schema_in_the_document_is_valid_json_schema(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    components = document["components"]["schemas"]
    for name, schema in components.items():
        jsonschema_rs.validator_for(schema)  # raises on an invalid schema
        assert schema["type"] == "object", name
    for operations in document["paths"].values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                jsonschema_rs.validator_for(param["schema"])
            body = operation.get("requestBody")
            if body is not None:
                jsonschema_rs.validator_for(body["content"]["application/json"]["schema"])
            for status, answer in operation["responses"].items():
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.removeprefix("#/components/schemas/") in components, status


async def test_answers_match_their_documented_schema(client: httpx.AsyncClient, rows: Rows) -> None:
    """Every read route, with data in every table, answers what the document says."""
    job_id = await rows.add_job(queue="fast", last_error={"type": "E", "message": "m"})
    entry_id = await rows.add_dead_letter()
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for endpoint in ENDPOINTS:
        if endpoint.method != "GET":
            continue
        path = endpoint.path.replace("/jobs/{id}", f"/jobs/{job_id}").replace("{name}", "fast")
        response = await client.get(path.replace("{id}", str(entry_id)))
        assert response.status_code == 200, (path, response.text)
        schema = schemas[endpoint.response]  # answers' schemas are self-contained
        errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(response.json())]
        assert errors == [], path


async def test_the_document_follows_the_mount_prefix(async_engine: AsyncEngine) -> None:
    from starlette.applications import Starlette

    outer = Starlette(routes=[Mount("/ops", app=create_app(async_engine, auth=AUTH))])
    async with client_for(outer) as http:
        document = (await http.get("/ops/openapi.json")).json()
    assert document["servers"] == [{"url": "/ops"}]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
async def test_undocumented_query_parameters_are_refused(
    client: httpx.AsyncClient, endpoint: Any
) -> None:
    path = endpoint.path.replace("{name}", "q").replace("{id}", "1")
    response = await client.request(endpoint.method, path + "?surprise=1", json={"ids": [1]})
    assert_invalid(response, "surprise", "is not a known parameter")


@pytest.mark.parametrize(
    ("path", "field", "rule_part"),
    [
        ("/api/jobs?limit=0", "limit", "between 1 and 1000"),
        ("/api/jobs?limit=ten", "limit", "whole number"),
        ("/api/jobs?limit=1&limit=2", "limit", "at most once"),
        ("/api/jobs?state=done", "state", "one of available"),
        ("/api/jobs?errored=yes", "errored", "true or false"),
        ("/api/jobs?task=" + "t" * 101, "task", "0 to 100 characters"),
        ("/api/jobs?queue=a%00b", "queue", "NUL"),
        ("/api/jobs/0", "id", "whole number between 1 and"),
        ("/api/dlq?reason=tired", "reason", "one of"),
        ("/api/dlq/99999999999999999999", "id", "whole number between 1 and"),
    ],
)
async def test_bad_parameters_name_the_field(
    client: httpx.AsyncClient, path: str, field: str, rule_part: str
) -> None:
    assert_invalid(await client.get(path), field, rule_part)


@pytest.mark.parametrize("path", ["/api/jobs/abc", "/api/jobs/-1", "/api/dlq/1.5", "/api/dlq/%201"])
async def test_ids_that_are_not_numbers_are_not_routes(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_undeclared_methods_are_405_with_allow(client: httpx.AsyncClient) -> None:
    for method, path, allow in [
        ("DELETE", "/api/dlq/stats", "GET, HEAD"),
        ("GET", "/api/dlq/requeue", "POST"),
        ("PUT", "/api/dlq/1", "GET, HEAD, DELETE"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.json()["error"] == "method_not_allowed"
        assert sorted(response.headers["allow"].split(", ")) == sorted(allow.split(", "))


@pytest.mark.parametrize(
    ("body", "field", "rule_part"),
    [
        ('{"ids": [1], "dry_run": "yes"}', "dry_run", "true or false"),
        ('{"ids": [1], "run_at": "2030-02-30T00:00:00Z"}', "run_at", "RFC 3339"),
        ('{"ids": [1], "max_attempts": 1.5}', "max_attempts", "whole number"),
        ('{"ids": [1], "queue_override": "a\\u0000"}', "queue_override", "NUL"),
        ("[" * 100_000, "body", "JSON object"),
        ('"ids"', "body", "JSON object"),
    ],
)
async def test_bad_bodies_name_the_field(
    client: httpx.AsyncClient, body: str, field: str, rule_part: str
) -> None:
    response = await client.post(
        "/api/dlq/requeue", content=body, headers={"Content-Type": "application/json"}
    )
    assert_invalid(response, field, rule_part)


async def test_date_times_with_offsets_and_leap_seconds_are_read(
    client: httpx.AsyncClient, rows: Rows
) -> None:
    for text in (
        "2030-01-01T01:00:00+01:00",
        "2030-01-01t00:00:00.1234567z",
        "2029-12-31T23:59:60Z",
    ):
        entry_id = await rows.add_dead_letter()
        response = await client.post(f"/api/dlq/{entry_id}/requeue", json={"run_at": text})
        assert response.status_code == 200, response.text
        job = await rows.job(response.json()["job_ids"][0])
        assert job is not None
        assert job["run_at"].isoformat().startswith(("2030-01-01T00:00:00", "2029-12-31T23:59:59"))
