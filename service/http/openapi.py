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
    components["securitySchemes"]["basicAuth"] = {
        "type": "http", "scheme": "basic",
        "description": "UM-Bridge routes only: any user, the API key as the password (UM-Bridge clients send no "
        "headers of their own: http://user:KEY@host:port)"}
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/health/"):
            for operation in item.values():
                operation["security"] = [{"bearerAuth": []}, {}]
                if "umbridge" in operation.get("tags", ()):
                    operation["security"].insert(1, {"basicAuth": []})
    _json_bodies_without_binary(schema)
    app.openapi_schema = schema
    return schema


def _json_bodies_without_binary(schema: dict[str, Any]) -> None:
    """An ``application/json`` body has no binary part, so its tensors cannot say
    ``binary_data_size`` (the server answers 400): give JSON bodies their own copies of the models
    that hold tensors (``GradRequestJson`` … ``JsonTensor``, without ``binary_data_size``), and leave
    ``Tensor`` with it to the binary framing (``application/octet-stream``)."""
    comps = schema.get("components", {}).get("schemas", {})
    if "Tensor" not in comps:
        return
    prefix = "#/components/schemas/"

    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"][len(prefix):]} if isinstance(node.get("$ref"), str) else set()
            for value in node.values():
                found |= refs(value)
            return found
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node)) if node else set()
        return set()

    reaching = {"Tensor"}
    while True:
        more = {name for name, model in comps.items() if name not in reaching and refs(model) & reaching}
        if not more:
            break
        reaching |= more
    bodies = [op["requestBody"]["content"]["application/json"] for item in schema.get("paths", {}).values()
              for op in item.values() if isinstance(op, dict)
              and "application/json" in op.get("requestBody", {}).get("content", {})]
    used, todo = set(), refs(bodies)
    while todo:  # the models a JSON request body can reach
        name = todo.pop()
        if name in comps and name not in used:
            used.add(name)
            todo |= refs(comps[name])
    reaching &= used
    renamed = {name: ("JsonTensor" if name == "Tensor" else f"{name}Json") for name in reaching}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix):] in renamed:
                return {**node, "$ref": prefix + renamed[ref[len(prefix):]]}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name in sorted(reaching):
        copy = rewrite(comps[name])
        if name == "Tensor":
            copy["properties"] = {k: v for k, v in copy.get("properties", {}).items() if k != "binary_data_size"}
            copy["additionalProperties"] = False
            copy["title"] = "JsonTensor"
            if "examples" in copy:
                copy["examples"] = [e for e in copy["examples"] if "binary_data_size" not in e]
            copy["description"] = ("A tensor in a JSON body: `data` or `b64` (`binary_data_size` only in "
                                   "the binary framing, application/octet-stream).")
        else:
            copy["title"] = renamed[name]
        comps[renamed[name]] = copy
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            if "application/json" in content:
                content["application/json"]["schema"] = rewrite(content["application/json"]["schema"])
