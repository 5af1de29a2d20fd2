"""Helpers shared by the deployment tests (Dockerfile, compose file, packaging)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    if buf.strip():
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def pip_install_targets(shell: str) -> list[list[str]]:
    """The positional arguments of every `pip install` in a shell command line."""
    found = []
    for segment in re.split(r"&&|\|\||;|\bthen\b|\belse\b|\bfi\b", shell):
        m = re.search(r"\bpip3?(?:\.\d+)?\s+install\b(.*)", segment)
        if not m:
            continue
        args = shlex.split(m.group(1))
        found.append([a for a in args if not a.startswith("-")])
    return found
