"""The command line: --help documents every flag, --version, bad settings are refused naming them."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import modelserve
from tests.model_builders import write_onnx_scale
from tests.server_process import free_port, running_server

SCALED_CONFIG = """platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelserve", *args], capture_output=True, text=True, timeout=60)


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"modelserve {modelserve.__version__}"


def test_serve_help_documents_every_flag() -> None:
    result = _run("serve", "--help")
    assert result.returncode == 0
    for flag in (
        "--model-repository",
        "--host",
        "--http-port",
        "--grpc-port",
        "--config",
        "--model-control-mode",
        "--load-model",
        "--load-on-demand",
        "--max-queue-size",
        "--max-inflight-requests",
        "--max-request-bytes",
        "--drain-timeout-s",
        "--repository-poll-secs",
        "--memory-budget-mb",
        "--pin-model",
        "--unload-idle-secs",
    ):
        assert flag in result.stdout
    assert "127.0.0.1" in result.stdout


def test_invalid_settings_are_refused_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "modelserve.yaml"
    config.write_text("scheduling:\n  max_queue_size: -3\nhttp:\n  prot: 8000\n")
    result = _run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "scheduling.max_queue_size" in result.stderr
    assert "http.prot" in result.stderr


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("serve", "--model-repository", str(tmp_path / "nope"), "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    ("flag", "listener", "setting"),
    [
        ("--http-port", "REST", "http.port"),
        ("--grpc-port", "gRPC", "grpc.port"),
        ("--metrics-port", "metrics", "metrics.port"),
        ("--health-port", "health probes", "http.health_port"),
    ],
)
def test_a_port_in_use_is_one_line_naming_the_flag(
    tmp_path: Path, flag: str, listener: str, setting: str, workers: str
) -> None:
    (tmp_path / "repo").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--http-port": "0", "--grpc-port": "0", flag: str(port)}
        args = [arg for pair in ports.items() for arg in pair]
        result = _run("serve", "--model-repository", str(tmp_path / "repo"), "--workers", workers, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"cannot listen for {listener} on 127.0.0.1:{port} (Address already in use); "
        f"pick another port with {flag} (setting {setting})"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing claimed to listen before the bind failed, and grpcio's own error never got printed.
    assert ": REST on" not in result.stderr and "workers, REST on" not in result.stderr
    assert "add_port.cc" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_address_this_machine_does_not_have_names_the_host_flag(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): documentation only, never a local interface.
    result = _run("serve", "--model-repository", str(tmp_path / "repo"), "--host", "192.0.2.1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot listen for REST on 192.0.2.1:8000 (Cannot assign requested address)" in result.stderr
    assert "check --host (setting server.host)" in result.stderr
    assert "Traceback" not in result.stderr


# -- the admin commands (models, load, unload, alias, rollback) against a running server ------------------


def test_admin_commands_pointed_at_the_wrong_port_say_what_to_check(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    write_onnx_scale(repository / "scaled" / "1" / "model.onnx", 2.0)
    (repository / "scaled" / "config.pbtxt").write_text(SCALED_CONFIG)
    with running_server(repository) as server:
        grpc_url = f"http://{server.grpc_address}"
        for command in (["models"], ["load", "scaled"], ["alias", "list", "scaled"], ["rollback", "scaled"]):
            result = _run(*command, "--url", grpc_url)
            assert result.returncode == 1, result
            assert "Traceback" not in result.stderr
            assert f"modelserve {command[0]}: {grpc_url} did not answer HTTP/1.1" in result.stderr
            assert "check that --url is the server's REST address" in result.stderr
        # The next command at the right address works: a header row, then the model; no aliases is said.
        models = _run("models", "--url", server.http_url)
        assert models.returncode == 0, models.stderr
        header, row = models.stdout.splitlines()
        assert header.split() == ["MODEL", "VERSION", "STATE", "MEMORY", "REASON"]
        assert row.split()[:3] == ["scaled", "1", "READY"]
        aliases = _run("alias", "list", "scaled", "--url", server.http_url)
        assert aliases.returncode == 0, aliases.stderr
        assert aliases.stdout.strip() == (
            "scaled: no aliases (set one with: modelserve alias set scaled production VERSION)"
        )


def test_admin_commands_at_a_closed_port_say_the_server_is_not_reachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("models", "--url", url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        f"modelserve models: cannot reach {url} (Connection refused): is the server running, and is --url its "
        "REST address"
    ) in result.stderr
