"""Benchmark modelserve against MLServer (and Triton) with NVIDIA's perf_analyzer, in one run, and print the ratios.

Method
------
* Same client for both servers: perf_analyzer 2.60.0 (Triton's own load generator), fetched by
  ``bench/setup.sh`` into ``.bench/pa`` and run through ``bench/perf_analyzer.sh run``.
* Same model: the iris LogisticRegression from ``examples/build_models.py``. modelserve serves its ONNX
  export (``examples/models/iris``); MLServer 1.7.1 serves the same fitted estimator through its sklearn
  runtime (``.bench/mlserver-models``, written by ``bench/mlserver_repo.py``). perf_analyzer requests every
  output in the model config, so both servers return the label and the class probabilities.
* MLServer is started by ``bench/mlserver_launcher.py``, which only adds Triton's
  read-only model-config endpoint that perf_analyzer needs (and strips per-output parameters from REST
  replies); MLServer runs with its fastest settings (``parallel_workers: 0``, access log off). It has no
  binary tensor extension, so over HTTP it is driven with JSON tensors; modelserve gets perf_analyzer's
  default binary tensors, which is what a Triton client would use against it.
* Optionally (``--with-triton``) Triton 2.51 too, through PyTriton 0.7.0 (``bench/pytriton_launcher.py``, in
  ``.bench/pytriton-venv``): a Python backend whose inference function runs modelserve's very ONNX file with
  onnxruntime (same version, same session options). Its model configuration is modelserve's shape (batch
  dimension apart, ``max_batch_size`` 64), so perf_analyzer sends it the same binary requests as modelserve.
  Triton runs at its best setting here, PyTriton's default dynamic batching with no queue delay (about 7x its
  unbatched throughput; the launcher's docstring has every setting measured), while modelserve's iris has no
  dynamic batching: each server at its best, not the same scheduling. PyTriton runs at its fastest for small tensors (``PYTRITON_NO_TENSORSTORE=1``; the
  launcher's docstring has the numbers). The report then adds Triton's throughput, latencies and server CPU per
  request, and ratios modelserve/Triton. If setup could not install PyTriton, or Triton does not start, its
  columns are empty and the report says why.
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

    .venv/bin/python bench/run_core.py [--only both|modelserve|mlserver] [--with-triton] [--protocols http,grpc]
        [--concurrency 1,8,32] [--model iris] [--interval-ms 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import psutil
from common import (
    RESULTS,
    ROOT,
    Measurement,
    ServerSpec,
    cpu_model,
    fmt,
    git_revision,
    install_signal_handlers,
    int_list,
    mlserver_spec,
    modelserve_spec,
    protocol_list,
    ratio,
    require_perf_analyzer,
    run_pa,
    running,
    triton_spec,
    triton_unavailable,
)

SERVERS = ("mlserver", "modelserve")  # run order; MLServer first, as the reference (then Triton, if asked for)
LABEL = {"modelserve": "modelserve", "mlserver": "MLServer", "triton": "Triton"}
PEERS = ("mlserver", "triton")  # the servers modelserve is compared with; every other name is a modelserve variant
# The report's measures: Measurement attribute, column unit, divisor, decimals.
METRICS = (("throughput", "infer/s", 1.0, 0), ("p50_us", "p50 ms", 1000.0, 2), ("p99_us", "p99 ms", 1000.0, 2))


def batched_repository(model: str) -> Path:
    """A copy of the example ``model`` with dynamic batching on (modelserve's default policy, no delay), in
    ``.bench/modelserve-batched``: the like-for-like row against a peer that batches."""
    source, repo = ROOT / "examples" / "models" / model, ROOT / ".bench" / "modelserve-batched"
    target = repo / model
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.profile.json"))
    config = target / "config.pbtxt"
    config.write_text(config.read_text() + "dynamic_batching { }\n")
    return repo


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the server process and its children have used so far (from /proc)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def served_count(spec: ServerSpec, model: str) -> int | None:
    """The server's own count of answered inferences (Triton statistics: modelserve's, every worker's summed,
    or Triton's)."""
    url = f"http://127.0.0.1:{spec.http_port}/v2/models/{model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return sum(int(m["inference_count"]) for m in json.loads(response.read())["model_stats"])
    except (OSError, ValueError, KeyError):
        return None


def measure_server(spec: ServerSpec, args: argparse.Namespace, out_dir: Path, results: list[Measurement]) -> None:
    with running(spec, args.model, args.server_cpus, out_dir / f"{spec.name}-server.log") as proc:
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                # Server CPU per request over the whole perf_analyzer run (CPU time is steadier than
                # throughput on a noisy machine); not MLServer, which has no request count to read.
                cpu_before, count_before = server_cpu_s(proc.pid), served_count(spec, args.model)
                m = run_pa(spec, args.model, protocol, concurrency, args, out_dir)
                cpu_after, count_after = server_cpu_s(proc.pid), served_count(spec, args.model)
                if count_before is not None and count_after is not None and count_after > count_before:
                    per_request_us = (cpu_after - cpu_before) / (count_after - count_before) * 1e6
                    m.extra["server_cpu_us_per_request"] = f"{per_request_us:.0f}"
                results.append(m)
                if m.ok:
                    assert m.throughput is not None and m.p50_us is not None and m.p99_us is not None
                    print(
                        f"  {spec.name:10} {protocol:4} c={concurrency:<3} {m.throughput:9.1f} infer/s  "
                        f"p50 {m.p50_us / 1000:7.2f} ms  p99 {m.p99_us / 1000:7.2f} ms  "
                        f"server CPU/request {m.extra.get('server_cpu_us_per_request', '-')} us",
                        flush=True,
                    )
                else:
                    print(f"  {spec.name:10} {protocol:4} c={concurrency:<3} FAILED: {m.error}", flush=True)


def markdown(results: list[Measurement], args: argparse.Namespace, header: Sequence[str]) -> str:
    by_key = {(m.server, m.protocol, m.concurrency): m for m in results}
    # One row per modelserve variant (the default server, or each --workers value) against MLServer, and
    # against Triton when it was asked for: its columns follow MLServer's.
    variants = list(dict.fromkeys(m.server for m in results if m.server not in PEERS)) or ["modelserve"]
    triton = bool(getattr(args, "with_triton", False))
    columns = ["protocol", "conc", "server"]
    for _, unit, _, _ in METRICS:
        columns += [f"modelserve {unit}", f"MLServer {unit}", "ratio"]
    columns.append("modelserve server CPU µs/request")
    if triton:
        for _, unit, _, _ in METRICS:
            columns += [f"Triton {unit}", "ratio vs Triton"]
        columns.append("Triton server CPU µs/request")
    lines = [*header, ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|---|---:|---|" + "---:|" * (len(columns) - 3))
    errors = []
    for protocol in args.protocols:
        for concurrency in args.concurrency:
            ml = by_key.get(("mlserver", protocol, concurrency))
            tr = by_key.get(("triton", protocol, concurrency))
            for variant in variants:
                ms = by_key.get((variant, protocol, concurrency))
                cells = [protocol.upper() if protocol == "http" else "gRPC", str(concurrency), variant]
                for attr, _, scale, digits in METRICS:
                    a = getattr(ms, attr) if ms else None
                    b = getattr(ml, attr) if ml else None
                    cells += [fmt(a, scale, digits), fmt(b, scale, digits), ratio(a, b)]
                cells.append(ms.extra.get("server_cpu_us_per_request", "-") if ms else "-")
                if triton:
                    for attr, _, scale, digits in METRICS:
                        a = getattr(ms, attr) if ms else None
                        b = getattr(tr, attr) if tr else None
                        cells += [fmt(b, scale, digits), ratio(a, b)]
                    cells.append(tr.extra.get("server_cpu_us_per_request", "-") if tr else "-")
                lines.append("| " + " | ".join(cells) + " |")
                errors += [f"- {m.server} {m.protocol} c={m.concurrency}: {m.error}" for m in (ms,) if m and not m.ok]
            errors += [f"- {m.server} {m.protocol} c={m.concurrency}: {m.error}" for m in (ml, tr) if m and not m.ok]
    lines += [
        "",
        "Ratios are modelserve / MLServer"
        + (" and modelserve / Triton" if triton else "")
        + ": throughput > 1 and latency < 1 favour modelserve.",
    ]
    if len(variants) > 1:
        # Scaling: each modelserve variant's throughput against the first (e.g. --workers default,auto).
        lines += ["", f"Scaling against {variants[0]} (infer/s ratio, same run):", ""]
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                base = by_key.get((variants[0], protocol, concurrency))
                parts = []
                for variant in variants[1:]:
                    other = by_key.get((variant, protocol, concurrency))
                    a = other.throughput if other and other.ok else None
                    b = base.throughput if base and base.ok else None
                    parts.append(f"{variant} {ratio(a, b)}")
                label = protocol.upper() if protocol == "http" else "gRPC"
                lines.append(f"- {label} c={concurrency}: " + ", ".join(parts))
    if errors:
        lines += ["", "Failed measurements:", *errors]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", choices=("both", "modelserve", "mlserver"), default="both")
    p.add_argument(
        "--with-triton",
        action="store_true",
        help="also measure Triton through PyTriton (bench/pytriton_launcher.py), after MLServer",
    )
    p.add_argument("--protocols", type=protocol_list, default=["http", "grpc"], help="default: http,grpc")
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32], help="default: 1,8,32")
    p.add_argument("--model", default="iris", help="model name in both repositories (default: iris)")
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    p.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows before giving up")
    p.add_argument(
        "--workers",
        type=lambda text: [None if w == "default" else w for w in text.split(",")],
        default=[None],
        help="modelserve --workers values to run, one server each, e.g. default,2 (default: default)",
    )
    p.add_argument(
        "--batched",
        action="store_true",
        help="also run each --workers variant with dynamic batching on (a copy of the model's config)",
    )
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for perf_analyzer ('' = no pinning)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    require_perf_analyzer()
    wanted = [s for s in SERVERS if args.only in ("both", s)]
    # Build every spec first, so a missing prerequisite fails before any measurement.
    specs = [mlserver_spec(args.model) for s in wanted if s == "mlserver"]
    # Triton is optional: when setup could not install it (or the ONNX file is missing), the others still run
    # and the report says why Triton's columns are empty.
    triton_missing = triton_unavailable(args.model) if args.with_triton else None
    if args.with_triton and triton_missing is None:
        specs.append(triton_spec(args.model))
    for workers in args.workers if "modelserve" in wanted else []:
        name = "modelserve" if workers is None else f"modelserve-workers-{workers}"
        specs.append(modelserve_spec(args.model, name=name, workers=workers))
    for workers in args.workers if "modelserve" in wanted and args.batched else []:
        name = "modelserve-batched" if workers is None else f"modelserve-batched-workers-{workers}"
        specs.append(modelserve_spec(args.model, batched_repository(args.model), name=name, workers=workers))

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[Measurement] = []
    failed_servers: list[str] = []
    if triton_missing is not None:
        print(f"[triton] not measured: {triton_missing}", file=sys.stderr, flush=True)
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                error = f"Triton unavailable: {triton_missing}"
                results.append(Measurement("triton", protocol, concurrency, ok=False, error=error))
    for spec in specs:
        try:
            measure_server(spec, args, out_dir, results)
        except RuntimeError as exc:  # a server that never became ready: report it, measure the other
            print(f"[{spec.name}] FAILED: {exc}", file=sys.stderr, flush=True)
            failed_servers.append(spec.name)

    peers = "MLServer and Triton (PyTriton)" if args.with_triton else "MLServer"
    header = [
        f"# modelserve vs {peers}: perf_analyzer, model {args.model}, batch 1",
        "",
        f"- run {stamp}, git {git_revision()}, {os.cpu_count()} CPUs ({cpu_model()})",
        f"- perf_analyzer 2.60.0, time windows of {args.interval_ms} ms, stability 50 %, "
        f"at most {args.max_trials} windows; MLServer 1.7.1 (parallel_workers 0), REST over JSON tensors",
        *(
            [
                "- Triton 2.51.0 through PyTriton 0.7.0: Python backend running modelserve's ONNX file with "
                "onnxruntime, max_batch_size 64, dynamic batching with no queue delay (PyTriton's default, its best "
                "here), PYTRITON_NO_TENSORSTORE=1, REST over binary tensors as for modelserve"
            ]
            if args.with_triton and triton_missing is None
            else []
        ),
        f"- server pinned to CPUs '{args.server_cpus}', perf_analyzer to '{args.client_cpus}'; "
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    if triton_missing is not None:
        header.append(f"- Triton not measured: {triton_missing}")
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
