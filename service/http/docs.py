"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with every asset served by the service itself.

FastAPI's own pages load Swagger UI, ReDoc, Google Fonts and a favicon from CDNs, so on a host
without internet they are blank. Here the pages are FastAPI's (``get_swagger_ui_html``,
``get_redoc_html``) and their scripts, stylesheet and favicon are the dist builds that the
``fastapi-offline`` package ships and keeps up to date (Swagger UI 5, ReDoc 2): nothing is copied
into this repository, and a ``pip install -U fastapi-offline`` updates them.

The assets live under ``/docs/assets/<fastapi-offline version>/<file>``, so a browser may keep
them for good (``immutable``): an upgrade changes the URL. Only the four files below are served:
any other name is the service's usual JSON 404. They pass through the same API-key check as
``/docs`` and ``/openapi.json`` (see :mod:`service.auth`): whatever lets a browser open ``/docs``
on a server with keys (a proxy or extension that adds the header) sends the key for them too.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import metadata, resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response

#: the package that ships the dist builds, and the folder of them inside it
PACKAGE = "fastapi_offline"
#: file name -> media type: the only files served
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_CACHE = "public, max-age=31536000, immutable"
#: what the pages may load: their own origin only (the spec, the assets, Swagger UI's "Try it
#: out" calls), inline styles (both UIs inject them), data: images and fonts (Swagger UI's icons),
#: blob: workers (ReDoc's search). ReDoc 2's side menu has a Redocly logo hard-wired to
#: cdn.redoc.ly: this is what keeps it from being fetched (offline it would fail and hide anyway).
#: Inline scripts are allowed by their hash (see :func:`_with_policy`).
_POLICY = ("default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
           "base-uri 'self'; form-action 'self'")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def asset_dir() -> Path:
    """The folder of the dist builds in the installed ``fastapi-offline``; every file of
    :data:`ASSETS` must be there (checked, so a broken install fails at start, not in a browser)."""
    folder = Path(str(resources.files(PACKAGE) / "static"))
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{PACKAGE} has no {', '.join(missing)} in {folder}: reinstall fastapi-offline")
    return folder


def assets_prefix() -> str:
    """Where the assets are served: ``/docs/assets/<fastapi-offline version>``."""
    return f"/docs/assets/{metadata.version('fastapi-offline')}"


def install(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add ``docs_url``, ``redoc_url`` and the asset route to ``app`` (built with
    ``docs_url=None, redoc_url=None``, so that FastAPI adds no CDN pages of its own)."""
    folder = asset_dir()
    prefix = assets_prefix()
    openapi_url = app.openapi_url or "/openapi.json"

    def root(request: Request) -> str:
        # behind a proxy that mounts the service under a prefix (uvicorn --root-path)
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> Response:
        base = root(request)
        return _with_policy(get_swagger_ui_html(
            openapi_url=base + openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}{prefix}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{prefix}/swagger-ui.css",
            swagger_favicon_url=f"{base}{prefix}/favicon.png",
            oauth2_redirect_url=None,  # bearer keys only: no OAuth2 flow to come back from
            swagger_ui_parameters=app.swagger_ui_parameters,
        ))

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> Response:
        base = root(request)
        return _with_policy(get_redoc_html(
            openapi_url=base + openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{prefix}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{prefix}/favicon.png",
            with_google_fonts=False,  # ReDoc falls back to the system's fonts
        ))

    @app.api_route(prefix + "/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404)  # the app's 404 handler answers with the usual JSON error
        return FileResponse(folder / name, media_type=media_type, headers={"Cache-Control": _CACHE})


def _with_policy(page: Response) -> Response:
    """``page`` with its Content-Security-Policy; its inline scripts (Swagger UI's set-up call,
    written by FastAPI) are allowed by their sha256, not by 'unsafe-inline'."""
    hashes = "".join(f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                     for script in _INLINE_SCRIPT.findall(page.body))
    page.headers["Content-Security-Policy"] = _POLICY.format(scripts=hashes)
    return page


__all__ = ["ASSETS", "asset_dir", "assets_prefix", "install"]
