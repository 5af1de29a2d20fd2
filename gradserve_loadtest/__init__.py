"""``gradserve loadtest``: concurrency sweeps against a running gradserve, driven by an existing
load generator (Locust by default, or hey), with the server's own time breakdown from /metrics.

Modules, one per concern: :mod:`.scenarios` (request bodies), :mod:`.backends` (Locust and hey as
subprocesses), :mod:`.server` (/metrics scraping, network registration), :mod:`.report` (figures,
tables, JSON, Markdown), :mod:`.plot` (PNG), :mod:`.command` (the CLI), :mod:`.users` and
:mod:`.locustfile` (Locust user classes; importing them imports gevent, so nothing else does).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gradserve loadtest`` (``service.cli`` calls it with the arguments after
    the subcommand)."""
    from .command import main as _main

    return _main(argv)


__all__ = ["main"]
