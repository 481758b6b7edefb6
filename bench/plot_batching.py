"""Plot run_batching.py's results: throughput vs p99 latency per variant, one point per concurrency.

Runs with ``.bench/plot-venv/bin/python`` (matplotlib lives only there, never in the project's venv);
``run_batching.py`` calls it. Usage: ``.bench/plot-venv/bin/python bench/plot_batching.py batching.json out.png``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLE = {
    "none": ("tab:gray", "o"),
    "adaptive": ("tab:blue", "o"),
    "triton": ("tab:orange", "s"),
    "triton-pref": ("tab:red", "^"),
    "mlserver": ("tab:green", "D"),
    "iris": ("tab:purple", "v"),
}


def main(json_path: str, png_path: str) -> int:
    data = json.loads(Path(json_path).read_text())
    variants = data["variants"]
    measurements = [m for m in data["measurements"] if m["ok"]]
    protocols = sorted({m["protocol"] for m in measurements}) or ["grpc"]
    ceiling = {int(k): v for k, v in data.get("ceiling_rows_per_s", {}).items()}
    fig, axes = plt.subplots(1, len(protocols), figsize=(9.5 * len(protocols), 5.5), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        for key, variant in variants.items():
            points = sorted(
                (m["concurrency"], m["throughput"], m["p99_us"] / 1000)
                for m in measurements
                if m["server"] == key and m["protocol"] == protocol
            )
            if not points:
                continue
            color, marker = STYLE.get(key, ("black", "x"))
            ax.plot([p[1] for p in points], [p[2] for p in points], marker=marker, color=color, label=variant["label"])
            for conc, thr, p99 in points:
                ax.annotate(f"c{conc}", (thr, p99), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        if ceiling:
            size, rows = max(ceiling.items(), key=lambda kv: kv[1])
            ax.axvline(rows, color="black", linestyle="--", linewidth=1)
            ax.annotate(
                f"in-process onnxruntime ceiling\n(batch {size}): {rows:.0f} rows/s",
                (rows, 0.98),
                xycoords=("data", "axes fraction"),
                ha="right",
                va="top",
                fontsize=8,
            )
        # Log x: the servers (hundreds to a few thousand infer/s) and the in-process ceiling (tens of
        # thousands of rows/s) both stay readable.
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (inferences/s, batch 1 per request; log scale)")
        ax.set_ylabel("p99 latency (ms, log scale)")
        ax.set_title(f"digits_mlp dynamic batching, perf_analyzer {protocol}, concurrency 1-64")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.text(
        0.01,
        0.01,
        "MLServer serves the scikit-learn estimator of the same weights; modelserve serves its ONNX export.",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(png_path, dpi=120)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
