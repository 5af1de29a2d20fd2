"""Write the app's OpenAPI schema: ``python -m service.openapi_export [path]``.

The default path is ``openapi/openapi.json`` at the repository root (``make openapi``). The
schema does not depend on settings (auth is documented as optional), so the file is the same
whoever generates it; ``tests/service/test_openapi.py`` checks it against a running server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def schema() -> dict[str, Any]:
    from .http.app import create_app  # noqa: PLC0415
    from .settings import Settings  # noqa: PLC0415

    # Defaults only: the environment must not change the committed file.
    return create_app(Settings.model_construct()).openapi()


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(schema()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
