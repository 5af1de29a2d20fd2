"""deploy/: the parts of the container test that run without a container engine.

- ``container_checks.py`` against a real ``gradserve serve`` (the same checks the script runs
  against the container), including the SIGTERM sequence, and each check failing when it should;
- ``pip_settings.py``: how the host's pip settings are merged and pointed into the build;
- ``container-test.sh``: its syntax, its usage text, shellcheck when installed.

The script itself (podman build, run, compose) is run by CI (``.ci/run``), not by pytest.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ._util import ROOT

DEPLOY = ROOT / "deploy"
CHECKS = DEPLOY / "container_checks.py"
SCRIPT = DEPLOY / "container-test.sh"
sys.path.insert(0, str(DEPLOY))
import pip_settings  # noqa: E402  (deploy/ is not a package: the scripts run as files)

sys.path.remove(str(DEPLOY))


def check(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKS), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- container_checks.py against a real server -----------------------------------------------------


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory()


def test_checks_pass_against_a_healthy_server(server):
    for args in (["ready"], ["tutorial"], ["malformed"]):
        r = check(args[0], server.url, *args[1:])
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "4.5099998" in check("tutorial", server.url).stdout
    malformed = check("malformed", server.url).stdout
    assert "400 bad_request" in malformed and "422 unknown_op" in malformed

    reg = check("register", server.url)
    assert reg.returncode == 0, reg.stderr
    net_id = reg.stdout.strip()
    assert net_id.startswith("sha256:")
    assert check("network", server.url, net_id).returncode == 0
    by_id = check("tutorial", server.url, "--network-id", net_id)
    assert by_id.returncode == 0, by_id.stderr


def test_checks_fail_when_they_should(server, tmp_path):
    missing = "sha256:" + "0" * 64
    r = check("network", server.url, missing)
    assert r.returncode == 1 and "status 404" in r.stderr, r.stderr
    r = check("tutorial", server.url, "--network-id", missing)
    assert r.returncode == 1 and "status 404" in r.stderr
    r = check("draining", server.url)  # not draining: the tutorial answers 200
    assert r.returncode == 1 and "status 200, expected 503" in r.stderr, r.stderr
    r = check("ready", "http://127.0.0.1:9", "--timeout", "0.5")  # nothing listens there
    assert r.returncode == 1 and "not 200 after" in r.stderr
    r = check("wait-busy", server.url, "--timeout", "0.5")  # idle
    assert r.returncode == 1 and "no job" in r.stderr


def test_sigterm_sequence_of_the_script(server_factory):
    """The script's drain check, step by step, against a server process instead of a container:
    a slow request on the worker, SIGTERM, a new request gets 503 draining, the slow one 200, the
    process exits 0."""
    srv = server_factory(drain_timeout_s=60)
    box: dict[str, subprocess.CompletedProcess] = {}
    slow = threading.Thread(target=lambda: box.setdefault("slow", check("slow", srv.url)))
    slow.start()
    busy = check("wait-busy", srv.url)
    assert busy.returncode == 0, busy.stderr
    srv.process.send_signal(signal.SIGTERM)
    draining = check("draining", srv.url)
    assert draining.returncode == 0, draining.stderr
    slow.join(150)
    assert box["slow"].returncode == 0, box["slow"].stderr
    assert box["slow"].stdout.startswith("200 after")
    assert srv.process.wait(60) == 0


# -- pip_settings.py -------------------------------------------------------------------------------


def test_merge_variables_win_over_files():
    listed = "\n".join([
        ":env:.default-timeout='180'",
        ":env:.find-links='/opt/wheels'",
        "global.find-links='/elsewhere'",
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/more/simple'",
        "install.find-links='/third'",
        "install.no-compile='yes'",
        "",
    ])
    conf = pip_settings.merge(listed)
    assert conf.get("global", "find-links") == "/opt/wheels"
    assert not conf.has_option("install", "find-links")
    assert conf.get("install", "no-compile") == "yes"
    assert conf.get("global", "default-timeout") == "180"
    assert conf.get("global", "extra-index-url") == "file:///opt/pypi/simple file:///opt/more/simple"


def test_merge_of_nothing_is_an_empty_global_section():
    conf = pip_settings.merge("")
    assert conf.sections() == ["global"] and not conf.items("global")


def test_ca_bundle_named_only_when_no_setting_names_one(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = pip_settings.merge("")
    assert pip_settings.add_host_ca_bundle(conf, {"SSL_CERT_FILE": str(bundle)}, ()) == str(bundle)
    assert conf.get("global", "cert") == str(bundle)
    conf = pip_settings.merge("global.cert='/mine.pem'\n")
    assert pip_settings.add_host_ca_bundle(conf, {"SSL_CERT_FILE": str(bundle)}, ()) is None
    assert conf.get("global", "cert") == "/mine.pem"


def test_index_tree_follows_the_links_of_a_simple_index(tmp_path):
    (tmp_path / "idx" / "simple" / "jax").mkdir(parents=True)
    (tmp_path / "idx" / "files").mkdir()
    (tmp_path / "idx" / "simple" / "jax" / "index.html").write_text(
        '<a href="../../files/jax-1-py3-none-any.whl#sha256=00">jax</a>')
    assert pip_settings.index_tree(str(tmp_path / "idx" / "simple")) == str(tmp_path / "idx")
    (tmp_path / "flat" / "jax").mkdir(parents=True)
    (tmp_path / "flat" / "jax" / "index.html").write_text('<a href="jax-1.whl">jax</a>')
    assert pip_settings.index_tree(str(tmp_path / "flat")) == str(tmp_path / "flat")


def test_rewrite_points_local_paths_into_the_build(tmp_path):
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    wheels = tmp_path / "wheels"
    (wheels / "sub").mkdir(parents=True)
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_dict({"global": {
        "cert": str(cert),
        "find-links": f"{wheels} {wheels / 'sub'} https://example.org/links",
        "extra-index-url": f"file://{tmp_path / 'idx'} https://pypi.example/simple",
        "constraint": "/does/not/exist.txt",
        "default-timeout": "180",
    }})
    files, trees = pip_settings.rewrite(conf, tree_of=lambda p: p, exists=lambda p: p != "/does/not/exist.txt"
                                        and (p.startswith(str(tmp_path)) or os.path.exists(p)))
    into = pip_settings.IN_BUILD
    assert conf.get("global", "cert") == into + str(cert)
    assert conf.get("global", "find-links") == f"{into}{wheels} {into}{wheels / 'sub'} https://example.org/links"
    assert conf.get("global", "extra-index-url") == f"file://{into}{tmp_path / 'idx'} https://pypi.example/simple"
    assert conf.get("global", "constraint") == "/does/not/exist.txt"  # not on the host: left as it is
    assert conf.get("global", "default-timeout") == "180"
    assert files == [str(cert)]
    assert trees == sorted([str(wheels), str(tmp_path / "idx")])  # wheels/sub is inside wheels


# -- container-test.sh -----------------------------------------------------------------------------


def test_script_syntax_and_usage():
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    usage = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert usage.returncode == 0
    for word in ("--install", "--gpu", "PYTHON_IMAGE", "DEBIAN_MIRROR", "SIGTERM"):
        assert word in usage.stdout, word
    bad = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, check=False, timeout=30)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_shellcheck_reports_nothing():
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed (Debian: apt-get install shellcheck)")
    r = subprocess.run([exe, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stdout


def test_ci_runs_the_container_test_and_fails_with_it():
    text = (ROOT / ".ci" / "run").read_text()
    block = text.split("# -- container test", 1)[1].split("# -- end container test", 1)[0]
    (line,) = [ln for ln in block.splitlines()[1:] if ln.strip() and not ln.lstrip().startswith("#")]
    assert line.startswith("deploy/container-test.sh </dev/null ||"), line
    assert "test_rc=1" in line  # a failed container test fails CI (the last line checks test_rc)
    # the script's last command (before the `exit` and `}` of the block it is wrapped in)
    last = [ln for ln in text.rstrip().splitlines() if ln.strip() not in ("exit", "}")][-1]
    assert last.startswith('[ "$test_rc" -eq 0 ]'), last


# -- gpu-check.sh: refuses clearly where there is no GPU -------------------------------------------

GPU_CHECK = DEPLOY / "gpu-check.sh"


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _gpu_check(tmp_path: Path, *args: str, stubs: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in stubs.items():
        _stub(bin_dir, name, body)
    # the stubs, then the basics (bash, sed, awk...) but nothing else: no real nvidia-smi or make
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "VENV": str(Path(sys.executable).parent.parent)}
    return subprocess.run([str(GPU_CHECK), *args], capture_output=True, text=True, check=False, env=env,
                          timeout=300, cwd=tmp_path)


def test_gpu_check_refuses_without_nvidia_smi(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi in /usr/bin")
    r = _gpu_check(tmp_path, stubs={"make": "echo make must not run >&2; exit 99"})
    assert r.returncode == 3, r.stderr
    assert "no nvidia-smi on PATH" in r.stderr and "nothing was run" in r.stderr
    assert "make must not run" not in r.stderr


def test_gpu_check_refuses_when_nvidia_smi_lists_no_gpu(tmp_path):
    r = _gpu_check(tmp_path, stubs={"nvidia-smi": "exit 0", "make": "echo make must not run >&2; exit 99"})
    assert r.returncode == 3 and "nvidia-smi lists no GPU" in r.stderr, r.stderr
    r = _gpu_check(tmp_path, stubs={"nvidia-smi": "echo 'NVIDIA-SMI has failed' >&2; exit 9", "make": "exit 99"})
    assert r.returncode == 3 and "nvidia-smi failed: NVIDIA-SMI has failed" in r.stderr, r.stderr


def test_gpu_check_refuses_when_jax_sees_no_gpu(tmp_path):
    """nvidia-smi (a stub) lists a card, but this venv's JAX is the CPU build: with --no-install
    the check stops there, names the reason, and runs no test."""
    if importlib.util.find_spec("jax_cuda12_plugin") is not None:
        pytest.skip("this venv has JAX's CUDA plugin: its JAX may well see a GPU")
    before = set((ROOT / "var" / "gpu-check").glob("*")) if (ROOT / "var" / "gpu-check").exists() else set()
    r = _gpu_check(tmp_path, "--no-install", stubs={
        "nvidia-smi": "echo '0, NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15, 9.0'",
        "make": "exit 0",  # the venv is this test's own
        "wrk": "exit 0",
    })
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "sees no GPU" in r.stderr and "--no-install" in r.stderr, r.stderr
    assert "GPU(s): 0, NVIDIA H100" in r.stdout
    after = set((ROOT / "var" / "gpu-check").glob("*")) if (ROOT / "var" / "gpu-check").exists() else set()
    assert after == before, "no output folder before the GPU is confirmed"


def test_gpu_check_usage():
    r = subprocess.run([str(GPU_CHECK), "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert r.returncode == 0 and "--record" in r.stdout and "--no-install" in r.stdout
    r = subprocess.run([str(GPU_CHECK), "--bogus"], capture_output=True, text=True, check=False, timeout=30)
    assert r.returncode == 2 and "unknown argument" in r.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(GPU_CHECK)], capture_output=True, text=True, check=False)
        assert lint.returncode == 0, lint.stdout


def test_make_gpu_check_runs_the_script():
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    out = subprocess.run(["make", "-n", "gpu-check", "GPU_CHECK_ARGS=--record"], cwd=ROOT, capture_output=True,
                         text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "deploy/gpu-check.sh --record" in out.stdout, out.stdout
