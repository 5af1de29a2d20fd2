"""``/docs`` and ``/redoc`` work with no internet (issue 10, point 3): a real headless Chromium
opens both pages of a real server, finds the ``POST /grad`` operation rendered, and every request
the pages made went to that server (none to a CDN, Google Fonts or anything else off the host).

The browser is Debian's ``chromium``, driven over the DevTools protocol (a websocket, with the
``websockets`` package that uvicorn[standard] brings). Without it the browser tests are skipped,
with the reason, except under CI or ``GRADSERVE_REQUIRE_BROWSER=1``, where a missing browser
fails: a skip there would read as a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from service.http import docs as docs_pages
from tests.support.api_contract import error_of
from tests.support.servers import KEY_A, LiveServer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PAGE_TIMEOUT_S = 60.0

#: Swagger UI: the POST /grad operation block, with its summary
SWAGGER_GRAD = """(() => {
  const block = document.querySelector('.opblock.opblock-post .opblock-summary-path[data-path="/grad"]');
  if (!block) return null;
  const op = block.closest('.opblock');
  return {method: op.querySelector('.opblock-summary-method').textContent.trim(),
          path: block.getAttribute('data-path'),
          summary: op.querySelector('.opblock-summary-description').textContent.trim(),
          operations: document.querySelectorAll('.opblock').length};
})()"""
#: ReDoc: the operation section of POST /grad, with its title and its http verb and path
REDOC_GRAD = """(() => {
  const section = [...document.querySelectorAll('[data-section-id*="operation/"]')]
    .find(s => s.textContent.includes('Gradients of a network (GradOperation)'));
  if (!section) return null;
  return {title: section.querySelector('h2').textContent.trim(),
          endpoint: section.textContent.includes('/grad') && /post/i.test(section.textContent),
          operations: document.querySelectorAll('[data-section-id*="operation/"]').length};
})()"""


def chromium_or_skip() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    reason = "headless Chromium is not installed (Debian: apt-get install chromium)"
    if os.environ.get("CI") or os.environ.get("GRADSERVE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; CI / GRADSERVE_REQUIRE_BROWSER=1 needs it")
    pytest.skip(reason)


class Browser:
    """One headless Chromium, one tab, over the DevTools protocol: every event is kept."""

    def __init__(self, executable: str, profile: Path) -> None:
        # its own process group, so that the renderer and utility processes go with it
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start: {self.process.stderr.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.05)
        port, path = port_file.read_text().split()
        self.devtools_url = f"ws://127.0.0.1:{port}{path}"

    def attach(self, ws: ClientConnection) -> None:
        """Open a tab on the DevTools connection ``ws`` and record its network, page and log events."""
        self.ws = ws
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Page.setLifecycleEventsEnabled", enabled=True, session=True)

    def call(self, method: str, *, session: bool = False, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str, ready_js: str) -> Any:
        """Load ``url`` and wait until the network is idle and ``ready_js`` gives a value; that value."""
        self.events.clear()
        self.call("Page.navigate", url=url, session=True)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while time.monotonic() < deadline:
            value = self.call("Runtime.evaluate", expression=ready_js, returnByValue=True,
                              session=True)["result"].get("value")
            idle = any(e.get("method") == "Page.lifecycleEvent" and e["params"]["name"] == "networkIdle"
                       for e in self.events)
            if value and idle:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{url} did not render in {PAGE_TIMEOUT_S:.0f} s; requests: {self.requests()}")

    def of(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e.get("method") == method]

    def requests(self) -> list[str]:
        return [p["request"]["url"] for p in self.of("Network.requestWillBeSent")]

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture(scope="module")
def docs_server(server_factory) -> LiveServer:
    """A server as `make serve` starts one: no API keys, so a plain browser can open /docs."""
    return server_factory()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium_or_skip(), tmp_path / "chromium-profile")
    try:
        with connect(b.devtools_url, max_size=None, open_timeout=30) as ws:
            b.attach(ws)
            yield b
    finally:
        b.close()


def assert_all_local(browser: Browser, server: LiveServer, blocked: tuple[str, ...] = ()) -> list[str]:
    """Every request the page made went to ``server`` and was answered 200, but ``blocked``: URLs
    off the host that the page's Content-Security-Policy stopped in the browser (never sent). The
    URLs; no script error, no other policy violation."""
    urls = browser.requests()
    origin = urlsplit(server.url)
    away = [u for u in urls if urlsplit(u).scheme not in ("data", "blob")
            and (urlsplit(u).scheme, urlsplit(u).netloc) != (origin.scheme, origin.netloc)]
    assert sorted(set(away)) == sorted(blocked), f"requests that left the host: {away}"
    by_id = {p["requestId"]: p["request"]["url"] for p in browser.of("Network.requestWillBeSent")}
    failed = {by_id.get(p["requestId"]): p for p in browser.of("Network.loadingFailed")}
    for url in blocked:
        assert failed.get(url, {}).get("blockedReason") == "csp", (url, failed.get(url))
    assert set(failed) == set(blocked), failed
    sent = {p["requestId"] for p in browser.of("Network.requestWillBeSentExtraInfo")}
    assert not [u for rid, u in by_id.items() if u in blocked and rid in sent], "a blocked request was sent"
    statuses = {p["response"]["url"]: p["response"]["status"] for p in browser.of("Network.responseReceived")}
    assert statuses and all(s == 200 for s in statuses.values()), statuses
    exceptions = [p["exceptionDetails"].get("text") for p in browser.of("Runtime.exceptionThrown")]
    assert not exceptions, exceptions
    errors = [p["entry"]["text"] for p in browser.of("Log.entryAdded") if p["entry"]["level"] == "error"
              and not any(url in p["entry"]["text"] for url in blocked)]
    assert not errors, errors
    return urls


def test_swagger_ui_renders_grad_from_the_service_alone(docs_server, browser):
    found = browser.open(docs_server.url + "/docs", SWAGGER_GRAD)
    assert found["method"] == "POST" and found["path"] == "/grad", found
    assert found["summary"] == "Gradients of a network (GradOperation)", found
    assert found["operations"] >= 8, found  # the whole schema, not just one block
    urls = assert_all_local(browser, docs_server)
    prefix = docs_server.url + docs_pages.assets_prefix()
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert f"{prefix}/{name}" in urls, (name, urls)
    assert docs_server.url + "/openapi.json" in urls, urls


def test_redoc_renders_grad_from_the_service_alone(docs_server, browser):
    found = browser.open(docs_server.url + "/redoc", REDOC_GRAD)
    assert found["title"] == "Gradients of a network (GradOperation)" and found["endpoint"], found
    assert found["operations"] >= 8, found
    # ReDoc 2's side menu shows a Redocly logo from its CDN, whatever the options: the page's
    # policy stops it in the browser (and offline it would fail and hide itself anyway)
    urls = assert_all_local(browser, docs_server, blocked=("https://cdn.redoc.ly/redoc/logo-mini.svg",))
    prefix = docs_server.url + docs_pages.assets_prefix()
    assert f"{prefix}/redoc.standalone.js" in urls and docs_server.url + "/openapi.json" in urls, urls
    assert not [u for u in urls if "font" in u], urls  # with_google_fonts=False: the system's fonts


def test_pages_point_only_at_the_service(docs_server):
    """Without a browser too: the HTML names no other host, and each asset is the package's file."""
    folder = docs_pages.asset_dir()
    with httpx.Client(base_url=docs_server.url, timeout=30) as c:
        for page in ("/docs", "/redoc"):
            r = c.get(page)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (page, r.text)
            assert "http://" not in r.text and "https://" not in r.text and "//" + "cdn" not in r.text, r.text
            assert docs_pages.assets_prefix() in r.text
        for name, media_type in docs_pages.ASSETS.items():
            r = c.get(f"{docs_pages.assets_prefix()}/{name}")
            assert r.status_code == 200, (name, r.text[:200])
            assert r.headers["content-type"] == media_type and "immutable" in r.headers["cache-control"]
            assert r.content == (folder / name).read_bytes()
            head = c.head(f"{docs_pages.assets_prefix()}/{name}")
            assert head.status_code == 200 and head.content == b""
        # only those files: anything else is the usual JSON 404 or 405
        assert error_of(c.get(f"{docs_pages.assets_prefix()}/core.py"), 404, "not_found")
        assert error_of(c.get(f"{docs_pages.assets_prefix()}/..%2Fcore.py"), 404, "not_found")
        assert error_of(c.get("/docs/assets/0.0.0/swagger-ui.css"), 404, "not_found")
        r = c.post(f"{docs_pages.assets_prefix()}/favicon.png")
        assert error_of(r, 405, "method_not_allowed") and r.headers["allow"] == "GET"  # the app lists HEAD nowhere


def test_with_api_keys_the_pages_and_assets_need_a_key(live_server):
    """As /docs and /openapi.json: a browser that can open /docs sends the key for its assets too."""
    paths = ["/docs", "/redoc", *(f"{docs_pages.assets_prefix()}/{name}" for name in docs_pages.ASSETS)]
    with httpx.Client(base_url=live_server.url, timeout=30) as anonymous, live_server.client(KEY_A) as keyed:
        for path in paths:
            assert error_of(anonymous.get(path), 401, "unauthorized")["path"] == "headers.authorization"
            assert keyed.get(path).status_code == 200, path
