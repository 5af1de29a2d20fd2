"""The guard: the pure ASGI middleware in front of the whole app.

It checks API keys (401), refuses requests while the service drains (503, but ``/metrics``),
counts the requests in flight (the drain waits for them) and observes every request's metrics.
``/health/*`` is always open. ``/grad`` and the other transform routes (``/jvp``, ``/vjp``,
``/jacobian``, ``/hvp``: ``state.posts``, one dict lookup) are answered here: ``POST``, the hot
path, by their handler (:class:`service.grad.handler.GradHandler`: no routing, no FastAPI
handler, no send wrapper, it returns the status), any other method with 405 (and ``/grad/``
with a redirect, as Starlette does for a route's path with a trailing slash); every other
request goes on to FastAPI.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.datastructures import URL
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import DrainingError
from .errors import error, error_response

if TYPE_CHECKING:
    from .state import State

#: scope key under which the guard leaves the caller's registry namespace
NAMESPACE = "gradserve.namespace"


# What Starlette would answer if the transform routes were its own routes.


def _not_allowed(scope: Scope, path: str) -> Response:
    """Another method than POST on a transform route."""
    return error(405, "method_not_allowed", f"{scope['method']} is not allowed on {path} (allowed: POST)",
                 "method", {"Allow": "POST"})


def _without_slash(scope: Scope, path: str) -> Response:
    """A transform route's path with a trailing slash (``/grad/``): a redirect to the route."""
    return RedirectResponse(str(URL(scope={**scope, "path": path[:-1]})))


class Guard:
    """No per-request task or body copy: one function call in front of the app."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        start = time.perf_counter()
        path: str = scope["path"]
        hot = state.posts.get(path)  # a transform route (/grad, /jvp, ...): answered here
        # Open Inference Protocol v2 (service.http.oip): every /v2 path, its own routes and errors
        oip = state.oip if hot is None and path[:3] == "/v2" and path[3:4] in ("", "/") else None
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path.startswith("/health/"):
                await self.app(scope, receive, send_status)
                return
            if oip is not None and path.startswith("/v2/health/"):  # open, as /health/* is
                status = await oip(scope, receive, send)
                return
            refusal = self._refusal(scope, path)
            if refusal is not None:
                reshape = state.error_shapes.get(path) if oip is None else oip.reshape  # another protocol's error body
                if reshape is not None:
                    refusal = reshape(refusal)
                status = refusal.status_code
                await refusal(scope, receive, send)
                return
            state.inflight += 1
            try:
                if hot is not None and scope["method"] == "POST":
                    status = await hot(scope, receive, send)
                elif oip is not None:
                    status = await oip(scope, receive, send)
                elif hot is not None or path[:-1] in state.posts:
                    answer = _not_allowed(scope, path) if hot is not None else _without_slash(scope, path)
                    if hot is not None and path in state.error_shapes:
                        answer = state.error_shapes[path](answer)
                    status = answer.status_code
                    await answer(scope, receive, send)
                else:
                    await self.app(scope, receive, send_status)
            finally:
                state.inflight -= 1
                if state.inflight == 0:
                    state.idle.set()
        finally:
            state.metrics.observe_request(path if hot is not None else state.route_template(scope), scope["method"],
                                          status, time.perf_counter() - start)

    def _refusal(self, scope: Scope, path: str) -> Response | None:
        """The answer to a request without the right API key (401), or one that comes while the
        service drains (503, but /metrics); None, with the caller's namespace in the scope."""
        state = self.state
        authorization = None
        if state.auth.enabled:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value
                    break
        namespace = state.auth.namespace(authorization, path in state.basic_auth)
        if namespace is None:
            return error(
                401, "unauthorized",
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'" if authorization
                is None else "wrong API key, or not 'Authorization: Bearer <key>'",
                "headers.authorization", {"WWW-Authenticate": 'Bearer realm="gradserve"'},
            )
        scope[NAMESPACE] = namespace
        if state.draining and path != "/metrics":
            return error_response(DrainingError())
        return None
