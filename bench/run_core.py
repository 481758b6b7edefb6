"""Benchmark modelserve against MLServer with NVIDIA's perf_analyzer, in one run, and print the ratios.

Method
------
* Same client for both servers: perf_analyzer 2.60.0 (Triton's own load generator), fetched by
  ``bench/setup.sh`` into ``.bench/pa`` and run through ``../shared/bench-kit/pa``.
* Same model: the iris LogisticRegression from ``examples/build_models.py``. modelserve serves its ONNX
  export (``examples/models/iris``); MLServer 1.7.1 serves the same fitted estimator through its sklearn
  runtime (``.bench/mlserver-models``, written by ``bench/mlserver_repo.py``). perf_analyzer requests every
  output in the model config, so both servers return the label and the class probabilities.
* MLServer is started by ``../shared/bench-kit/mlserver_with_config.py``, which only adds Triton's
  read-only model-config endpoint that perf_analyzer needs (and strips per-output parameters from REST
  replies); MLServer runs with its fastest settings (``parallel_workers: 0``, access log off). It has no
  binary tensor extension, so over HTTP it is driven with JSON tensors; modelserve gets perf_analyzer's
  default binary tensors, which is what a Triton client would use against it.
* For each server, protocol (REST, gRPC) and concurrency (1, 8, 32), batch 1: one perf_analyzer run in
  time-windows mode (3 s windows by default, stable within 50 %, at most 6 windows). Throughput and the
  p50/p99 client latencies come from perf_analyzer's CSV (latencies there are in microseconds).
* Both servers are measured in the same run, one after the other, and the report gives ratios
  modelserve/MLServer: the machine this runs on is small and noisy, so absolute numbers drift between
  runs by more than the differences between servers; ratios taken minutes apart drift much less.
* CPU pinning: on 2 cores the server and perf_analyzer compete for the CPU and the scheduler's choices
  dominate the latency at low concurrency. The server is pinned to CPU 0 (``taskset -c 0``) and
  perf_analyzer to CPU 1 (``taskset -c 1``), so each server gets exactly one core, the same for both, and
  the client never steals it. ``--server-cpus`` / ``--client-cpus`` change this ("" disables pinning).

Every wait is bounded (server readiness, each perf_analyzer run, server shutdown), and servers are
always stopped in ``finally`` blocks: SIGTERM to the process group, then SIGKILL after a bounded wait.

Outputs land in ``.bench/results/<timestamp>/`` (raw CSVs, perf_analyzer and server logs, results.md,
results.json); the markdown table is also copied to ``.bench/results/latest.md`` and printed.

Usage (from the repository root, after ``bash bench/setup.sh``)::

    .venv/bin/python bench/run_core.py [--only both|modelserve|mlserver] [--protocols http,grpc]
        [--concurrency 1,8,32] [--model iris] [--interval-ms 3000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIT = (ROOT / ".." / "shared" / "bench-kit").resolve()
PA_ROOT = ROOT / ".bench" / "pa"
PEER_VENV = ROOT / ".bench" / "mlserver-venv"
PEER_REPO = ROOT / ".bench" / "mlserver-models"
RESULTS = ROOT / ".bench" / "results"
MODELSERVE_BIN = ROOT / ".venv" / "bin" / "modelserve"
MODELSERVE_REPO = ROOT / "examples" / "models"

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SERVERS = ("mlserver", "modelserve")  # run order; MLServer first, as the reference
LABEL = {"modelserve": "modelserve", "mlserver": "MLServer"}


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server and what perf_analyzer needs to talk to it."""

    name: str
    command: list[str]
    env: dict[str, str]
    http_port: int
    grpc_port: int
    pa_flags: dict[str, list[str]]  # protocol -> extra perf_analyzer flags


@dataclass
class Measurement:
    server: str
    protocol: str
    concurrency: int
    ok: bool
    throughput: float | None = None  # inferences per second
    p50_us: float | None = None
    p99_us: float | None = None
    error: str = ""
    csv_path: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pinned(cpus: str, command: list[str]) -> list[str]:
    """Prefix command with taskset when CPUs are given (and taskset exists)."""
    if not cpus or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", cpus, *command]


def mlserver_spec(model: str) -> ServerSpec:
    http_port, grpc_port, metrics_port = free_ports(3)
    python = PEER_VENV / "bin" / "python"
    for path, hint in (
        (python, "bash bench/setup.sh"),
        (PEER_REPO / model, ".venv/bin/python bench/mlserver_repo.py"),
    ):
        if not path.exists():
            raise SystemExit(f"missing {path}: run `{hint}` first")
    env = {
        # Ports via the environment: settings.json values would override these, so it sets none.
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
    }
    # MLServer declares input-0 as [-1, 4] with max_batch_size 0, so perf_analyzer needs the full shape.
    shape = ["--shape", "input-0:1,4"] if model == "iris" else []
    return ServerSpec(
        name="mlserver",
        command=[str(python), str(KIT / "mlserver_with_config.py"), str(PEER_REPO)],
        env=env,
        http_port=http_port,
        grpc_port=grpc_port,
        pa_flags={
            "http": [*shape, "--input-tensor-format", "json", "--output-tensor-format", "json"],
            "grpc": shape,
        },
    )


def modelserve_spec(model: str) -> ServerSpec:
    http_port, grpc_port = free_ports(2)
    if not MODELSERVE_BIN.exists():
        raise SystemExit(f"missing {MODELSERVE_BIN} (install the project, or use --only mlserver)")
    if not (MODELSERVE_REPO / model).is_dir():
        raise SystemExit(f"missing {MODELSERVE_REPO / model} (run .venv/bin/python examples/build_models.py)")
    command = [
        str(MODELSERVE_BIN), "serve", "--model-repository", str(MODELSERVE_REPO),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    return ServerSpec("modelserve", command, {}, http_port, grpc_port, {"http": [], "grpc": []})


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited within timeout."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  server {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


@contextmanager
def running(spec: ServerSpec, model: str, cpus: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start the server, wait (bounded) until it and the model are ready, and always stop it."""
    command = pinned(cpus, spec.command)
    print(f"[{spec.name}] starting: {' '.join(command)}", flush=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **spec.env}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # own process group: stop() kills it whole
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{spec.http_port}/v2"
        start = time.monotonic()
        deadline = start + READY_TIMEOUT_S
        while not (http_ok(f"{base}/health/ready") and http_ok(f"{base}/models/{model}/ready")):
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with {proc.returncode}:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{log_tail(log_path)}")
            time.sleep(0.2)
        print(f"[{spec.name}] ready in {time.monotonic() - start:.1f} s (pid {proc.pid})", flush=True)
        yield proc
    finally:
        stop(proc)
        print(f"[{spec.name}] stopped", flush=True)


def parse_csv(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no data row")
    return rows[-1]


def run_pa(
    spec: ServerSpec, model: str, protocol: str, concurrency: int, args: argparse.Namespace, out_dir: Path
) -> Measurement:
    stem = f"{spec.name}-{protocol}-c{concurrency}"
    csv_path = out_dir / f"{stem}.csv"
    port = spec.http_port if protocol == "http" else spec.grpc_port
    command = pinned(args.client_cpus, [
        str(KIT / "pa"), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol, "-b", "1",
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-mode", "time_windows", "--measurement-interval", str(args.interval_ms),
        "--stability-percentage", "50", "--max-trials", str(args.max_trials),
        "-f", str(csv_path), *spec.pa_flags[protocol],
    ])  # fmt: skip
    # A run is at most max_trials windows, plus start-up and the windows' stragglers: bound it generously.
    timeout = 60 + 2 * args.max_trials * args.interval_ms / 1000
    result = Measurement(spec.name, protocol, concurrency, ok=False, csv_path=str(csv_path))
    log_path = out_dir / f"{stem}.log"
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env={**os.environ, "PA_ROOT": str(PA_ROOT)}, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        log_path.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not csv_path.exists():
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            result.error = f"perf_analyzer exit {proc.returncode}: " + " | ".join(lines[-3:])
            return result
        row = parse_csv(csv_path)
        result.throughput = float(row["Inferences/Second"])
        result.p50_us = float(row["p50 latency"])
        result.p99_us = float(row["p99 latency"])
        result.extra = {k: v for k, v in row.items() if k and v is not None}
        result.ok = True
    except subprocess.TimeoutExpired:
        result.error = f"perf_analyzer timed out after {timeout:.0f} s"
    except (OSError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def measure_server(spec: ServerSpec, args: argparse.Namespace, out_dir: Path, results: list[Measurement]) -> None:
    with running(spec, args.model, args.server_cpus, out_dir / f"{spec.name}-server.log"):
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                m = run_pa(spec, args.model, protocol, concurrency, args, out_dir)
                results.append(m)
                if m.ok:
                    assert m.throughput is not None and m.p50_us is not None and m.p99_us is not None
                    print(
                        f"  {spec.name:10} {protocol:4} c={concurrency:<3} {m.throughput:9.1f} infer/s  "
                        f"p50 {m.p50_us / 1000:7.2f} ms  p99 {m.p99_us / 1000:7.2f} ms",
                        flush=True,
                    )
                else:
                    print(f"  {spec.name:10} {protocol:4} c={concurrency:<3} FAILED: {m.error}", flush=True)


def fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def markdown(results: list[Measurement], args: argparse.Namespace, header: Sequence[str]) -> str:
    by_key = {(m.server, m.protocol, m.concurrency): m for m in results}
    lines = [*header, ""]
    lines.append(
        "| protocol | conc | modelserve infer/s | MLServer infer/s | ratio "
        "| modelserve p50 ms | MLServer p50 ms | ratio | modelserve p99 ms | MLServer p99 ms | ratio |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    errors = []
    for protocol in args.protocols:
        for concurrency in args.concurrency:
            ms = by_key.get(("modelserve", protocol, concurrency))
            ml = by_key.get(("mlserver", protocol, concurrency))
            cells = [protocol.upper() if protocol == "http" else "gRPC", str(concurrency)]
            for attr, scale, digits in (("throughput", 1.0, 0), ("p50_us", 1000.0, 2), ("p99_us", 1000.0, 2)):
                a = getattr(ms, attr) if ms else None
                b = getattr(ml, attr) if ml else None
                cells += [fmt(a, scale, digits), fmt(b, scale, digits), ratio(a, b)]
            lines.append("| " + " | ".join(cells) + " |")
            errors += [f"- {m.server} {m.protocol} c={m.concurrency}: {m.error}" for m in (ms, ml) if m and not m.ok]
    lines += [
        "",
        "Ratios are modelserve / MLServer: throughput > 1 and latency < 1 favour modelserve.",
    ]
    if errors:
        lines += ["", "Failed measurements:", *errors]
    return "\n".join(lines) + "\n"


def git_revision() -> str:
    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD") or "no commit"
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return rev + (" (dirty)" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("expected positive integers, comma-separated")
    return values


def protocol_list(text: str) -> list[str]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or any(v not in ("http", "grpc") for v in values):
        raise argparse.ArgumentTypeError("expected http and/or grpc, comma-separated")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", choices=("both", "modelserve", "mlserver"), default="both")
    p.add_argument("--protocols", type=protocol_list, default=["http", "grpc"], help="default: http,grpc")
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32], help="default: 1,8,32")
    p.add_argument("--model", default="iris", help="model name in both repositories (default: iris)")
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    p.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows before giving up")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for perf_analyzer ('' = no pinning)")
    return p.parse_args(argv)


def terminate_gracefully(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP: unwind through the finally blocks (stopping servers) instead of dying at once."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminate_gracefully)
    if not (PA_ROOT / "wheel" / "perf_analyzer" / "bin" / "perf_analyzer").exists():
        raise SystemExit(f"missing perf_analyzer under {PA_ROOT}: run `bash bench/setup.sh` first")
    wanted = [s for s in SERVERS if args.only in ("both", s)]
    # Build every spec first, so a missing prerequisite fails before any measurement.
    specs = [mlserver_spec(args.model) if s == "mlserver" else modelserve_spec(args.model) for s in wanted]

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[Measurement] = []
    failed_servers: list[str] = []
    for spec in specs:
        try:
            measure_server(spec, args, out_dir, results)
        except RuntimeError as exc:  # a server that never became ready: report it, measure the other
            print(f"[{spec.name}] FAILED: {exc}", file=sys.stderr, flush=True)
            failed_servers.append(spec.name)

    header = [
        f"# modelserve vs MLServer: perf_analyzer, model {args.model}, batch 1",
        "",
        f"- run {stamp}, git {git_revision()}, {os.cpu_count()} CPUs ({cpu_model()})",
        f"- perf_analyzer 2.60.0, time windows of {args.interval_ms} ms, stability 50 %, "
        f"at most {args.max_trials} windows; MLServer 1.7.1 (parallel_workers 0), REST over JSON tensors",
        f"- server pinned to CPUs '{args.server_cpus}', perf_analyzer to '{args.client_cpus}'; "
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    if failed_servers:
        header.append(f"- servers that failed to start: {', '.join(failed_servers)} (see *-server.log)")
    table = markdown(results, args, header)
    (out_dir / "results.md").write_text(table)
    (out_dir / "results.json").write_text(json.dumps([asdict(m) for m in results], indent=2) + "\n")
    (RESULTS / "latest.md").write_text(table)
    print()
    print(table, end="")
    print(f"\nraw CSVs and logs: {out_dir.relative_to(ROOT)}")
    all_ok = bool(results) and all(m.ok for m in results) and not failed_servers
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
