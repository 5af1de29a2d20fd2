"""The Ray Serve application on a real Ray cluster on this machine (issue 17 points 1 and 3):
a head node (the ingress, Serve's controller and HTTP proxy; no CPUs for replicas) and two
worker nodes of one CPU each, so that each engine replica lands on a node of its own; the
replicas share a PostgreSQL registry the tests start (tests/support/postgres.py). All on
this machine (Ray binds its node address).

One cluster and one application for the module (starting them costs most of the time): the
tests run in order, scale up and down, kill a node, then drive the ingress with the load tester.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.support import FIXTURES, ROOT
from tests.support.api_contract import error_of
from tests.support.ray_cluster import local_cluster
from tests.support.servers import free_port

ray = pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]'")
from ray import serve  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def _tutorial() -> dict:
    return json.loads((FIXTURES / "tutorial.json").read_text())["cases"][0]["request"]


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(worker_nodes=2) as (cluster, workers):
        yield cluster, workers


@pytest.fixture(scope="module")
def ingress(cluster, postgres_cluster):
    from service.cluster import build_app

    url = postgres_cluster.create_database()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    app = build_app({"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                     "upscale_delay_s": 1, "downscale_delay_s": 4, "max_ongoing_requests": 8,
                     "ingress_resources": {"ingress": 0.01},
                     "settings": {"registry_url": url, "timeout_ms": 20000}})
    serve.run(app, name="gradserve", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{base}/grad", json=_tutorial(), timeout=30).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"the application did not answer: {serve.status()}")
    return base


def _running_replicas() -> int:
    status = serve.status().applications["gradserve"].deployments["engine"]
    return status.replica_states.get("RUNNING", 0)


def _wait_replicas(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate(_running_replicas()):
            return time.monotonic() - start
        time.sleep(0.25)
    pytest.fail(f"{what}: {serve.status().applications['gradserve'].deployments['engine']}")


class Load:
    """``clients`` threads sending the tutorial /grad by id until stopped; every answer kept."""

    def __init__(self, base: str, body: dict, clients: int) -> None:
        self.base, self.body, self.clients = base, body, clients
        self.answers: list[tuple[int, str, bytes]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as c:
            while not self._stop.is_set():
                try:
                    r = c.post("/grad", json=self.body)
                    self.answers.append((r.status_code, r.headers.get("x-gradserve-replica", ""), r.content))
                except httpx.HTTPError as exc:
                    self.answers.append((0, "", str(exc).encode()))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


@pytest.fixture(scope="module")
def by_id(ingress) -> dict:
    tutorial = _tutorial()
    r = httpx.post(f"{ingress}/networks", json=tutorial["network"], timeout=30)
    assert r.status_code in (200, 201), r.text
    return {"network_id": r.json()["network_id"], "inputs": tutorial["inputs"]}


def test_the_same_contract_through_the_ingress(ingress, by_id):
    with httpx.Client(base_url=ingress, timeout=30) as c:
        served = c.post("/grad", json=_tutorial())
        assert served.status_code == 200 and "gradients" in served.json()
        assert served.headers["x-gradserve-replica"]
        error_of(c.post("/grad", json={"network_id": "sha256:" + "0" * 64, "inputs": {}}), 404, "not_found")
        error_of(c.post("/grad", content=b"{not json", headers={"content-type": "application/json"}), 400)
        assert c.get("/health/ready").status_code == 200
        assert by_id["network_id"] in [n["network_id"] for n in c.get("/networks").json()["networks"]]


def test_autoscaling_up_under_load_spreads_over_nodes_and_back(ingress, by_id):
    assert _wait_replicas(lambda n: n == 1, 60, "one replica at rest")
    with Load(ingress, by_id, clients=6) as load:
        up_after = _wait_replicas(lambda n: n == 2, 120, "two replicas under load")
        seen = time.monotonic()
        while time.monotonic() - seen < 60:
            nodes = {where.split("/")[0] for status, where, _ in list(load.answers) if status == 200}
            if len(nodes) == 2:
                break
            time.sleep(0.5)
    statuses = Counter(status for status, _, _ in load.answers)
    nodes = Counter(where.split("/")[0] for status, where, _ in load.answers if status == 200)
    assert set(statuses) == {200}, (statuses, [c[:200] for s, _, c in load.answers if s != 200][:5])
    assert len(nodes) == 2, nodes  # replicas on the two worker nodes both answered
    # the added replica came up warm (issue 17.5): its first answer compiled nothing, the
    # program was preloaded from the registry's executable store before Serve routed to it
    first: dict[str, float] = {}
    for status, where, content in load.answers:
        if status == 200 and where not in first:
            first[where] = json.loads(content)["timing_ms"]["compile"]
    assert len(first) >= 2 and all(ms == 0.0 for ms in first.values()), first
    down_after = _wait_replicas(lambda n: n == 1, 120, "back to one replica at rest")
    print(f"\nautoscaling: 1 -> 2 after {up_after:.1f} s of load; 2 -> 1 {down_after:.1f} s after it; "
          f"answers {sum(statuses.values())}, per node {dict(nodes)}")


def test_killing_a_worker_node_fails_only_its_requests(cluster, ingress, by_id):
    ray_cluster, workers = cluster
    with Load(ingress, by_id, clients=6) as load:
        _wait_replicas(lambda n: n == 2, 120, "two replicas under load")
        # both nodes answering, then the second node goes (its raylet and every process on it)
        time.sleep(2)
        before = len(load.answers)
        by_node = Counter(where.split("/")[0] for _, where, _ in load.answers[-50:])
        victim = next(w for w in workers if w.node_id in by_node)
        ray_cluster.remove_node(victim, allow_graceful=False)
        killed_at = len(load.answers)
        time.sleep(8)
        after_kill = load.answers[killed_at:]
    failures = [a for a in after_kill if a[0] != 200]
    for status, _, content in failures:
        assert status == 503, (status, content[:300])
        body = json.loads(content)
        assert body["error"]["code"] == "worker_died", body
    ok_after = [a for a in after_kill if a[0] == 200]
    assert ok_after, "nothing was answered after the node was killed"
    assert all(where.split("/")[0] != victim.node_id for _, where, _ in ok_after[-20:])
    assert len(failures) <= 6 * 2, f"{len(failures)} failures: more than the requests the node held"
    print(f"\nnode kill: {before} answers before, {len(ok_after)} x 200 and {len(failures)} x 503 worker_died "
          f"in the 8 s after")
    # a node joins: Serve places a replica on it again under load
    ray_cluster.add_node(num_cpus=1)
    with Load(ingress, by_id, clients=6):
        _wait_replicas(lambda n: n == 2, 180, "two replicas again on the new node")


def test_gradserve_loadtest_against_the_ingress(ingress, tmp_path):
    report = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "loadtest", ingress, "--concurrency", "4", "--duration", "5",
         "--warmup", "1", "--no-progress", "--json", str(report), "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(report.read_text())
    print("\nloadtest:", json.dumps(data)[:1500])
    assert data


def test_back_pressure_is_a_503_with_retry_after(cluster, ingress, postgres_cluster):
    """Last (it redeploys): one replica that takes one request at a time and queues one more; the
    rest of a burst is turned away by Serve, answered as gradserve's 503 queue_full."""
    from service.cluster import build_app

    app = build_app({"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 1, "max_queued_requests": 1,
                     "ingress_resources": {"ingress": 0.01},
                     "settings": {"registry_url": postgres_cluster.create_database()}})
    serve.run(app, name="gradserve", route_prefix="/", blocking=False)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = serve.status().applications["gradserve"]
        if status.status == "RUNNING" and httpx.post(f"{ingress}/grad", json=_tutorial(), timeout=30).status_code == 200:
            break
        time.sleep(0.5)
    with Load(ingress, _tutorial(), clients=12) as load:
        time.sleep(6)
    statuses = Counter(status for status, _, _ in load.answers)
    refused = [(s, c) for s, _, c in load.answers if s == 503]
    assert statuses[200] > 0 and refused, statuses
    assert set(statuses) == {200, 503}, statuses
    for _, content in refused[:20]:
        assert json.loads(content)["error"]["code"] == "queue_full"
    with httpx.Client(base_url=ingress, timeout=30) as c:
        # one refused answer's headers, fetched again under a burst of our own
        with Load(ingress, _tutorial(), clients=12):
            for _ in range(200):
                r = c.post("/grad", json=_tutorial())
                if r.status_code == 503:
                    assert int(r.headers["retry-after"]) >= 1
                    break
            else:
                pytest.fail("no 503 under a burst of 13 clients on a queue of 2")
    print(f"\nback-pressure: {dict(statuses)} in 6 s with 12 clients on max_ongoing 1 + max_queued 1")
