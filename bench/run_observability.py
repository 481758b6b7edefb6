"""What observability costs: iris throughput with metrics scraped + 1 % prediction log + drift on, vs all off.

Same run, same client (perf_analyzer), server pinned to one CPU and perf_analyzer to the other. The "on"
server logs 1 % of requests to JSONL files, compares every request's inputs with iris' reference profile
(drift windows of 1000 rows) and is scraped once a second on /metrics and /v2/dashboard/summary (what a
Prometheus and an open dashboard do). "off" turns the log and drift off and nobody scrapes (the statistics
that feed /metrics are always kept: they are Triton's statistics extension). Rounds alternate off/on so
slow drift of the machine hits both alike; the report gives medians and the on/off ratio, and MLServer
(its metrics on, as it ships) in the same run for scale.

Usage: ``make bench-observability`` or ``.venv/bin/python bench/run_observability.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    ROOT,
    Measurement,
    ServerSpec,
    cpu_model,
    git_revision,
    install_signal_handlers,
    int_list,
    mlserver_spec,
    modelserve_spec,
    protocol_list,
    require_perf_analyzer,
    run_pa,
    running,
)

OFF = "drift:\n  enabled: false\nprediction_log:\n  enabled: false\n"
ON = "drift:\n  enabled: true\n  window_rows: 1000\nprediction_log:\n  enabled: true\n  sample_rate: 0.01\n  directory: {logs}\n"


class Scraper:
    """GETs /metrics and the dashboard summary once a second while a measurement runs."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.scrapes = 0

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for path in ("/metrics", "/v2/dashboard/summary"):
                try:
                    with urllib.request.urlopen(self._base + path, timeout=5) as response:
                        response.read()
                    self.scrapes += 1
                except OSError:
                    pass

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def requests_served(base_url: str) -> int:
    """Successful iris requests so far, from the statistics extension (0 where a server has none)."""
    try:
        with urllib.request.urlopen(f"{base_url}/v2/models/iris/stats", timeout=5) as response:
            stats = json.load(response)["model_stats"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def measure(spec: ServerSpec, label: str, args: argparse.Namespace, out_dir: Path, scrape: bool) -> list[Measurement]:
    """Throughput and latency from perf_analyzer; also the server's CPU time per request over the whole run
    (less sensitive than throughput to other tenants of the machine: their time is not charged to us)."""
    out = []
    base = f"http://127.0.0.1:{spec.http_port}"
    with running(spec, "iris", args.server_cpus, out_dir / f"{label}-server.log") as proc:
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                spec_named = ServerSpec(label, spec.command, spec.env, spec.http_port, spec.grpc_port, spec.pa_flags)
                cpu_before, served_before = cpu_seconds(proc.pid), requests_served(base)
                if scrape:
                    with Scraper(base):
                        m = run_pa(spec_named, "iris", protocol, concurrency, args, out_dir)
                else:
                    m = run_pa(spec_named, "iris", protocol, concurrency, args, out_dir)
                served = requests_served(base) - served_before
                if served > 0:
                    m.extra["cpu_us_per_request"] = f"{(cpu_seconds(proc.pid) - cpu_before) / served * 1e6:.1f}"
                shown = (
                    f"{m.throughput:9.1f} infer/s p99 {m.p99_us / 1000:6.2f} ms "
                    f"CPU {m.extra.get('cpu_us_per_request', '-')} us/request"
                    if m.ok and m.p99_us
                    else m.error
                )
                print(f"  {label:16} {protocol:4} c={concurrency:<3} {shown}", flush=True)
                out.append(m)
    return out


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cpu(prefix: str, protocol: str, concurrency: int, results: list[Measurement] | None = None) -> float | None:
    return median(
        [
            float(m.extra["cpu_us_per_request"])
            for m in (results or [])
            if m.ok
            and "cpu_us_per_request" in m.extra
            and m.server.startswith(prefix)
            and m.protocol == protocol
            and m.concurrency == concurrency
        ]
    )


def report(results: list[Measurement], args: argparse.Namespace, header: list[str]) -> str:
    lines = [*header, "", "| protocol | conc | all off infer/s | all on infer/s | on/off | off p99 ms | on p99 ms "
             "| off CPU us/req | on CPU us/req | CPU on/off | MLServer infer/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for protocol in args.protocols:
        for concurrency in args.concurrency:

            def pick(prefix: str, attr: str, protocol: str = protocol, concurrency: int = concurrency) -> float | None:
                return median(
                    [
                        getattr(m, attr)
                        for m in results
                        if m.ok
                        and m.server.startswith(prefix)
                        and m.protocol == protocol
                        and m.concurrency == concurrency
                    ]
                )

            off, on, peer = pick("off", "throughput"), pick("on", "throughput"), pick("mlserver", "throughput")
            off_cpu, on_cpu = cpu("off", protocol, concurrency, results), cpu("on", protocol, concurrency, results)
            off_p99, on_p99 = pick("off", "p99_us"), pick("on", "p99_us")
            cells = [
                "REST" if protocol == "http" else "gRPC",
                str(concurrency),
                f"{off:.0f}" if off else "-",
                f"{on:.0f}" if on else "-",
                f"{on / off:.3f}" if on and off else "-",
                f"{off_p99 / 1000:.2f}" if off_p99 else "-",
                f"{on_p99 / 1000:.2f}" if on_p99 else "-",
                f"{off_cpu:.0f}" if off_cpu else "-",
                f"{on_cpu:.0f}" if on_cpu else "-",
                f"{on_cpu / off_cpu:.3f}" if on_cpu and off_cpu else "-",
                f"{peer:.0f}" if peer else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Throughput on/off < 1 (or CPU on/off > 1) is the cost of observability (target: throughput > 0.95 at c=32).",
        "Medians over rounds. CPU us/request: the server's user+system CPU over a whole perf_analyzer run divided",
        "by the requests it served in it.",
    ]
    failed = [f"- {m.server} {m.protocol} c={m.concurrency}: {m.error}" for m in results if not m.ok]
    if failed:
        lines += ["", "Failed measurements:", *failed]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="off/on pairs (default 3)")
    p.add_argument("--protocols", type=protocol_list, default=["grpc", "http"], help="default: grpc,http")
    p.add_argument("--concurrency", type=int_list, default=[32], help="default: 32")
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    p.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows before giving up")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for perf_analyzer ('' = no pinning)")
    p.add_argument("--no-mlserver", action="store_true", help="skip the MLServer reference row")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    require_perf_analyzer()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / f"observability-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory() as scratch:
        off_config, on_config = Path(scratch) / "off.yaml", Path(scratch) / "on.yaml"
        off_config.write_text(OFF)
        on_config.write_text(ON.format(logs=Path(scratch) / "logs"))
        for round_index in range(args.rounds):
            for label, config, scrape in (("off", off_config, False), ("on", on_config, True)):
                spec = modelserve_spec("iris", config=config)
                results += measure(spec, f"{label}-r{round_index + 1}", args, out_dir, scrape)
        if not args.no_mlserver:
            results += measure(mlserver_spec("iris"), "mlserver", args, out_dir, scrape=False)
        logged = sum(1 for _ in (Path(scratch) / "logs").rglob("*.jsonl"))
    header = [
        "# Observability overhead: iris, batch 1, perf_analyzer",
        "",
        f"- run {stamp}, git {git_revision()}, {os.cpu_count()} CPUs ({cpu_model()}), {args.rounds} off/on rounds",
        f"- on = 1 % prediction log (JSONL, {logged} file(s) written) + drift (window 1000 rows) + /metrics and "
        "dashboard summary scraped every 1 s; off = log and drift off, no scraping",
        f"- server pinned to CPUs '{args.server_cpus}', perf_analyzer to '{args.client_cpus}'; "
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    table = report(results, args, header)
    (out_dir / "results.md").write_text(table)
    (out_dir / "results.json").write_text(json.dumps([asdict(m) for m in results], indent=2) + "\n")
    print()
    print(table, end="")
    print(f"\nraw CSVs and logs: {out_dir.relative_to(ROOT)}")
    return 0 if results and all(m.ok for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
