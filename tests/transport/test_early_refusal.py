"""Under overload REST refuses a request before reading its body: the refusal costs the server its headers,
not the request (the congestion collapse the reliability issue measured: the loop spent its core reading
and decoding requests it then rejected).

The proof is a request whose body never arrives: its headers announce 10 MB and only a few bytes follow.
A server that reads the body first would wait for the rest (the test's socket times out); one that decides
first answers 503 at once."""

from __future__ import annotations

import concurrent.futures
import socket
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2_grpc

from modelserve.transport.grpc.admission import RETRY_PUSHBACK_KEY
from tests.app.test_engine import GATED_CONFIG, GATED_MODEL, lines
from tests.model_builders import write_python_model
from tests.observability.test_metrics import scrape
from tests.server_process import ServerProcess, running_server
from tests.transport.test_grpc_admission import gated_request, rejection_count
from tests.waiting import wait_until


def gated_body(tag: str, wait_for: str) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "tag", "shape": [1], "datatype": "BYTES", "data": [tag]},
            {"name": "wait_for", "shape": [1], "datatype": "BYTES", "data": [wait_for]},
        ]
    }


def send_headers_only(server: ServerProcess, path: str, announced_bytes: int) -> bytes:
    """Send a POST whose body never completes; return what the server answered (headers and body)."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {announced_bytes}\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"inputs": [')
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # bounded by the socket timeout
            if not chunk:
                break
            received += chunk
        return received


def test_a_saturated_model_refuses_before_the_body_is_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "single", GATED_MODEL, GATED_CONFIG.format(folder=tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text("scheduling: {max_queue_size: 1}\n")
    with running_server(repo, config=config) as server, concurrent.futures.ThreadPoolExecutor(2) as pool:
        url = f"{server.http_url}/v2/models/single/infer"
        running = pool.submit(httpx.post, url, json=gated_body("running", "release"), timeout=60)
        wait_until(lambda: (tmp_path / "started-running").exists(), what="the only instance to be busy")
        queued = pool.submit(httpx.post, url, json=gated_body("queued", "release"), timeout=60)
        pending = ("nv_inference_pending_request_count", (("model", "single"), ("version", "1")))
        wait_until(lambda: scrape(server.http_url).get(pending) == 1, what="one request queued")

        answer = send_headers_only(server, "/v2/models/single/infer", announced_bytes=10_000_000)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 503"), answer[:300]
        assert b"retry-after: 1" in rest.lower()
        assert b"queue full" in rest and b"scheduling.max_queue_size=1" in rest
        rejected = ("nv_inference_request_failure", (("model", "single"), ("reason", "REJECTED"), ("version", "1")))
        assert scrape(server.http_url).get(rejected) == 1  # counted like a refusal in the queue
        assert rejection_count(server, "http") == 1  # and its cost observed

        # gRPC is refused by the same queue, with gRPC's retry hint.
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                request = gated_request("grpc", "release")
                request.model_name = "single"
                stub.ModelInfer(request, timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "queue full" in refused.value.details()
        assert dict(refused.value.trailing_metadata() or ())[RETRY_PUSHBACK_KEY] == "100"
        assert rejection_count(server, "grpc") == 1

        (tmp_path / "release").touch()
        assert running.result(timeout=60).status_code == 200
        assert queued.result(timeout=60).status_code == 200
        after = httpx.post(url, json=gated_body("after", ""), timeout=60)
        assert after.status_code == 200, after.text
    assert sorted(lines(tmp_path / "calls")) == ["after", "queued", "running"]


def test_the_inflight_limit_refuses_before_the_body_is_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "single", GATED_MODEL, GATED_CONFIG.format(folder=tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text("server: {max_inflight_requests: 1}\n")
    with running_server(repo, config=config) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        url = f"{server.http_url}/v2/models/single/infer"
        running = pool.submit(httpx.post, url, json=gated_body("running", "release"), timeout=60)
        wait_until(lambda: (tmp_path / "started-running").exists(), what="the one admitted request to run")
        # Any model name: the server-wide limit is known before the model is even looked up.
        answer = send_headers_only(server, "/v2/models/anything/infer", announced_bytes=10_000_000)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
        assert b"server.max_inflight_requests=1" in answer
        (tmp_path / "release").touch()
        assert running.result(timeout=60).status_code == 200
