"""The HTTP layer: the app factory (:mod:`.app`), the guard in front of it (:mod:`.guard`), the
routes FastAPI answers (:mod:`.routes`), the app's state and lifespan (:mod:`.state`), request
bodies in (:mod:`.body`) and responses out (:mod:`.encode`), errors as HTTP answers
(:mod:`.errors`), the OpenAPI document (:mod:`.openapi`) and its offline pages (:mod:`.docs`).

``from service.http import create_app`` (imported on first use: the grad layer imports this
package's codec modules, and the app imports the grad layer).
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app  # noqa: PLC0415

        return create_app
    raise AttributeError(name)
