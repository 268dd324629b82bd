"""The OpenAPI 3.1 document of the admin API, built from :data:`~.endpoints.ENDPOINTS`.

The same catalogue builds the routes and checks the input, so the document says what
the server does. It is served at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backfill_sa.admin.endpoints import SCHEMAS, Endpoint

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _operation(endpoint: Endpoint, *, secured: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{endpoint.response}"}
                }
            },
        },
        "400": _error("a parameter or body field breaks a rule; `field` and `rule` say which"),
        "503": _error("the database failed or is unreachable"),
    }
    if secured:
        responses["401"] = _error("no valid credentials")
    if endpoint.mutates:
        responses["403"] = _error("read-only caller or app, or a cross-site browser request")
    if endpoint.lookup or any(p.location == "path" for p in endpoint.params):
        responses["404"] = _error("no such job or entry")
    if endpoint.conflict:
        responses["409"] = _error("the change conflicts with the current state")
    operation: dict[str, Any] = {
        "operationId": endpoint.name,
        "summary": endpoint.summary,
        "tags": list(endpoint.tags),
        "responses": responses,
    }
    if endpoint.params:
        operation["parameters"] = [
            {
                "name": param.name,
                "in": param.location,
                "required": param.location == "path",
                "description": param.description,
                "schema": param.schema,
            }
            for param in endpoint.params
        ]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": endpoint.body}},
        }
    return operation


def openapi_document(
    endpoints: Iterable[Endpoint], *, server_url: str, bearer: bool, secured: bool = True
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document describing ``endpoints``.

    Args:
        endpoints: the operations (normally :data:`~.endpoints.ENDPOINTS`).
        server_url: where the app is served (its mount prefix, ``/`` at the root).
        bearer: the app takes bearer tokens (``Authorization: Bearer ...`` or the
            login cookie); declared as security schemes.
        secured: the app asks for credentials at all (``False`` only when served
            with authentication switched off).
    """
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation = _operation(endpoint, secured=secured)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    components: dict[str, Any] = {"schemas": SCHEMAS}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "backfill_sa admin API",
            "version": "1",
            "description": "Queues, jobs, workers and the dead-letter queue of backfill_sa.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": components,
    }
    if bearer:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "backfill_admin_token"},
        }
        document["security"] = [{"bearer": []}, {"cookie": []}]
    return document
