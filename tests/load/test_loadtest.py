"""``gradserve loadtest``: the bodies it sends, its figures, and short sweeps against a live server.

The live tests (marked ``slow``) take about a minute in all on a 2-core machine: one sweep of two
3-second levels against the ``live_server`` fixture, one 3-second level at concurrency 16 against
a server whose queue holds one request, and (when ``hey`` is installed) one 2-second level with
the hey backend.

Counting: the tool counts every answer the load generator got (Locust's ``request`` event, hey's
CSV rows); the server counts ``gradserve_requests_total{route="/grad", method="POST"}`` in its
middleware *after* the response is sent. Requests in flight when a level's time is up are let to
finish (Locust ``--stop-timeout``; hey waits for its workers) and the ``/metrics`` scrape after a
level waits ``--settle`` seconds, so both counts cover the same requests; the test still allows a
boundary difference of ``COUNT_SLACK`` requests (a response sent but not yet counted when
``/metrics`` is read).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from gradserve_loadtest import backends, report, scenarios, server
from gradserve_loadtest.command import build_parser, main
from gradserve_loadtest.scenarios import BINARY_HEADER
from tests.support import FIXTURES, ROOT
from tests.support.servers import KEY_A

COUNT_SLACK = 2

# --------------------------------------------------------------------------------------------
# Bodies: what the server's own codec reads back from them
# --------------------------------------------------------------------------------------------


def _server_decode(prepared: scenarios.PreparedRequest) -> tuple[dict, dict]:
    """The service's parser applied to our body: the JSON doc and the decoded input tensors."""
    from service.http import body as codec

    headers = {k.lower(): v for k, v in prepared.headers.items()}
    body = codec.parse_body(prepared.body, headers)
    inputs = engine.decode_inputs(body.doc["inputs"], tensor=body.tensor)
    return body.doc, {"inputs": inputs, "network": body.inline_binary(body.doc.get("network"))}


@pytest.mark.parametrize("encoding", scenarios.ENCODINGS)
def test_tutorial_body_in_every_encoding(encoding: str) -> None:
    prepared = scenarios.prepare(scenarios.tutorial_request(), encoding)
    doc, decoded = _server_decode(prepared)
    assert doc["get_all"] is True and doc["output_encoding"] == encoding
    x, y = decoded["inputs"]
    np.testing.assert_array_equal(x, np.asarray(scenarios.TUTORIAL_X, np.float32))
    np.testing.assert_array_equal(y, np.asarray(scenarios.TUTORIAL_Y, np.float32))
    if encoding == "binary":
        assert int(prepared.headers[BINARY_HEADER]) < len(prepared.body)
        assert "binary_data_size" in json.dumps(doc)
        z = decoded["network"]["parameters"][0]["value"]
        assert np.frombuffer(base64.b64decode(z["b64"]), np.float32).tolist() == [1.0]
    else:
        assert BINARY_HEADER not in prepared.headers
        assert ("b64" in json.dumps(doc)) == (encoding == "b64")


def test_binary_mlp_body_keeps_tensor_order_and_bytes() -> None:
    req, _ = scenarios.mlp_request()
    prepared = scenarios.prepare(req, "binary")
    doc, decoded = _server_decode(prepared)
    net = decoded["network"]
    for want, got in zip(req["network"]["parameters"], net["parameters"]):
        assert want["name"] == got["name"] and want["value"]["b64"] == got["value"]["b64"]
    x = decoded["inputs"][0]
    assert x.shape == (128, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x.tobytes(), base64.b64decode(req["inputs"][0]["b64"]))


def test_mlp_scenario_reads_the_repository_fixture() -> None:
    req, source = scenarios.mlp_request()
    assert Path(source).resolve() == (ROOT / "tests" / "fixtures" / "mlp.json").resolve()
    shapes = [p["value"]["shape"] for p in req["network"]["parameters"]]
    assert shapes == [[784, 512], [512], [512, 512], [512], [512, 10], [10]]
    assert [t["shape"] for t in req["inputs"]] == [[128, 784], [128, 10]]
    assert req["get_by_list"] is True


def test_mlp_fixture_is_what_its_generator_writes() -> None:
    done = subprocess.run([sys.executable, "tools/make_mlp_fixture.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_missing_mlp_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "mlp.json"
    with pytest.raises(FileNotFoundError, match="make_mlp_fixture"):
        scenarios.build_scenario("mlp", missing)
    code = main(["http://127.0.0.1:9", "--scenario", "mlp", "--mlp-file", str(missing), "--no-progress"])
    assert code == 2
    assert "make_mlp_fixture" in capsys.readouterr().err


def test_network_id_mode_sends_only_inputs_and_the_id() -> None:
    req = scenarios.with_network_id(scenarios.tutorial_request(), "sha256:" + "0" * 64)
    assert "network" not in req and req["network_id"].startswith("sha256:")
    prepared = scenarios.prepare(scenarios.tutorial_request(), "binary", "sha256:" + "0" * 64)
    doc, decoded = _server_decode(prepared)
    assert "network" not in doc and len(decoded["inputs"]) == 2


def test_request_file_and_fixture_cases(tmp_path: Path) -> None:
    body = {"network": scenarios.TUTORIAL_NETWORK, "inputs": scenarios.tutorial_request()["inputs"]}
    (tmp_path / "mine.json").write_text(json.dumps(body))
    sc = scenarios.build_scenario(str(tmp_path / "mine.json"))
    assert sc.name == "mine" and "get_all" not in sc.request
    assert scenarios.load_request(FIXTURES / "tutorial.json")["network"]["name"] == "tutorial-net"
    with pytest.raises(ValueError):
        scenarios.build_scenario("no-such-scenario")


def test_non_finite_and_oip_spellings() -> None:
    wire = scenarios.to_wire({"datatype": "FP32", "shape": [3], "data": [1.0, "NaN", "-Infinity"]}, "json")
    assert wire["dtype"] == "float32" and wire["data"][1:] == ["NaN", "-Infinity"]
    head, raw = scenarios.raw_bytes({"datatype": "BF16", "shape": [2], "data": [1.0, -2.0]})
    assert head == {"dtype": "bfloat16", "shape": [2], "binary_data_size": 4} and raw == bytes.fromhex("803f00c0")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

METRICS_BEFORE = """
# TYPE gradserve_requests_total counter
gradserve_requests_total{route="/grad",method="POST",status="200"} 10.0
gradserve_requests_total{route="/networks",method="POST",status="201"} 1.0
gradserve_queue_seconds_sum 0.5
gradserve_queue_seconds_count 10.0
gradserve_compute_seconds_sum 1.0
gradserve_compute_seconds_count 10.0
gradserve_compile_seconds_sum 2.0
gradserve_compile_seconds_count 1.0
gradserve_compile_cache_hits_total{worker="0"} 9.0
gradserve_compile_cache_misses_total{worker="0"} 1.0
"""
METRICS_AFTER = """
gradserve_requests_total{route="/grad",method="POST",status="200"} 110.0
gradserve_requests_total{route="/grad",method="POST",status="503"} 7.0
gradserve_requests_total{route="/networks",method="POST",status="201"} 2.0
gradserve_queue_seconds_sum 1.5
gradserve_queue_seconds_count 110.0
gradserve_compute_seconds_sum 3.0
gradserve_compute_seconds_count 110.0
gradserve_compile_seconds_sum 2.0
gradserve_compile_seconds_count 1.0
gradserve_compile_cache_hits_total{worker="0"} 109.0
gradserve_compile_cache_misses_total{worker="0"} 1.0
"""


def test_metrics_delta() -> None:
    d = server.delta(server.Metrics.parse(METRICS_BEFORE), server.Metrics.parse(METRICS_AFTER))
    assert d["requests"] == {"200": 100.0, "503": 7.0} and d["requests_total"] == 107.0
    assert d["stages"]["queue"]["mean_ms"] == pytest.approx(10.0)
    assert d["stages"]["compute"]["mean_ms"] == pytest.approx(20.0)
    assert d["stages"]["compile"]["count"] == 0 and d["stages"]["compile"]["mean_ms"] is None
    assert d["cache_hits"] == 100.0 and d["cache_misses"] == 0.0
    s = report.server_figures(d, 107)
    assert s["mean_ms"]["compile"] == 0.0  # amortised over the requests that ran: no compile
    assert s["count_check"] == {"tool": 107, "server": 107, "diff": 0}


def _samples() -> backends.Samples:
    lat = np.concatenate([np.linspace(1.0, 100.0, 100), [0.5] * 5])
    status = np.asarray([200] * 100 + [503] * 4 + [0])
    return backends.Samples(lat, status, 2.0, ["locust"], "locust")


def test_client_figures_count_errors_by_code() -> None:
    c = report.client_figures(_samples())
    assert c["requests"] == 105 and c["ok"] == 100 and c["errors"] == {"503": 4, "0": 1}
    assert list(c["errors"]) == ["503", "0"]
    assert c["rps"] == pytest.approx(52.5) and c["ok_rps"] == pytest.approx(50.0)
    assert c["latency_ms"]["p50"] == pytest.approx(50.5) and c["latency_ms"]["max"] == 100.0
    assert c["latency_all_ms"]["min"] == 0.5  # errors are not folded into the success latencies


def _level(conc: int, encoding: str = "json") -> dict:
    s = _samples()
    client = report.client_figures(s)
    d = server.delta(server.Metrics.parse(METRICS_BEFORE), server.Metrics.parse(METRICS_AFTER))
    return {"scenario": "tutorial", "encoding": encoding, "mode": "inline", "concurrency": conc,
            "client": client, "server": report.server_figures(d, client["requests"])}


def test_tables_markdown_and_plot(tmp_path: Path) -> None:
    levels = [_level(1), _level(4), _level(1, "binary"), _level(4, "binary")]
    md = report.markdown(levels, {"command_line": "gradserve loadtest x", "backend": "locust",
                                  "duration": 3, "rate": None})
    rows = [line for line in md.splitlines() if line.startswith("| tutorial")]
    assert len(rows) == 4 and "503×4, conn×1" in rows[0]
    from rich.console import Console

    console = Console(record=True, width=250)
    report.print_tables(levels, console)
    text = console.export_text()
    assert "p99 ms" in text and "compute ms" in text and "503×4" in text
    from gradserve_loadtest.plot import plot

    png = plot(levels, tmp_path / "p.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_from_json_redraws_without_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"config": {"url": "http://x", "scenarios": ["tutorial"], "encodings": ["json"],
                      "modes": ["inline"], "backend": "locust", "duration": 3, "rate": None,
                      "command_line": "gradserve loadtest http://x"},
           "machine": {"cpus": 2, "loadavg_at_start": [1.0, 1, 1], "loadavg_at_end": [2.0, 1, 1]},
           "levels": [_level(1), _level(4)]}
    src = tmp_path / "in.json"
    report.write_json(src, doc)
    assert main(["--from-json", str(src), "--plot", str(tmp_path / "p.png"),
                 "--markdown", str(tmp_path / "t.md")]) == 0
    assert "503×4" in capsys.readouterr().out
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert "load average 1 at the start and 2 at the end" in (tmp_path / "t.md").read_text()


def test_hey_csv() -> None:
    text = ("response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"
            "0.0021,0.0001,0,0,0.002,0,200,0.001\n0.0100,0,0,0,0.01,0,503,0.5\n")
    lat, status, end = backends.parse_hey_csv(text)
    assert lat.tolist() == pytest.approx([2.1, 10.0]) and status.tolist() == [200, 503]
    assert end.max() == pytest.approx(0.51)


def test_cli_parsing() -> None:
    a = build_parser().parse_args(["http://x", "--encoding", "json,binary", "--concurrency", "1,4",
                                   "--scenario", "tutorial,mlp", "--rate", "50"])
    assert a.encoding == ["json", "binary"] and a.concurrency == [1, 4] and a.scenario == ["tutorial", "mlp"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["http://x", "--encoding", "xml"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["http://x", "--concurrency", "0"])


def test_cli_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http://127.0.0.1:9", "--ready-timeout", "0.5", "--no-progress"]) == 2
    assert "not ready" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Live: short sweeps against real servers (the tests.support.servers fixtures: the shared
# live_server, and server_factory for the tiny queue)
# --------------------------------------------------------------------------------------------

# The shared live_server requires an API key; /metrics is behind it too.
AUTH = {"Authorization": f"Bearer {KEY_A}"}


def _grad_count(url: str, headers: dict[str, str] | None = None) -> float:
    m = server.scrape(url, headers)
    assert m.error is None, m.error
    return sum(server.grad_requests(m).values())


@pytest.mark.slow
def test_short_sweep_table_json_png_and_counts(live_server, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_png, out_md = tmp_path / "run.json", tmp_path / "run.png", tmp_path / "run.md"
    before = _grad_count(live_server.url, AUTH)
    code = main([live_server.url, "--api-key", KEY_A, "--scenario", "tutorial", "--encoding", "json",
                 "--concurrency", "1,4", "--duration", "3", "--warmup", "1", "--no-progress",
                 "--json", str(out_json), "--plot", str(out_png), "--markdown", str(out_md)])
    after = _grad_count(live_server.url, AUTH)
    assert code == 0
    stdout = capsys.readouterr().out

    # the table: both levels, client and server columns
    assert "p99 ms" in stdout and "compute ms" in stdout and "cache hits" in stdout
    rows = [line for line in stdout.splitlines() if "tutorial" in line and "inline" in line]
    assert len(rows) == 4, stdout  # two levels, in the client table and in the server table

    doc = json.loads(out_json.read_text())
    levels = doc["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4]
    for lv in levels:
        c, s = lv["client"], lv["server"]
        lat = c["latency_ms"]
        assert c["requests"] >= 20 and c["errors"] == {} and c["ok"] == c["requests"]
        assert 2.5 < c["elapsed_s"] < 6 and c["rps"] == pytest.approx(c["requests"] / c["elapsed_s"])
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 10_000
        # the server's own breakdown: present, and each stage shorter than the client's mean latency
        assert s["scrape_ok"]
        for stage in ("queue", "decode", "compute", "encode"):
            assert s["mean_ms"][stage] is not None and 0 <= s["mean_ms"][stage] < lat["max"]
        assert s["mean_ms"]["compute"] < c["latency_ms"]["mean"]
        assert s["mean_ms"]["compile"] == 0.0  # the warm-up compiled it
        assert s["cache_hits"] == pytest.approx(c["requests"], abs=COUNT_SLACK)
        # the tool's count is the server's count (POST /grad, every status) for the same level
        assert abs(s["count_check"]["diff"]) <= COUNT_SLACK, s["count_check"]
        assert s["requests"].get("200", 0) == pytest.approx(c["ok"], abs=COUNT_SLACK)
    # ... and around the whole run: the levels plus the one warm-up request
    tool_total = sum(lv["client"]["requests"] for lv in levels) + 1
    assert abs((after - before) - tool_total) <= COUNT_SLACK, (after - before, tool_total)

    md = out_md.read_text()
    assert md.count("| tutorial | json | inline |") == 2
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import matplotlib.image

    h, w = matplotlib.image.imread(str(out_png)).shape[:2]
    assert w >= 1000 and h >= 400


@pytest.mark.slow
def test_tiny_queue_503s_are_reported_by_code(server_factory, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    tiny = server_factory(queue_size=1)
    out_json, out_md = tmp_path / "q.json", tmp_path / "q.md"
    code = main([tiny.url, "--scenario", "tutorial", "--concurrency", "16", "--duration", "3",
                 "--no-progress", "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    stdout = capsys.readouterr().out
    level = json.loads(out_json.read_text())["levels"][0]
    c, s = level["client"], level["server"]
    assert c["errors"].get("503", 0) > 0, c
    assert set(c["errors"]) <= {"503"}, c  # only queue-full rejections, no transport errors
    assert c["ok"] > 0 and c["ok"] + c["errors"]["503"] == c["requests"]
    assert f"503×{c['errors']['503']}" in stdout and "503×" in out_md.read_text()
    # the server counted the same 503s
    assert s["requests"].get("503", 0) == pytest.approx(c["errors"]["503"], abs=COUNT_SLACK)
    assert abs(s["count_check"]["diff"]) <= COUNT_SLACK


@pytest.mark.slow
@pytest.mark.skipif(backends.hey_path() is None, reason="hey is not installed")
def test_hey_backend_binary_network_id(live_server, tmp_path: Path) -> None:
    out_json = tmp_path / "hey.json"
    code = main([live_server.url, "--api-key", KEY_A, "--backend", "hey", "--encoding", "binary",
                 "--network-id", "--concurrency", "2", "--duration", "2", "--no-progress",
                 "--json", str(out_json)])
    assert code == 0
    level = json.loads(out_json.read_text())["levels"][0]
    assert level["backend"] == "hey" and level["mode"] == "network-id" and level["network_id"]
    assert level["client"]["requests"] > 10 and level["client"]["errors"] == {}
    assert abs(level["server"]["count_check"]["diff"]) <= COUNT_SLACK


@pytest.mark.slow
def test_web_ui_locustfile_headless(live_server, tmp_path: Path) -> None:
    """tests/load/locustfile.py runs as is (here headless, for 5 s) and gets 200s only."""
    import os

    # Compile the tutorial net first: on a busy machine a cold compile can outlast the run, and
    # Locust does not count a request cut off at the end. (Its users start after its own imports
    # and gevent's set-up: under the whole suite's load a 2 s run once ended with no request done.)
    with live_server.client(KEY_A) as c:
        assert c.post("/grad", json=scenarios.tutorial_request()).status_code == 200

    before = _grad_count(live_server.url, AUTH)  # the server's own count: whether requests came at all
    locustfile = Path(__file__).with_name("locustfile.py")
    env = {**os.environ, "GRADSERVE_LOADTEST_ENCODING": "b64",
           "GRADSERVE_LOADTEST_HEADERS": f"Authorization: Bearer {KEY_A}"}
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", live_server.url, "--headless",
         "-u", "2", "-r", "2", "-t", "5s", "--json", "--skip-log-setup", "--exit-code-on-error", "0",
         "TutorialUser"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout)
    grad = next((s for s in stats if s["name"] == "POST /grad"), None)
    assert grad is not None, (stats, f"the server answered {_grad_count(live_server.url, AUTH) - before:g} /grad meanwhile",
                              proc.stderr[-3000:])
    assert grad["num_requests"] > 0 and grad["num_failures"] == 0, (grad, proc.stderr[-3000:])


# -- the oip scenario (issue 16): the tutorial call as an Open Inference Protocol v2 infer --------


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_oip_scenario_body(encoding: str) -> None:
    sc = scenarios.build_scenario("oip")
    assert sc.protocol == "oip" and "oip" in scenarios.BUILTIN_SCENARIOS
    prepared = scenarios.prepare(sc.request, encoding, "sha256:" + "ab" * 32, sc.protocol)
    assert prepared.path == "/v2/models/" + "ab" * 32 + "/infer" and prepared.meta["route"] == scenarios.OIP_ROUTE
    size = int(prepared.headers.get(BINARY_HEADER, len(prepared.body)))
    doc = json.loads(prepared.body[:size])
    assert doc["parameters"] == {"get_all": True, "binary_data_output": encoding == "binary"}
    assert [(t["name"], t["datatype"], t["shape"]) for t in doc["inputs"]] == [("x", "FP32", [2, 3]),
                                                                               ("y", "FP32", [3, 3])]
    if encoding == "binary":
        assert [t["parameters"]["binary_data_size"] for t in doc["inputs"]] == [24, 36]
        x = np.frombuffer(prepared.body[size:size + 24], "<f4").reshape(2, 3)
    else:
        assert BINARY_HEADER not in prepared.headers
        x = np.array(doc["inputs"][0]["data"], np.float32).reshape(2, 3)
    np.testing.assert_array_equal(x, np.asarray(scenarios.TUTORIAL_X, np.float32))
    with pytest.raises(ValueError):
        scenarios.prepare(sc.request, "b64", "sha256:" + "ab" * 32, sc.protocol)  # OIP has no b64
    with pytest.raises(ValueError):
        scenarios.prepare(sc.request, "json", None, sc.protocol)  # OIP needs a registered model


def _protocol_sweep(url: str, tmp_path: Path, scenario: str, encodings: list[str]) -> None:
    """A short sweep of another protocol's scenario, one level per encoding: every request answered,
    and the server counted the same requests on that protocol's route (and computed them:
    compute stage)."""
    out_json = tmp_path / f"{scenario}.json"
    code = main([url, "--api-key", KEY_A, "--scenario", scenario, "--encoding", ",".join(encodings),
                 "--concurrency", "2", "--duration", "2", "--warmup", "1", "--no-progress", "--json", str(out_json)])
    assert code == 0
    levels = json.loads(out_json.read_text())["levels"]
    assert [(lv["scenario"], lv["encoding"]) for lv in levels] == [(scenario, e) for e in encodings]
    for lv in levels:
        assert lv["network_id"] and lv["client"]["requests"] > 10 and lv["client"]["errors"] == {}
        assert abs(lv["server"]["count_check"]["diff"]) <= COUNT_SLACK, lv["server"]["count_check"]
        assert lv["server"]["mean_ms"]["compute"] is not None


@pytest.mark.slow
def test_oip_scenario_sweep_counts_match_the_server(live_server, tmp_path: Path) -> None:
    _protocol_sweep(live_server.url, tmp_path, "oip", ["json", "binary"])  # counted on its OIP route


# -- the umbridge scenario (issue 16): the tutorial gradient as a UM-Bridge Gradient ----------------


def test_umbridge_scenario_body() -> None:
    sc = scenarios.build_scenario("umbridge")
    assert sc.protocol == "umbridge" and "umbridge" in scenarios.BUILTIN_SCENARIOS
    # a UM-Bridge model declares its inputs' shapes
    assert [(i["dtype"], i["shape"]) for i in sc.request["network"]["inputs"]] == [("float32", [2, 3]),
                                                                                  ("float32", [3, 3])]
    prepared = scenarios.prepare(sc.request, "json", "sha256:" + "ab" * 32, sc.protocol)
    assert prepared.path == "/Gradient" and prepared.meta["route"] == scenarios.UMBRIDGE_ROUTE
    doc = json.loads(prepared.body)
    assert doc["name"] == "ab" * 32 and (doc["outWrt"], doc["inWrt"], doc["config"]) == (0, 0, {})
    assert doc["sens"] == [1.0] * 6
    np.testing.assert_array_equal(np.asarray(doc["input"][0], np.float32),
                                  np.ravel(np.asarray(scenarios.TUTORIAL_X, np.float32)))
    np.testing.assert_array_equal(np.asarray(doc["input"][1], np.float32),
                                  np.ravel(np.asarray(scenarios.TUTORIAL_Y, np.float32)))
    with pytest.raises(ValueError):
        scenarios.prepare(sc.request, "binary", "sha256:" + "ab" * 32, sc.protocol)  # UM-Bridge is JSON
    with pytest.raises(ValueError):
        scenarios.prepare(sc.request, "json", None, sc.protocol)  # a UM-Bridge model is registered


@pytest.mark.slow
def test_umbridge_scenario_sweep_counts_match_the_server(live_server, tmp_path: Path) -> None:
    _protocol_sweep(live_server.url, tmp_path, "umbridge", ["json"])  # counted on its /Gradient route
