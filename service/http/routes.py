"""The routes FastAPI answers: ``/networks``, ``/ops``, ``/health/*``, ``/metrics``.

``POST /grad`` is not among them: the guard answers every ``/grad`` request itself
(:mod:`service.http.guard`). Its operation is described to the OpenAPI document by
:data:`GRAD_OPERATION`, a route that is never added to the app.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import engine
import engine.onnx
from engine.errors import ArgumentError

from .. import models
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .body import parse_body, read_body
from .encode import JSON_TYPE, dumps, json_response
from .errors import error_response
from .guard import NAMESPACE
from .openapi import BINARY_BODY, request_body, responses
from .state import State


# Documentation only (never routed: the guard answers POST /grad). Its name makes the
# operationId, and a docstring would become the operation's description.
async def grad(request: Request) -> Response:  # pragma: no cover
    raise RuntimeError("POST /grad is answered by the guard")


#: ``POST /grad`` as the OpenAPI document shows it (never added to the app's router)
GRAD_OPERATION = APIRoute(
    "/grad", grad, methods=["POST"], tags=["gradients"], summary="Gradients of a network (GradOperation)",
    responses=responses(400, 401, 404, 413, 422, 500, 503, 504, ok={200: {
        "model": models.GradResponse,
        "description": "the gradients; `output_encoding: binary` answers application/octet-stream in "
        "the binary framing (header Inference-Header-Content-Length)",
        "content": {"application/octet-stream": BINARY_BODY},
    }}),
    openapi_extra=request_body("GradRequest", "the network (inline or by id), inputs and GradOperation flags"),
)



def _transform_route(name: str, summary: str, response: type) -> APIRoute:
    async def endpoint(request: Request) -> Response:  # pragma: no cover - documentation only
        raise RuntimeError(f"POST /{name} is answered by the guard")

    endpoint.__name__ = name  # the operationId
    return APIRoute(
        f"/{name}", endpoint, methods=["POST"], tags=["gradients"], summary=summary,
        responses=responses(400, 401, 404, 413, 422, 500, 503, 504, ok={200: {
            "model": response, "description": "the answer, nested as MindSpore 2.10 nests it (tuples as lists)",
            "content": {"application/octet-stream": BINARY_BODY},
        }}),
        openapi_extra=request_body(f"{name.capitalize()}Request", f"the network (inline or by id), inputs and /{name}'s fields"),
    )


#: every route the guard answers itself (the transforms), as the OpenAPI document shows them
TRANSFORM_ROUTES = [
    GRAD_OPERATION,
    _transform_route("jvp", "Jacobian-vector product (mindspore.ops.jvp)", models.JvpResponse),
    _transform_route("vjp", "Vector-Jacobian product (mindspore.ops.vjp)", models.VjpResponse),
    _transform_route("jacobian", "Jacobian (mindspore.jacrev / jacfwd)", models.JacobianResponse),
    _transform_route("hvp", "Hessian-vector product, forward over reverse", models.HvpResponse),
]

#: the media type of an ONNX ModelProto body (API.md section 8)
ONNX_TYPE = "application/onnx"

_REGISTER_BODY = request_body("Network", "a gradnet/1 network (or {\"network\": <network>}), or with "
                              "Content-Type: application/onnx an ONNX ModelProto, converted to gradnet/1")
_REGISTER_BODY["requestBody"]["content"][ONNX_TYPE] = {
    "schema": {"type": "string", "format": "binary"},
    "description": f"a serialized ONNX ModelProto (opsets {engine.onnx.MIN_OPSET} to {engine.onnx.MAX_OPSET} of "
    "the default domain, no external data): registered as its gradnet/1 conversion; GET /ops lists the ONNX ops it "
    "may use (`onnx`). Not ONNX: 400; an op the importer cannot convert: 422 unsupported_onnx_op, naming the node, "
    "op type and opset; over the body or network limits: 413",
}

# The id is read from request.path_params (a typed parameter would add FastAPI's own 422 schema).
_NETWORK_ID = {"parameters": [{"name": "network_id", "in": "path", "required": True,
                               "description": 'a network id, "sha256:…"', "schema": {"type": "string"}}]}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def add_routes(app: FastAPI, state: State) -> None:
    """Add the routes of every endpoint but ``/grad`` to ``app``."""
    settings, registry = state.settings, state.registry

    def _import_onnx(body: bytes) -> engine.Network:
        """An ONNX ModelProto -> its gradnet/1 network, under the server's limits (API.md section 8)."""
        doc = engine.onnx.import_model(body, max_bytes=settings.max_body_bytes, max_nodes=settings.max_nodes,
                                       max_elements=settings.max_tensor_elements)
        return state.parse_network(doc)

    @app.post(
        "/networks", tags=["networks"], summary="Register a network (idempotent)", status_code=201,
        responses=responses(400, 401, 413, 422, 503, ok={
            201: {"model": models.NetworkInfo, "description": "registered"},
            200: {"model": models.NetworkInfo, "description": "already registered with this key"},
        }),
        openapi_extra=_REGISTER_BODY,
    )
    async def register(request: Request) -> Response:
        namespace = request.scope[NAMESPACE]
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s, settings.min_body_rate)
        if _media_type(request) == ONNX_TYPE:
            # parsing, shape inference and conversion are CPU work: off the event loop
            net = await run_in_threadpool(_import_onnx, body)
            signature, created = await run_in_threadpool(registry.put, namespace, net)
            return Response(dumps(signature), status_code=201 if created else 200, media_type=JSON_TYPE,
                            headers={"Location": f"/networks/{net.id}"})
        parsed = await run_in_threadpool(parse_body, body, request.headers)
        doc, path = parsed.doc, ""
        if "network" in doc and "format" not in doc:  # {"network": {...}} is accepted too
            if len(doc) != 1:
                extra = next(k for k in doc if k != "network")
                raise ArgumentError(f"unknown field '{extra}': POST /networks takes a gradnet/1 network "
                                    "(or {\"network\": <network>})", extra)
            doc, path = doc["network"], "network."
        net = await run_in_threadpool(state.parse_network, parsed.inline_binary(doc, path.rstrip(".")), path)
        signature, created = await run_in_threadpool(registry.put, namespace, net)
        return Response(dumps(signature), status_code=201 if created else 200, media_type=JSON_TYPE,
                        headers={"Location": f"/networks/{net.id}"})

    @app.get("/networks", tags=["networks"], summary="The networks registered with this API key",
             responses=responses(401, 503, ok={200: {"model": models.NetworkList, "description": "their signatures"}}))
    async def list_networks(request: Request) -> Response:
        rows = await run_in_threadpool(registry.list, request.scope[NAMESPACE])
        return json_response({"networks": rows})

    @app.get("/networks/{network_id}", tags=["networks"], summary="A registered network's document",
             responses=responses(401, 404, 503, ok={200: {"model": models.Network,
                                                          "description": "the gradnet/1 document (parameters in b64)"}}),
             openapi_extra=_NETWORK_ID)
    async def get_network(request: Request) -> Response:
        doc = await run_in_threadpool(registry.document, request.scope[NAMESPACE], request.path_params["network_id"])
        return Response(doc, media_type=JSON_TYPE)

    @app.delete("/networks/{network_id}", tags=["networks"], summary="Remove a registered network",
                status_code=204, responses=responses(401, 404, 503, ok={204: {"description": "removed"}}),
                openapi_extra=_NETWORK_ID)
    async def delete_network(request: Request) -> Response:
        network_id = request.path_params["network_id"]
        still_used = await run_in_threadpool(registry.delete, request.scope[NAMESPACE], network_id)
        if not still_used and state.pool is not None:
            await state.pool.forget(network_id)
        return Response(status_code=204)

    @app.get("/ops", tags=["service"], summary="The op catalog",
             responses=responses(401, ok={200: {"model": models.OpCatalog, "description": "every supported primitive"}}))
    async def ops() -> Response:
        return Response(state.ops_body, media_type=JSON_TYPE)

    @app.get("/health/live", tags=["service"], summary="Liveness",
             responses={200: {"model": models.Health, "description": "the process is up"}})
    async def live() -> Response:
        return json_response({"status": "ok"})

    @app.get("/health/ready", tags=["service"], summary="Readiness",
             responses=responses(503, ok={200: {"model": models.Health, "description": "workers can take work"}}))
    async def ready() -> Response:
        problem = state.unready()
        if problem is not None:
            return error_response(problem)
        workers = sum(1 for w in state.pool.snapshot() if w.get("ready"))
        return json_response({"status": "ready", "workers": workers})

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics",
             responses=responses(401, ok={200: {"description": "Prometheus text format",
                                                "content": {"text/plain": {"schema": {"type": "string"}}}}}))
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=METRICS_CONTENT_TYPE)
