"""The batching benchmark's report: rounds combined into medians, batch-size histograms merged, the
markdown table and the PNG (drawn by ``plot_batching.py`` in the plot venv)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batching_variants import MODELSERVE_BATCHED, Variant
from common import (
    ROOT,
    Measurement,
    fmt,
    ratio,
)

PLOT_PYTHON = ROOT / ".bench" / "plot-venv" / "bin" / "python"
PLOT_SCRIPT = Path(__file__).resolve().parent / "plot_batching.py"
DOCS_PLOT = ROOT / "docs" / "bench" / "batching.png"
PLOT_TIMEOUT_S = 120.0


@dataclass
class BatchInfo:
    """Executions in one perf_analyzer run, from the server's statistics (before/after difference)."""

    executions: int = 0
    rows: int = 0
    max_batch: int = 0
    histogram: dict[int, int] = field(default_factory=dict)  # batch size -> executions

    @property
    def average(self) -> float | None:
        return self.rows / self.executions if self.executions else None


# -- report --------------------------------------------------------------------------------------------


def best_batched(
    by_key: dict[tuple[str, str, int], Measurement], protocol: str, concurrency: int
) -> Measurement | None:
    found = [by_key.get((key, protocol, concurrency)) for key in MODELSERVE_BATCHED]
    ok = [m for m in found if m is not None and m.ok and m.throughput is not None]
    return max(ok, key=lambda m: m.throughput or 0.0, default=None)


def combine(rounds: list[Measurement]) -> Measurement:
    """One measurement from the rounds of one (variant, protocol, concurrency): the median of each of
    throughput, p50 and p99 over the successful rounds; their throughput range goes to extra."""
    ok = [m for m in rounds if m.ok]
    if not ok:
        return rounds[-1]

    def median(values: list[float | None]) -> float:
        return float(statistics.median(v for v in values if v is not None))

    extra = dict(ok[0].extra)
    throughputs = [m.throughput for m in ok if m.throughput is not None]
    extra["rounds"] = str(len(ok))
    extra["throughput_min"], extra["throughput_max"] = f"{min(throughputs):.1f}", f"{max(throughputs):.1f}"
    queues = [float(m.extra["Server Queue"]) for m in ok if "Server Queue" in m.extra]
    if queues:
        extra["Server Queue"] = f"{statistics.median(queues):.0f}"
    extra["other_cpu_pct"] = f"{max(float(m.extra.get('other_cpu_pct', 0)) for m in ok):.1f}"
    return dataclasses.replace(
        ok[0],
        throughput=median([m.throughput for m in ok]),
        p50_us=median([m.p50_us for m in ok]),
        p99_us=median([m.p99_us for m in ok]),
        csv_path=" ".join(m.csv_path for m in ok),
        extra=extra,
    )


def merge_batches(infos: list[BatchInfo]) -> BatchInfo:
    total = BatchInfo()
    for info in infos:
        total.executions += info.executions
        total.rows += info.rows
        total.max_batch = max(total.max_batch, info.max_batch)
        for size, n in info.histogram.items():
            total.histogram[size] = total.histogram.get(size, 0) + n
    return total


def throughput_range(m: Measurement | None) -> str:
    if not m or "throughput_min" not in m.extra:
        return "-"
    return f"{float(m.extra['throughput_min']):.0f}-{float(m.extra['throughput_max']):.0f}"


def server_queue_ms(m: Measurement | None) -> str:
    """perf_analyzer's server-side average queue time (from the server's statistics), in ms."""
    try:
        return f"{float(m.extra['Server Queue']) / 1000:.2f}" if m and m.ok else "-"
    except (KeyError, ValueError):
        return "-"


def markdown(
    results: list[Measurement],
    raw: list[Measurement],
    batches: dict[tuple[str, str, int], BatchInfo],
    ceiling_rows: dict[int, float],
    variants: list[Variant],
    args: argparse.Namespace,
    header: Sequence[str],
) -> str:
    by_key = {(m.server, m.protocol, m.concurrency): m for m in results}
    lines = [
        *header,
        "",
        "| variant | protocol | conc | infer/s | (range) | p50 ms | p99 ms | avg batch (max) | srv queue ms "
        "| other CPU % |",
    ]
    lines.append("|---|---|---:|---:|---|---:|---:|---|---:|---:|")
    for variant in variants:
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                m = by_key.get((variant.key, protocol, concurrency))
                info = batches.get((variant.key, protocol, concurrency))
                avg = info.average if info else None
                batch = f"{avg:.1f} ({info.max_batch})" if info and avg else "n/a"
                cells = [
                    f"{variant.key}: {variant.label}",
                    protocol,
                    str(concurrency),
                    fmt(m.throughput if m else None, 1, 0),
                    throughput_range(m),
                    fmt(m.p50_us if m else None, 1000),
                    fmt(m.p99_us if m else None, 1000),
                    batch,
                    server_queue_ms(m) if variant.server == "modelserve" else "n/a",
                    m.extra.get("other_cpu_pct", "-") if m else "-",
                ]
                lines.append("| " + " | ".join(cells) + " |")
    best_size, best_rows = max(ceiling_rows.items(), key=lambda kv: kv[1], default=(0, 0.0))
    if ceiling_rows:
        sizes = ", ".join(f"b{size} {rows:.0f}" for size, rows in ceiling_rows.items())
        lines += [
            "",
            f"In-process ceiling (onnxruntime, 1 thread, rows/s): {sizes}; best b{best_size} {best_rows:.0f}.",
        ]
    lines += [
        "",
        "Ratios, modelserve batched = the best of adaptive / triton / triton-pref at that concurrency:",
        "",
        "| protocol | conc | best policy | ms-batched / MLServer-batched | ms-batched digits / ms iris "
        "| ms-batched / in-process ceiling |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for protocol in args.protocols:
        for concurrency in args.concurrency:
            best = best_batched(by_key, protocol, concurrency)
            thr = best.throughput if best else None
            ml = by_key.get(("mlserver", protocol, concurrency))
            iris = by_key.get(("iris", protocol, concurrency))
            cells = [
                protocol,
                str(concurrency),
                best.server if best else "-",
                ratio(thr, ml.throughput if ml else None),
                ratio(thr, iris.throughput if iris else None),
                ratio(thr, best_rows or None),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Concurrency 1, p50 latency vs no batching (adaptive target: within 10 %):"]
    for protocol in args.protocols:
        base = by_key.get(("none", protocol, 1))
        for key in MODELSERVE_BATCHED:
            m = by_key.get((key, protocol, 1))
            if not (m and m.ok and base and base.ok and m.p50_us and base.p50_us):
                continue
            r = m.p50_us / base.p50_us
            verdict = (" PASS" if r <= 1.10 else " FAIL") if key == "adaptive" else ""
            lines.append(
                f"- {protocol} {key}: p50 {m.p50_us / 1000:.3f} ms vs {base.p50_us / 1000:.3f} ms = {r:.2f}{verdict}"
            )
    errors = [f"- {m.server} {m.protocol} c={m.concurrency}: {m.error}" for m in raw if not m.ok]
    if errors:
        lines += ["", "Failed measurements:", *errors]
    return "\n".join(lines) + "\n"


def plot(json_path: Path, png_path: Path) -> str:
    """Render the plot with the plot venv's matplotlib; returns a note for the report."""
    if not PLOT_PYTHON.exists():
        return f"plot skipped: {PLOT_PYTHON} missing (run `bash bench/setup.sh`)"
    try:
        proc = subprocess.run(
            [str(PLOT_PYTHON), str(PLOT_SCRIPT), str(json_path), str(png_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=PLOT_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"plot failed: timed out after {PLOT_TIMEOUT_S:.0f} s"
    if proc.returncode != 0 or not png_path.exists():
        return f"plot failed: {(proc.stdout + proc.stderr).strip()[-500:]}"
    DOCS_PLOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png_path, DOCS_PLOT)
    return f"plot: {png_path.relative_to(ROOT)} (copied to {DOCS_PLOT.relative_to(ROOT)})"
