"""Shared parts of the perf_analyzer benchmarks (``run_core.py``, ``run_batching.py``).

Paths of the benchmark tools (``perf_analyzer.sh``, ``mlserver_launcher.py``, ``pytriton_launcher.py``, in this
folder, and what
``setup.sh`` installs under ``.bench/``), starting and always stopping a server (bounded waits, own process group, CPU
pinning with ``taskset``), one perf_analyzer run parsed into a :class:`Measurement`, and small helpers
for the reports. Both scripts run from the repository root with the project's venv and import this file
as ``common`` (their own folder is first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# perf_analyzer is started through this script, which supplies the newer glibc it needs (see its header).
PERF_ANALYZER = ROOT / "bench" / "perf_analyzer.sh"
# MLServer plus the model-config endpoint perf_analyzer reads before sending load (see its docstring).
MLSERVER_LAUNCHER = ROOT / "bench" / "mlserver_launcher.py"
PA_ROOT = ROOT / ".bench" / "pa"
PEER_VENV = ROOT / ".bench" / "mlserver-venv"
PEER_REPO = ROOT / ".bench" / "mlserver-models"
# Triton through PyTriton, the optional second peer (run_core.py --with-triton); setup.sh may fail to install it
# and then writes its reason into PYTRITON_UNAVAILABLE.
PYTRITON_LAUNCHER = ROOT / "bench" / "pytriton_launcher.py"
PYTRITON_VENV = ROOT / ".bench" / "pytriton-venv"
PYTRITON_UNAVAILABLE = ROOT / ".bench" / "pytriton-unavailable"
RESULTS = ROOT / ".bench" / "results"
MODELSERVE_BIN = ROOT / ".venv" / "bin" / "modelserve"
MODELSERVE_REPO = ROOT / "examples" / "models"

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# perf_analyzer --shape for MLServer, which declares input-0 as [-1, n] and max_batch_size 0.
PEER_SHAPES = {"iris": "input-0:1,4", "digits_mlp": "input-0:1,64"}


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server and what perf_analyzer needs to talk to it."""

    name: str
    command: list[str]
    env: dict[str, str]
    http_port: int
    grpc_port: int
    pa_flags: dict[str, list[str]]  # protocol -> extra perf_analyzer flags
    health_port: int | None = None  # modelserve --health-port: the probes' own listener


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


def mlserver_spec(model: str, repo: Path = PEER_REPO, name: str = "mlserver", shape: str | None = None) -> ServerSpec:
    """MLServer (through bench/mlserver_launcher.py) on repo; shape: perf_analyzer's --shape for the input."""
    http_port, grpc_port, metrics_port = free_ports(3)
    python = PEER_VENV / "bin" / "python"
    for path, hint in (
        (python, "bash bench/setup.sh"),
        (repo / model, ".venv/bin/python bench/mlserver_repo.py"),
    ):
        if not path.exists():
            raise SystemExit(f"missing {path}: run `{hint}` first")
    env = {
        # Ports via the environment: settings.json values would override these, so it sets none.
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
    }
    # MLServer declares input-0 as [-1, n] with max_batch_size 0, so perf_analyzer needs the full shape.
    shape = shape or PEER_SHAPES.get(model)
    shape_flags = ["--shape", shape] if shape else []
    return ServerSpec(
        name=name,
        command=[str(python), str(MLSERVER_LAUNCHER), str(repo)],
        env=env,
        http_port=http_port,
        grpc_port=grpc_port,
        pa_flags={
            "http": [*shape_flags, "--input-tensor-format", "json", "--output-tensor-format", "json"],
            "grpc": shape_flags,
        },
    )


def modelserve_spec(
    model: str,
    repo: Path = MODELSERVE_REPO,
    name: str = "modelserve",
    config: Path | None = None,
    workers: str | None = None,
    health_port: bool = False,
) -> ServerSpec:
    """modelserve serving repo (which must hold model); config: an optional --config YAML; workers: its
    --workers (N or auto; None: the default, one process)."""
    http_port, grpc_port, probe_port = free_ports(3)
    if not MODELSERVE_BIN.exists():
        raise SystemExit(f"missing {MODELSERVE_BIN} (install the project, or use --only mlserver)")
    if not (repo / model).is_dir():
        raise SystemExit(f"missing {repo / model} (run .venv/bin/python examples/build_models.py)")
    command = [
        str(MODELSERVE_BIN), "serve", "--model-repository", str(repo),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        *(["--config", str(config)] if config is not None else []),
        *(["--workers", workers] if workers is not None else []),
        *(["--health-port", str(probe_port)] if health_port else []),
    ]  # fmt: skip
    return ServerSpec(
        name, command, {}, http_port, grpc_port, {"http": [], "grpc": []}, probe_port if health_port else None
    )


def triton_unavailable(model: str, repo: Path = MODELSERVE_REPO) -> str | None:
    """Why Triton (PyTriton) cannot be benchmarked here, or None when its prerequisites are in place."""
    onnx = repo / model / "1" / "model.onnx"
    if not (PYTRITON_VENV / "bin" / "python").exists():
        try:
            reason = PYTRITON_UNAVAILABLE.read_text().strip()
        except OSError:
            reason = ""
        if reason:
            return f"setup could not install it: {reason}"
        return f"missing {PYTRITON_VENV.relative_to(ROOT)} (run `bash bench/setup.sh`)"
    if not onnx.is_file():
        return f"missing {onnx.relative_to(ROOT)} (run .venv/bin/python examples/build_models.py)"
    return None


def triton_spec(model: str, repo: Path = MODELSERVE_REPO, name: str = "triton") -> ServerSpec:
    """Triton's server through PyTriton (bench/pytriton_launcher.py), running modelserve's ONNX file for model
    with onnxruntime in a Python backend. Check :func:`triton_unavailable` first."""
    http_port, grpc_port, metrics_port = free_ports(3)
    command = [
        str(PYTRITON_VENV / "bin" / "python"), str(PYTRITON_LAUNCHER), str(repo / model / "1" / "model.onnx"),
        "--model-name", model,
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    # Declared like modelserve's config (batch dimension apart, max_batch_size 64): perf_analyzer sends [1, n]
    # without --shape, and binary tensors over HTTP, exactly as to modelserve.
    return ServerSpec(name, command, {}, http_port, grpc_port, {"http": [], "grpc": []})


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


def server_counts(pa_stdout: str) -> dict[str, str]:
    """perf_analyzer's "Server:" section (present when the server reports statistics): the counts it
    saw during the measured windows, e.g. {"server_inference_count": "22615", ...}."""
    counts = {}
    for key in ("Inference count", "Execution count", "Successful request count"):
        match = re.search(rf"^\s+{key}: (\d+)\s*$", pa_stdout, re.MULTILINE)
        if match:
            counts["server_" + key.lower().replace(" ", "_")] = match.group(1)
    return counts


def run_pa(
    spec: ServerSpec, model: str, protocol: str, concurrency: int, args: argparse.Namespace, out_dir: Path
) -> Measurement:
    stem = f"{spec.name}-{protocol}-c{concurrency}"
    csv_path = out_dir / f"{stem}.csv"
    port = spec.http_port if protocol == "http" else spec.grpc_port
    command = pinned(args.client_cpus, [
        "bash", str(PERF_ANALYZER), "run",
        "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol, "-b", "1",
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
        result.extra.update(server_counts(proc.stdout))
        result.ok = True
    except subprocess.TimeoutExpired:
        result.error = f"perf_analyzer timed out after {timeout:.0f} s"
    except (OSError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


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


def terminate_gracefully(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP: unwind through the finally blocks (stopping servers) instead of dying at once."""
    raise SystemExit(128 + signum)


def require_perf_analyzer() -> None:
    if not (PA_ROOT / "wheel" / "perf_analyzer" / "bin" / "perf_analyzer").exists():
        raise SystemExit(f"missing perf_analyzer under {PA_ROOT}: run `bash bench/setup.sh` first")


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminate_gracefully)
