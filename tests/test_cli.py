"""The command line: --help documents every flag, --version, bad settings are refused naming them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import modelserve


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


def test_a_grpc_port_in_use_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    import socket

    (tmp_path / "repo").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            "serve", "--model-repository", str(tmp_path / "repo"), "--http-port", "0", "--grpc-port", str(port)
        )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
