"""The app factory: ``create_app(settings)`` builds the FastAPI application.

The app is FastAPI with the guard (:mod:`.guard`) in front of its whole middleware stack: the
guard answers ``/grad`` itself (the grad handler, :mod:`service.grad.handler`) without passing
through Starlette's error middleware, FastAPI's telemetry and body-limit layers and their
``send`` wrappers; every other request goes on to FastAPI and its routes (:mod:`.routes`,
and ``/docs`` and ``/redoc`` served offline by :mod:`.docs`).
Bodies are read by the handlers themselves (:mod:`.body`), never by pydantic: the models in
:mod:`service.models` exist for the OpenAPI schema (:mod:`.openapi`) only.

Run it with ``gradserve serve`` (:mod:`service.cli`), or
``uvicorn --factory service.http.app:create_app``.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from ..settings import Settings
from . import docs, errors, oip, openapi, umbridge
from .guard import Guard
from .routes import TRANSFORM_ROUTES, add_routes
from .state import State

try:
    VERSION = metadata.version("gradserve")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.1.0"


class GradserveApp(FastAPI):
    """FastAPI behind the :class:`Guard`."""

    guard: Guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.guard(scope, receive, send)


def create_app(settings: Settings | None = None, *, launcher: Any = None) -> FastAPI:
    """The gradserve app. Nothing starts until its lifespan runs (under a server). ``launcher``
    starts the pool's workers (default: processes; the tests' in-process fakes, see
    :class:`service.pool.WorkerPool`)."""
    settings = settings or Settings()
    state = State(settings, VERSION, launcher)
    app = GradserveApp(
        title="gradserve",
        version=VERSION,
        description=(
            "Gradients with MindSpore's `ops.GradOperation(get_all, get_by_list, sens_param)` semantics, "
            "computed by JAX. Networks are data (`gradnet/1`), never code. Every error is "
            '`{"error": {"code", "message", "path"}}`. With API keys configured, every route but '
            "`/health/*` needs `Authorization: Bearer <key>`; networks registered with one key are "
            "visible only with that key."
        ),
        lifespan=state.lifespan,
        separate_input_output_schemas=False,
        docs_url=None, redoc_url=None,  # FastAPI's pages load from CDNs: service.http.docs serves them
        openapi_tags=[
            {"name": "gradients", "description": "GradOperation"},
            {"name": "networks", "description": "the registry of networks (content-addressed)"},
            {"name": "service", "description": "ops catalog, health, metrics"},
            {"name": "open inference protocol", "description": "Open Inference Protocol v2 (KServe, Triton; "
             "API.md section 10): a model is a registered network (the hex of its id), infer answers its "
             "gradients; errors are OIP's {\"error\": \"<message>\"}"},
            {"name": "umbridge", "description": "UM-Bridge protocol 1.0 (API.md section 10): a model is a registered "
             "network whose inputs declare their shapes; errors are UM-Bridge's {\"error\": {\"type\", \"message\"}}; "
             "API keys also as HTTP Basic auth (the key as the password)"},
        ],
    )
    app.state.service = state
    add_routes(app, state)
    umbridge.add_routes(app, state)  # GET /Info (its POST routes are the guard's: state.posts)
    docs.install(app)  # /docs, /redoc and their assets, all served from here
    errors.install(app)
    app.guard = Guard(functools.partial(FastAPI.__call__, app), state)
    state.routes = list(app.router.routes)
    app.openapi = lambda: openapi.build(app, [*TRANSFORM_ROUTES, *umbridge.DOC_ROUTES, *oip.ROUTES])  # type: ignore[method-assign]
    return app


__all__ = ["GradserveApp", "create_app"]
