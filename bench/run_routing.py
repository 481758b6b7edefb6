"""What traffic routing costs: iris with a split and a sticky key versus iris without a policy, in one run,
with perf_analyzer at concurrency 32, and the ratio on / off.

Method
------
* One repository (``.bench/modelserve-routing``) holds iris twice: versions 1 and 2 are the same ONNX file,
  so both arms cost the same and only the routing differs.
* ``off``: no policy. ``on``: ``routing.iris`` in a settings file: key ``x-user-id``, split 90 % -> version 1,
  10 % -> version 2, and an override header. Every request of both carries ``x-user-id: bench-user``
  (perf_analyzer ``-H``), so both servers receive the same bytes; with the policy each request is hashed
  and assigned (the header is read into the context because the policy names it).
* The two servers run one after the other, alternating (off, on, off, on: ``--rounds``), each pinned to the
  same CPU as in ``run_core.py``, perf_analyzer on the other; the report gives each round's throughput and
  p99 and the ratio of the medians. The machine is small and noisy: read the ratio, not the absolute numbers.

Usage (from the repository root, after ``bash bench/setup.sh``)::

    .venv/bin/python bench/run_routing.py [--protocols http,grpc] [--concurrency 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    Measurement,
    install_signal_handlers,
    int_list,
    modelserve_spec,
    protocol_list,
    require_perf_analyzer,
    run_pa,
    running,
)

MODEL = "iris"
HEADER = "x-user-id:bench-user"
POLICY = {
    "key": {"header": "x-user-id"},
    "split": [{"arm": "control", "target": "1", "weight": 90}, {"arm": "treatment", "target": "2", "weight": 10}],
    "override": {"header": "x-canary", "arms": {"true": "treatment"}},
}


def routing_repository() -> tuple[Path, Path]:
    """The two-version iris repository and the settings file with its policy."""
    source, repo = ROOT / "examples" / "models" / MODEL, ROOT / ".bench" / "modelserve-routing"
    if repo.exists():
        shutil.rmtree(repo)
    target = repo / MODEL
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.profile.json"))
    shutil.copytree(target / "1", target / "2")
    config = target / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { all { } }\n")
    settings = repo.parent / "modelserve-routing.yaml"
    settings.write_text(json.dumps({"routing": {MODEL: POLICY}}))
    return repo, settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocols", type=protocol_list, default=["http", "grpc"], help="default: http,grpc")
    p.add_argument("--concurrency", type=int_list, default=[32], help="default: 32")
    p.add_argument("--rounds", type=int, default=2, help="off/on pairs per protocol (default: 2)")
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    p.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows before giving up")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for perf_analyzer ('' = no pinning)")
    return p.parse_args(argv)


def routed_counts(http_port: int) -> str:
    """The server's routing counter (answers by arm and target), as its metric lines."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return f"metrics unavailable: {exc}"
    return " ".join(line for line in text.splitlines() if line.startswith("modelserve_routing_requests_total{"))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    require_perf_analyzer()
    repo, settings = routing_repository()
    header_flags = {"http": ["-H", HEADER], "grpc": ["-H", HEADER]}
    specs = {
        "off": replace(modelserve_spec(MODEL, repo, name="routing-off"), pa_flags=header_flags),
        "on": replace(modelserve_spec(MODEL, repo, name="routing-on", config=settings), pa_flags=header_flags),
    }
    out_dir = RESULTS / f"routing-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[Measurement] = []
    for round_index in range(args.rounds):
        for variant in ("off", "on"):
            spec = specs[variant]
            with running(spec, MODEL, args.server_cpus, out_dir / f"{spec.name}-{round_index}-server.log"):
                for protocol in args.protocols:
                    for concurrency in args.concurrency:
                        m = run_pa(spec, MODEL, protocol, concurrency, args, out_dir)
                        m.extra = {**(m.extra or {}), "round": str(round_index)}
                        results.append(m)
                        state = f"{m.throughput:.0f} infer/s" if m.ok and m.throughput else f"failed: {m.error}"
                        print(f"[{spec.name}] round {round_index} {protocol} c={concurrency}: {state}", flush=True)
                if variant == "on":
                    # One arm only: every request carried the same key, so the sticky path decided each one.
                    print(f"[{spec.name}] {routed_counts(spec.http_port)}", flush=True)
    lines = [
        "| protocol | c | off infer/s | on infer/s | on/off throughput | off p99 ms | on p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for protocol in args.protocols:
        for concurrency in args.concurrency:
            picked = {
                variant: [m for m in results if m.ok and m.server == specs[variant].name and m.protocol == protocol
                          and m.concurrency == concurrency]
                for variant in ("off", "on")
            }  # fmt: skip
            tput = {v: median([m.throughput or 0.0 for m in ms]) for v, ms in picked.items()}
            p99 = {v: median([m.p99_us or 0.0 for m in ms]) for v, ms in picked.items()}
            ratio = tput["on"] / tput["off"] if tput["on"] and tput["off"] else None
            summary.append({"protocol": protocol, "concurrency": concurrency, "throughput": tput, "p99_us": p99,
                            "ratio": ratio})  # fmt: skip
            lines.append(
                f"| {protocol} | {concurrency} | {tput['off'] or 0:.0f} | {tput['on'] or 0:.0f} | "
                f"{'-' if ratio is None else f'{ratio:.3f}'} | {(p99['off'] or 0) / 1000:.2f} | {(p99['on'] or 0) / 1000:.2f} |"
            )
    report = "\n".join(lines)
    (out_dir / "results.md").write_text(report + "\n")
    (out_dir / "results.json").write_text(
        json.dumps({"summary": summary, "runs": [asdict(m) for m in results]}, indent=2, default=str)
    )
    print(report)
    print(f"results in {out_dir}", file=sys.stderr)
    return 0 if all(m.ok for m in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
