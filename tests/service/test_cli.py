"""``gradserve``: every setting is a flag, flags win over the environment, bad values exit 2."""

from __future__ import annotations

import pytest

from service import cli
from service.settings import Settings


def test_every_setting_is_a_flag():
    parser = cli.build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # noqa: SLF001
    flags = {opt for action in serve._actions for opt in action.option_strings}  # noqa: SLF001
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in flags, name


def test_help_shows_plain_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "GRADSERVE_REGISTRY_PATH; default var/registry.sqlite3]" in text
    assert "GRADSERVE_HOST; default 127.0.0.1]" in text
    assert "GRADSERVE_COMPILE_CACHE_DIR; default unset]" in text
    assert "PosixPath" not in text and "None" not in text and "'" not in text


def test_flags_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADSERVE_PORT", "7000")
    monkeypatch.setenv("GRADSERVE_QUEUE_SIZE", "3")
    monkeypatch.setenv("GRADSERVE_DEVICE", "gpu")
    args = cli.build_parser().parse_args(
        ["serve", "--port", "9000", "--device", "cpu", "--registry-path", str(tmp_path / "r.db"),
         "--timeout-ms", "1500", "--drain-timeout-s", "2.5", "--api-keys", "a,b"]
    )
    settings = cli.settings_from_args(args)
    assert settings.port == 9000 and settings.device == "cpu"  # flags
    assert settings.queue_size == 3  # environment
    assert settings.timeout_ms == 1500 and settings.drain_timeout_s == 2.5
    assert settings.registry_path == tmp_path / "r.db"
    assert settings.keys() == {"a", "b"}
    assert settings.max_nodes == Settings.model_fields["max_nodes"].default  # default


@pytest.mark.parametrize("argv", [["serve", "--port", "abc"], ["serve", "--queue-size", "0"],
                                  ["serve", "--api-keys-file", "/nonexistent/keys"]])
def test_bad_values_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "gradserve serve: --" in capsys.readouterr().err


def test_bad_choice_exits_2():
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--device", "tpu"])
    assert info.value.code == 2


def test_loadtest_is_dispatched_lazily(monkeypatch):
    import gradserve_loadtest

    seen = []
    monkeypatch.setattr(gradserve_loadtest, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["loadtest", "--help", "-x"]) == 0
    assert seen == [["--help", "-x"]]


@pytest.mark.parametrize("access_log", [None, "true"], ids=["default-off", "on"])
def test_the_access_log_is_off_unless_asked_for(server_factory, access_log):
    """uvicorn's line per request costs ~70 µs of a tutorial call's ~620 µs server CPU on the
    benchmark machine (docs/benchmarks.md), so it is a setting, off by default."""
    import httpx  # noqa: PLC0415

    settings = {} if access_log is None else {"access_log": access_log}
    server = server_factory(**settings)
    assert httpx.get(server.url + "/health/ready", timeout=10).status_code == 200
    assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if '"GET /health/ready HTTP/1.1" 200' in line]
    assert bool(lines) == (access_log == "true"), server.log()[-2000:]
