"""The OpenAPI document: the error answers of each route, the binary request bodies, the
schemas of :mod:`service.models` that no route names directly, and the optional bearer auth.
The routes themselves (:mod:`service.http.routes`) use :func:`responses` and
:func:`request_body`; :func:`build` shapes the whole document once per app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from .. import models

_ERRORS = {
    400: "the body is not JSON, or not the binary framing it claims",
    401: "an API key is configured and the request has none, or a wrong one",
    404: "unknown network_id",
    413: "the body, a tensor or the network is over its configured limit",
    422: "well-formed but invalid: unknown op, bad attr, shape or dtype mismatch, cycle, bad sens",
    500: "a worker died or a bug (the message says which); the service stays up",
    503: "not ready, draining, or the queue is full (Retry-After is set)",
    504: "timeout_ms passed before the result",
}

BINARY_BODY = {
    "schema": {"type": "string", "format": "binary"},
    "description": "Open Inference Protocol binary tensor extension: the JSON object, then the raw bytes of "
    "each tensor that says `binary_data_size`, in order; the header Inference-Header-Content-Length gives the "
    "JSON part's length.",
}
_BINARY_HEADER_PARAM = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "with a binary body: the length in bytes of its JSON part",
    "schema": {"type": "integer", "minimum": 0},
}


def responses(*codes: int, ok: dict[int, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses``: its success answers ``ok`` and the error answers ``codes``."""
    out: dict[int | str, dict[str, Any]] = dict(ok or {})
    for code in codes:
        entry: dict[str, Any] = {"model": models.ErrorResponse, "description": _ERRORS[code]}
        if code == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        out[code] = entry
    return out


def request_body(model: str, description: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is ``model`` as JSON or in the binary framing."""
    return {
        "parameters": [_BINARY_HEADER_PARAM],
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}},
                "application/octet-stream": BINARY_BODY,
            },
        },
    }


def build(app: FastAPI, documented: list[BaseRoute]) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then kept), with the operations of ``documented``
    (routes answered before the router, never added to it) before the app's own."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=[*documented, *app.routes],
        tags=app.openapi_tags, separate_input_output_schemas=False,
    )
    _, defs = models_json_schema([(m, "validation") for m in models.SCHEMA_MODELS],
                                 ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(defs.get("$defs", {}))
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer",
                       "description": "an API key; required only when the server has keys configured"}
    }
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/health/"):
            for operation in item.values():
                operation["security"] = [{"bearerAuth": []}, {}]
    app.openapi_schema = schema
    return schema
