"""The ``gradserve`` command.

``gradserve serve [--host H] [--port P] [--workers N] [--device auto|cpu|gpu] ...``: every field
of :class:`service.settings.Settings` is a flag (``--registry-path`` for ``registry_path``); a
flag wins over its ``GRADSERVE_*`` environment variable, which wins over the default.

``gradserve loadtest ...``: the load generator (:mod:`gradserve_loadtest`), imported only then.

On SIGTERM or SIGINT the server drains: readiness turns 503 and new requests get 503 with
``Retry-After`` while the requests in flight finish (up to ``--drain-timeout-s``); then it stops
its workers and exits 0. A second signal stops it without waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import typing
from types import FrameType
from typing import Any

from pydantic import ValidationError

from .settings import Settings

log = logging.getLogger("gradserve")


def _choices(annotation: Any) -> list[str] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            return [str(a) for a in typing.get_args(arg)]
    return None


def _plain(default: Any) -> str:
    """A default as a user would type it: ``var/registry.sqlite3``, ``127.0.0.1``, ``unset``."""
    return "unset" if default is None else str(default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradserve", description="Gradients with MindSpore GradOperation "
                                     "semantics, computed by JAX, over HTTP.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,loadtest}")
    serve = commands.add_parser(
        "serve", help="run the HTTP service",
        description="Run the HTTP service. Every flag overrides its environment variable.",
    )
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description or name} [env {prefix}{name.upper()}; default {_plain(field.default)}]"
        # Values stay strings here: Settings validates and converts them (and names the flag on error).
        serve.add_argument(flag, dest=name, default=None, choices=_choices(field.annotation),
                           metavar=name.upper() if _choices(field.annotation) is None else None,
                           help=help_text.replace("%", "%%"))
    load = commands.add_parser("loadtest", help="drive a running service with load (see `gradserve loadtest -h`)",
                               add_help=False)
    load.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    given = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    return Settings(**given)


def _run_loadtest(argv: list[str]) -> int:
    from gradserve_loadtest import main as loadtest_main  # noqa: PLC0415 - heavy (locust, matplotlib): only here

    return int(loadtest_main(argv) or 0)


class DrainingServer:
    """uvicorn's server, with a drain before it stops listening (see the module docstring)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        import uvicorn  # noqa: PLC0415

        from .http.protocol import protocol_class  # noqa: PLC0415

        service = app.state.service

        class _Server(uvicorn.Server):
            _loop: asyncio.AbstractEventLoop | None = None
            _draining = False

            async def serve(self, sockets: Any = None) -> None:
                self._loop = asyncio.get_running_loop()
                await super().serve(sockets)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                # Not uvicorn's: it would re-raise the signal after shutdown (exit status 143).
                if self._draining or self._loop is None or not self.started:
                    self.should_exit = True
                    if self._draining:
                        log.warning("second %s: stopping without waiting", signal.Signals(sig).name)
                        self.force_exit = sig == signal.SIGINT
                    return
                self._draining = True
                log.info("%s: draining (up to %.1f s)", signal.Signals(sig).name, settings.drain_timeout_s)
                self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain_then_exit()))

            async def _drain_then_exit(self) -> None:
                try:
                    await service.drain(settings.drain_timeout_s)
                finally:
                    self.should_exit = True

        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.access_log,
            loop="uvloop",
            # uvicorn's httptools protocol with our header timeout, header size and connection limits
            http=protocol_class(settings),
            timeout_keep_alive=settings.idle_timeout_s,
            lifespan="on",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self.server = _Server(config)

    def run(self, sockets: list[Any] | None = None) -> int:
        """Serve (on ``sockets`` when given: the supervisor's inherited listener) until stopped."""
        self.server.run(sockets=sockets)
        return 0 if self.server.started else 3


def _pin_malloc_mmap_threshold(threshold: int = 1024 * 1024, trim: int = 8 * 1024 * 1024) -> None:
    """Keep glibc's mmap threshold fixed, so that freed request bodies and tensors go back to the OS.

    glibc raises the threshold (up to 32 MiB) each time a large block is freed; after that, request
    bodies and arrays of a few MiB come from the heap arenas and their pages stay in RSS after they
    are freed: a burst of large requests left the server ~200 MiB over its baseline for good
    (tests/hardening/test_overload.py). A fixed threshold (glibc's own default) keeps every block of
    ``threshold`` bytes or more in its own mapping, unmapped on free. No-op without glibc.

    The threshold is 1 MiB, not glibc's 128 KiB default, and up to ``trim`` bytes free at the top
    of the heap are kept: on this VM each page of a fresh mapping costs a ~2.5 µs fault, and at
    128 KiB the MLP's 540 KB b64 body (its copy, orjson's string, the decoded bytes) paid ~630
    faults per request, 1.3-2.8 ms of a 0.26 ms decode (issue 14, docs/benchmarks.md)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD (setting it also stops the dynamic adjustment)
        libc.mallopt(-1, trim)  # M_TRIM_THRESHOLD: free heap top kept for the next request
    except (OSError, AttributeError):
        pass  # not glibc (musl): nothing to pin


def serve(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """``gradserve serve``; ``argv``: its flags as given (passed on to the supervisor's children)."""
    from . import supervisor  # noqa: PLC0415

    try:
        settings = settings_from_args(args)
        settings.keys()  # reads --api-keys-file now: a missing file is a startup error
    except ValidationError as exc:
        for err in exc.errors():
            flag = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
            print(f"gradserve serve: {flag}: {err['msg']} (got {err.get('input')!r})", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gradserve serve: --api-keys-file: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.worker_mode == "inprocess":
        if not supervisor.is_child():  # one HTTP process per device, with its engine (issue 14.4)
            return supervisor.Supervisor(settings, list(argv or [])).run()
        settings = settings.model_copy(update={"workers": 1})  # this process's one device
        # The engine runs here: XLA's buffers of a few MiB must come from the warm heap (pinned at
        # 128 KiB, each call of the MLP paid ~2,000 page faults: 5.7 -> 12-22 ms, docs/benchmarks.md).
        _pin_malloc_mmap_threshold(8 * 1024 * 1024, 32 * 1024 * 1024)
    else:
        _pin_malloc_mmap_threshold()
    from .http.app import create_app  # noqa: PLC0415 - imports JAX (via the engine)

    return DrainingServer(create_app(settings), settings).run(
        sockets=[sock] if (sock := supervisor.inherited_socket()) is not None else None)


def main(argv: list[str] | None = None) -> int:
    """The ``gradserve`` console entry point."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["loadtest"]:  # everything after it is the load generator's (even --help)
        return _run_loadtest(argv[1:])
    return serve(build_parser().parse_args(argv), argv[1:])


if __name__ == "__main__":
    sys.exit(main())
