#!/usr/bin/env python3
"""The host's pip settings, made visible to pip inside `podman build` without entering a layer.

    python3 deploy/pip_settings.py HOME_DIR

deploy/container-test.sh mounts HOME_DIR over the build's /root (the HOME of its RUN steps; the
folder exists in every Debian-based image, so the mount leaves no mount point behind in a layer,
where a mount point of its own stays as an empty file or folder). This script fills HOME_DIR:

- ``.config/pip/pip.conf``: every setting ``pip config list`` reports on the host, from pip's
  files and from ``PIP_*`` variables (a variable wins over a file, whatever the file's section);
  and, when no setting names a CA bundle, the host's (pip would otherwise use its own certifi);
- ``.host/<path>``: each local path those settings name (CA bundle, constraints, file://
  indexes, find-links folders): files are copied, folders bind-mounted read-only (root only),
  and the settings are rewritten to ``/root/.host/<path>``.

It prints one line saying what it did. Standard library only (it runs before any venv).
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

IN_BUILD = "/root/.host"  # HOME_DIR/.host as the build sees it
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def merge(config_list: str) -> configparser.ConfigParser:
    """``pip config list`` output (``section.key='value'`` lines; ``:env:.key`` for PIP_* variables)
    as one configuration."""
    conf = configparser.ConfigParser(interpolation=None)
    env: dict[str, str] = {}
    for line in config_list.splitlines():
        key, sep, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if not sep or not section or not name:
            continue
        text = ast.literal_eval(value)  # pip prints the value with %r
        if section == ":env:":
            env[name] = text
            continue
        if not conf.has_section(section):
            conf.add_section(section)
        conf.set(section, name, text)
    if not conf.has_section("global"):
        conf.add_section("global")
    for name, text in env.items():
        for section in conf.sections():
            conf.remove_option(section, name)
        conf.set("global", name, text)
    return conf


def add_host_ca_bundle(conf: configparser.ConfigParser, environ: Mapping[str, str],
                       candidates: tuple[str, ...] = CA_BUNDLES) -> str | None:
    """Name the host's CA bundle when no setting does; the one named (or None)."""
    if any(conf.has_option(section, "cert") for section in conf.sections()):
        return None
    for bundle in (environ.get("REQUESTS_CA_BUNDLE"), environ.get("SSL_CERT_FILE"), *candidates):
        if bundle and os.path.isfile(bundle):
            conf.set("global", "cert", bundle)
            return bundle
    return None


def index_tree(index: str, pages: int = 3) -> str:
    """The folder to mount for a file:// index: its pages may link outside it (a simple index
    ``simple/<name>/index.html`` pointing at ``../../files/...``), so the common folder of the
    index and the link targets of its first few pages."""
    found = [index]
    for name in sorted(os.listdir(index))[:pages]:
        page = os.path.join(index, name, "index.html")
        if os.path.isfile(page):
            with open(page, errors="replace") as f:
                hrefs = re.findall(r'href="([^"#]+)', f.read())[:pages]
            found += [os.path.normpath(os.path.join(index, name, h)) for h in hrefs if "://" not in h]
    common = os.path.commonpath(found)
    return common if common != "/" else index


def rewrite(conf: configparser.ConfigParser, exists: Callable[[str], bool] = os.path.exists,
            isfile: Callable[[str], bool] = os.path.isfile,
            tree_of: Callable[[str], str] = index_tree) -> tuple[list[str], list[str]]:
    """Point every local path of ``conf`` at IN_BUILD; the host files to copy and the host
    folders to mount (outermost only) for that."""
    files: list[str] = []
    trees: list[str] = []
    for section in conf.sections():
        for key, value in conf.items(section):
            tokens = []
            for token in value.split():
                scheme = "file://" if token.startswith("file://") else ""
                path = token[len(scheme):]
                if path.startswith("/") and exists(path):
                    path = os.path.normpath(path)
                    if isfile(path):
                        files.append(path)
                    else:
                        trees.append(tree_of(path) if key.endswith("index-url") else path)
                    token = scheme + IN_BUILD + path
                tokens.append(token)
            conf.set(section, key, " ".join(tokens))
    outer = sorted({t for t in trees if not any(t != o and t.startswith(o.rstrip("/") + "/") for o in trees)})
    return sorted(set(files)), outer


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    home = Path(argv[0])
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, check=True).stdout
    conf = merge(listed)
    add_host_ca_bundle(conf, os.environ)
    files, trees = rewrite(conf)
    for src in files:
        dst = home / ".host" / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    for src in trees:
        dst = home / ".host" / src.lstrip("/")
        dst.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", "-o", "ro", src, str(dst)], check=True)
    target = home / ".config" / "pip" / "pip.conf"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold index credentials
    with os.fdopen(fd, "w") as f:
        conf.write(f)
    settings = sum(len(conf.items(s)) - len(conf.defaults()) for s in conf.sections())
    print(f"{settings} setting(s), {len(files)} file(s) copied, {len(trees)} folder(s) bind-mounted")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
