"""gradserve on Ray Serve: one HTTP endpoint, engine replicas on many nodes (issue 17).

``service.cluster:app`` is a Serve application (``serve run service.cluster:app``);
``service.cluster:build_app`` builds one from a config's ``args`` (``deploy/ray/serve.yaml``).
Ray is the ``cluster`` extra (``pip install 'gradserve[cluster]'``): nothing else in the service
imports this package, and ``gradserve serve`` stays the embedded single-node server.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "build_app"]


def __getattr__(name: str) -> Any:
    # `import service.cluster` costs nothing until the application is asked for (Ray is heavy)
    if name in ("app", "build_app"):
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(f"{__name__}.application"), name)
    raise AttributeError(name)
