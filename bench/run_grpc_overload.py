"""gRPC under overload: goodput, refusals and p99 of inference, and how long a health probe waits.

What it shows (issue 11, "gRPC never sheds" / "health is never starved"): past the front end's inference
call limit (``grpc.worker_threads - grpc.reserved_threads``) calls are refused at once with UNAVAILABLE
instead of queueing in grpcio's pool, and ``ServerLive`` keeps answering quickly beside them.

Method
------
* modelserve serving ``examples/models/iris`` (defaults, or ``--config``), pinned to ``--server-cpus``
  (default CPU 0), started and stopped by ``bench/common.py``.
* The client is grpcio in this process, pinned to ``--client-cpus`` (default CPU 1): ``concurrency``
  closed-loop callers (each sends its next call when the last one is answered, as perf_analyzer does).
  perf_analyzer is not used because it stops at the first failed request, and refusals are what this
  measures. One Python client is slower than perf_analyzer, so read goodput as a floor, not a peak.
* Beside the load, one probe sends ``ServerLive`` every 50 ms with a 5 s deadline: its p99 is what a
  Kubernetes gRPC probe would see.
* Each concurrency runs ``--seconds`` (default 8 s), so the default two levels take well under a minute.

Usage (from the repository root)::

    .venv/bin/python bench/run_grpc_overload.py [--concurrency 32,256] [--seconds 8] [--config FILE]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from common import RESULTS, int_list, modelserve_spec, running
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 10.0


def iris_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32).tobytes())
    return request


def p99_ms(latencies_s: list[float]) -> float:
    return float(np.percentile(latencies_s, 99) * 1e3) if latencies_s else float("nan")


class Load:
    """``concurrency`` closed-loop callers on one channel, until ``stop_at`` (time.monotonic())."""

    def __init__(self, stub: service_pb2_grpc.GRPCInferenceServiceStub, concurrency: int, stop_at: float) -> None:
        self._stub = stub
        self._request = iris_request()
        self._stop_at = stop_at
        self._lock = threading.Lock()
        self._running = concurrency
        self.finished = threading.Event()
        self.ok_latencies_s: list[float] = []
        self.refused_latencies_s: list[float] = []
        self.codes: Counter[str] = Counter()
        for _ in range(concurrency):
            self._send()

    def _send(self) -> None:
        started = time.monotonic()
        future = self._stub.ModelInfer.future(self._request, timeout=CALL_TIMEOUT_S)
        future.add_done_callback(lambda f: self._answered(f, started))

    def _answered(self, future: grpc.Future, started: float) -> None:
        now = time.monotonic()
        code = future.code()
        with self._lock:
            self.codes[code.name] += 1
            (self.ok_latencies_s if code is grpc.StatusCode.OK else self.refused_latencies_s).append(now - started)
            if now >= self._stop_at:
                self._running -= 1
                if self._running == 0:
                    self.finished.set()
                return
        self._send()


def probe(stub: service_pb2_grpc.GRPCInferenceServiceStub, stop_at: float) -> tuple[list[float], int]:
    latencies_s, failed = [], 0
    while time.monotonic() < stop_at:
        started = time.monotonic()
        try:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=PROBE_TIMEOUT_S)
            latencies_s.append(time.monotonic() - started)
        except grpc.RpcError:
            failed += 1
        time.sleep(PROBE_INTERVAL_S)
    return latencies_s, failed


def run_level(address: str, concurrency: int, seconds: float) -> str:
    with grpc.insecure_channel(address) as channel, grpc.insecure_channel(address) as probe_channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ServerLive(pb.ServerLiveRequest(), timeout=PROBE_TIMEOUT_S)
        stop_at = time.monotonic() + seconds
        load = Load(stub, concurrency, stop_at)
        probe_latencies_s, probe_failed = probe(service_pb2_grpc.GRPCInferenceServiceStub(probe_channel), stop_at)
        if not load.finished.wait(CALL_TIMEOUT_S + 5):
            raise RuntimeError(f"c={concurrency}: calls still unanswered {CALL_TIMEOUT_S + 5:.0f} s after the end")
    ok = load.codes.get("OK", 0)
    errors = sum(load.codes.values()) - ok
    codes = ", ".join(f"{name} {count}" for name, count in sorted(load.codes.items()) if name != "OK") or "none"
    return (
        f"c={concurrency:<4} goodput {ok / seconds:8.1f} infer/s  errors {errors:6d} ({codes})  "
        f"p99 ok {p99_ms(load.ok_latencies_s):7.2f} ms  p99 refused {p99_ms(load.refused_latencies_s):7.2f} ms  "
        f"ServerLive p99 {p99_ms(probe_latencies_s):7.2f} ms ({len(probe_latencies_s)} probes, {probe_failed} failed)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--concurrency", type=int_list, default=[32, 256], help="default: 32,256")
    p.add_argument("--seconds", type=float, default=8.0, help="per concurrency (default 8)")
    p.add_argument("--config", type=Path, default=None, help="a modelserve --config YAML")
    p.add_argument("--server-cpus", default="0", help='taskset list for the server ("" = no pinning)')
    p.add_argument("--client-cpus", default="1", help='taskset list for this client ("" = no pinning)')
    args = p.parse_args()
    if args.seconds * len(args.concurrency) > 120:
        raise SystemExit("keep a run under 2 minutes: lower --seconds or the number of levels")
    if args.client_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu) for cpu in args.client_cpus.split(",")})
    RESULTS.mkdir(parents=True, exist_ok=True)
    spec = modelserve_spec("iris", config=args.config)
    with running(spec, "iris", args.server_cpus, RESULTS / "grpc-overload-server.log"):
        for concurrency in args.concurrency:
            print(run_level(f"127.0.0.1:{spec.grpc_port}", concurrency, args.seconds), flush=True)


if __name__ == "__main__":
    main()
