"""Dynamic batching benchmark: modelserve's batch policies vs MLServer's adaptive batching, in one run.

What is measured (perf_analyzer, batch 1 per request, concurrency 1, 8, 32, 64, gRPC by default):

* ``none``        modelserve, ``digits_mlp`` with its config as shipped (no ``dynamic_batching``)
* ``adaptive``    modelserve, ``dynamic_batching { }`` + ``batch_policy: adaptive`` (an idle instance
  takes what is queued at once)
* ``triton``      modelserve, ``dynamic_batching { max_queue_delay_microseconds: 2000 }`` +
  ``batch_policy: triton``, no preferred sizes (a batch waits up to the delay to fill)
* ``triton-pref`` the same with ``preferred_batch_size [ 8, 16, 32 ]`` (dispatch at once at those sizes)
* ``mlserver``    MLServer 1.7.1, adaptive batching (``max_batch_size`` 64, ``max_batch_time`` 0.002 s,
  ``parallel_workers: 0``) on the *scikit-learn* MLPClassifier that ``digits_mlp`` is exported from:
  MLServer has no ONNX runtime in the peer venv, so it runs the sklearn estimator of the same weights
  (checked against the ONNX file) while modelserve runs the ONNX export. MLServer declares only the
  ``predict_proba`` output (its sklearn runtime runs one forward pass per requested output; modelserve
  gets label and probabilities from one pass), and runs with ``OPENBLAS_NUM_THREADS=1``.
* ``iris``        modelserve, ``iris`` as shipped (no batching): the server's own request-rate limit
* the in-process ceiling: onnxruntime on ``digits_mlp`` called in a loop (1 intra-op thread, pinned to
  the server's CPU), rows/s at batch 1, 8, 16, 32, 64 (best of 5 windows, ``examples/build_models.py``'s
  ``us_per_row``); the ratios use the best batch size.

The modelserve variants are served from repositories written under ``.bench/batching/repos/`` (one model
each, the ONNX file hard-linked from ``examples/models``, configs written here); MLServer's from
``.bench/batching/mlserver-models/``. Servers and pinning are ``run_core.py``'s (``common.py``): server on
CPU 0, perf_analyzer on CPU 1, every wait bounded, servers always stopped. Around each perf_analyzer run
the script reads ``GET /v2/models/{m}/stats`` and reports the average executed batch size (rows per
execution from ``batch_stats``) over that run; perf_analyzer's own "Server:" counts go to results.json.
Every variant is measured ``--rounds`` (2) times, the rounds interleaving the variants so that slow drift
hits all of them alike; the table gives the median of each number over the rounds and the throughput
range. Other work on this small machine (tests, builds) moves the numbers: each perf_analyzer run also counts
the CPU time that processes other than the server, perf_analyzer and this script used meanwhile ("other
CPU %", of one CPU, steal included). A run that perf_analyzer cannot stabilise, or that others disturbed
by more than ``--max-other-cpu`` (15 %), is repeated up to ``--retries`` (2) times; the least disturbed
successful attempt is kept, and its "other CPU %" is in the table.

Outputs: ``.bench/results/<timestamp>/`` (CSVs, logs, batching.md, batching.json, batching.png), the
markdown copied to ``.bench/results/latest-batching.md`` and the plot to ``docs/bench/batching.png``.
The plot needs matplotlib in ``.bench/plot-venv`` (made by ``bench/setup.sh``; never a project dependency).

The variants and their repositories are in ``batching_variants.py``, the report (medians, markdown, plot)
in ``batching_report.py``; this file measures.

Usage (from the repository root, after ``bash bench/setup.sh``)::

    .venv/bin/python bench/run_batching.py [--protocols grpc|http,grpc] [--concurrency 1,8,32,64]
        [--variants none,adaptive,triton,triton-pref,mlserver,iris] [--interval-ms 2000] [--max-trials 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from batching_report import BatchInfo, combine, markdown, merge_batches, plot
from batching_variants import (
    DIGITS,
    EXAMPLES,
    VARIANTS,
    Variant,
    build_models_module,
    build_repo,
    shipped_max_batch_size,
    spec_for,
)
from common import (
    RESULTS,
    ROOT,
    Measurement,
    ServerSpec,
    cpu_model,
    git_revision,
    install_signal_handlers,
    int_list,
    protocol_list,
    require_perf_analyzer,
    run_pa,
    running,
)

STATS_TIMEOUT_S = 10.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def batch_counts(spec: ServerSpec, model: str) -> dict[int, int] | None:
    """Executions per batch size so far (modelserve's batch_stats), or None if unavailable."""
    url = f"http://127.0.0.1:{spec.http_port}/v2/models/{model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=STATS_TIMEOUT_S) as response:
            document = json.load(response)
        stats = document["model_stats"][0]
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def batch_delta(before: dict[int, int] | None, after: dict[int, int] | None) -> BatchInfo | None:
    if before is None or after is None:
        return None
    info = BatchInfo()
    for size, count in sorted(after.items()):
        n = count - before.get(size, 0)
        if n > 0:
            info.histogram[size] = n
            info.executions += n
            info.rows += n * size
            info.max_batch = max(info.max_batch, size)
    return info


# -- measuring -----------------------------------------------------------------------------------------


def busy_ticks() -> int:
    """CPU time spent by anything on the machine so far (all CPUs; steal included), in clock ticks."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def process_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def own_ticks() -> int:
    """This script and its waited-for children (perf_analyzer runs), in clock ticks."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return round(total * TICKS_PER_S)


@dataclass
class Attempt:
    measurement: Measurement
    batch: BatchInfo | None
    other_cpu_pct: float  # CPU used by other processes during the run, in % of one CPU


def measure_once(
    variant: Variant,
    spec: ServerSpec,
    server_pid: int,
    protocol: str,
    concurrency: int,
    args: argparse.Namespace,
    out_dir: Path,
) -> Attempt:
    before = batch_counts(spec, variant.model)
    ticks = (busy_ticks(), process_ticks(server_pid), own_ticks())
    started = time.monotonic()
    m = run_pa(spec, variant.model, protocol, concurrency, args, out_dir)
    elapsed = max(time.monotonic() - started, 1e-3)
    busy, server, own = busy_ticks() - ticks[0], process_ticks(server_pid) - ticks[1], own_ticks() - ticks[2]
    other = max(0, busy - server - own) / TICKS_PER_S / elapsed * 100
    m.extra["other_cpu_pct"] = f"{other:.1f}"
    return Attempt(m, batch_delta(before, batch_counts(spec, variant.model)), other)


def measure_variant(
    variant: Variant,
    spec: ServerSpec,
    args: argparse.Namespace,
    out_dir: Path,
    results: list[Measurement],
    batches: dict[tuple[str, str, int], list[BatchInfo]],
) -> None:
    """Every protocol and concurrency on one server. A run is repeated (up to --retries times) when
    perf_analyzer could not stabilise or other processes used more than --max-other-cpu % of a CPU;
    the least disturbed successful attempt is kept."""
    with running(spec, variant.model, args.server_cpus, out_dir / f"{spec.name}-server.log") as proc:
        for protocol in args.protocols:
            for concurrency in args.concurrency:
                attempts: list[Attempt] = []
                for attempt in range(1 + args.retries):
                    a = measure_once(variant, spec, proc.pid, protocol, concurrency, args, out_dir)
                    attempts.append(a)
                    unstable = not a.measurement.ok and "stable measurement" in a.measurement.error
                    disturbed = a.measurement.ok and a.other_cpu_pct > args.max_other_cpu
                    if not (unstable or disturbed) or attempt == args.retries:
                        break
                    why = "unstable" if unstable else f"disturbed (other processes: {a.other_cpu_pct:.0f} % CPU)"
                    print(f"  {variant.key:11} {protocol:4} c={concurrency:<3} {why}: again", flush=True)
                ok = [a for a in attempts if a.measurement.ok]
                best = min(ok, key=lambda a: a.other_cpu_pct) if ok else attempts[-1]
                m, info = best.measurement, best.batch
                m.server = variant.key  # spec.name also carries the round; the file names keep it
                m.extra["attempts"] = str(len(attempts))
                if info is not None:
                    batches.setdefault((variant.key, protocol, concurrency), []).append(info)
                results.append(m)
                if m.ok:
                    assert m.throughput is not None and m.p50_us is not None and m.p99_us is not None
                    avg = info.average if info else None
                    batch = f"  avg batch {avg:5.1f} (max {info.max_batch})" if info and avg else ""
                    print(
                        f"  {variant.key:11} {protocol:4} c={concurrency:<3} {m.throughput:9.1f} infer/s  "
                        f"p50 {m.p50_us / 1000:7.2f} ms  p99 {m.p99_us / 1000:7.2f} ms{batch}  "
                        f"other CPU {best.other_cpu_pct:.0f} %",
                        flush=True,
                    )
                else:
                    print(f"  {variant.key:11} {protocol:4} c={concurrency:<3} FAILED: {m.error}", flush=True)


def cpu_set(text: str) -> set[int]:
    """taskset's list syntax: "0", "0,2", "0-3"."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def ceiling(args: argparse.Namespace) -> dict[int, float]:
    """Rows/s of onnxruntime called in a loop on digits_mlp (1 thread), pinned like the server."""
    bm = build_models_module()
    session = bm.ort_session(EXAMPLES / DIGITS / "1" / "model.onnx")
    x, _ = bm.digits_data()
    previous = os.sched_getaffinity(0)
    rows_per_s: dict[int, float] = {}
    try:
        if args.server_cpus:
            os.sched_setaffinity(0, cpu_set(args.server_cpus))
        for size in args.ceiling_batches:
            rows_per_s[size] = 1e6 / bm.us_per_row(session, x[:size], seconds=args.ceiling_seconds)
            print(f"  in-process onnxruntime batch {size:<3} {rows_per_s[size]:9.0f} rows/s", flush=True)
    finally:
        os.sched_setaffinity(0, previous)
    return rows_per_s


# -- main ----------------------------------------------------------------------------------------------


def src_state() -> str:
    """What modelserve code the servers run: HEAD, plus a digest of uncommitted changes under src/."""
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "src"], cwd=ROOT, capture_output=True, timeout=10, check=False
        ).stdout
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not diff:
        return f"src/ as in {head}"
    return f"src/ = {head} + uncommitted changes (digest {hashlib.sha1(diff).hexdigest()[:8]})"


def variant_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in VARIANTS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(VARIANTS)}; unknown: {unknown}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--protocols", type=protocol_list, default=["grpc"], help="default: grpc")
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32, 64], help="default: 1,8,32,64")
    p.add_argument("--variants", type=variant_list, default=list(VARIANTS), help="default: all")
    p.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer measurement window")
    p.add_argument("--max-trials", type=int, default=5, help="perf_analyzer windows before giving up")
    p.add_argument("--rounds", type=int, default=2, help="times every variant is measured (median reported)")
    p.add_argument("--retries", type=int, default=2, help="reruns of an unstable or disturbed perf_analyzer run")
    p.add_argument(
        "--max-other-cpu", type=float, default=15.0, help="%% of a CPU other processes may use before a rerun"
    )
    p.add_argument("--delay-us", type=int, default=2000, help="triton policy: max_queue_delay_microseconds")
    p.add_argument("--preferred", type=int_list, default=[8, 16, 32], help="triton-pref: preferred_batch_size")
    p.add_argument("--mlserver-batch-time", type=float, default=0.002, help="MLServer max_batch_time (s)")
    p.add_argument("--ceiling-batches", type=int_list, default=[1, 8, 16, 32, 64], help="in-process batch sizes")
    p.add_argument("--ceiling-seconds", type=float, default=1.5, help="in-process timing per batch size")
    p.add_argument("--no-ceiling", action="store_true", help="skip the in-process onnxruntime ceiling")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="taskset CPU list for perf_analyzer ('' = no pinning)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    require_perf_analyzer()
    if any(size > shipped_max_batch_size() for size in args.preferred):
        raise SystemExit(f"--preferred sizes must be <= max_batch_size {shipped_max_batch_size()}")
    variants = [VARIANTS[key] for key in args.variants]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    src_before = src_state()
    raw: list[Measurement] = []
    raw_batches: dict[tuple[str, str, int], list[BatchInfo]] = {}
    # Every repository (and a first spec) before any measurement, so a missing prerequisite fails early.
    repos = {variant.key: build_repo(variant, args) for variant in variants}
    for variant in variants:
        spec_for(variant, repos[variant.key], variant.key)
    ceiling_rows = {} if args.no_ceiling else ceiling(args)
    failed: list[str] = []
    for n in range(1, args.rounds + 1):  # rounds interleave the variants, so drift hits them alike
        if args.rounds > 1:
            print(f"-- round {n}/{args.rounds}", flush=True)
        for variant in variants:
            name = variant.key if args.rounds == 1 else f"{variant.key}.r{n}"
            try:
                measure_variant(variant, spec_for(variant, repos[variant.key], name), args, out_dir, raw, raw_batches)
            except RuntimeError as exc:  # a server that never became ready: report it, measure the others
                print(f"[{name}] FAILED: {exc}", file=sys.stderr, flush=True)
                failed.append(name)
    wall = time.monotonic() - started
    grouped: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in raw:
        grouped.setdefault((m.server, m.protocol, m.concurrency), []).append(m)
    results = [combine(ms) for ms in grouped.values()]
    batches = {key: merge_batches(infos) for key, infos in raw_batches.items()}

    header = [
        f"# Dynamic batching: perf_analyzer, {DIGITS} (and iris), batch 1 per request",
        "",
        f"- run {stamp}, git {git_revision()}, {os.cpu_count()} CPUs ({cpu_model()}); wall time {wall:.0f} s; "
        f"1-min load average {load_before:.2f} before the run; {args.rounds} round(s), medians reported",
        f"- modelserve code: {src_before}"
        + ("" if src_state() == src_before else f"; WARNING: src/ changed during the run (now {src_state()})"),
        f"- perf_analyzer 2.60.0, {'/'.join(args.protocols)}, time windows of {args.interval_ms} ms, stability 50 %, "
        f"at most {args.max_trials} windows; server on CPUs '{args.server_cpus}', perf_analyzer on '{args.client_cpus}'",
        f"- modelserve runs the ONNX export of {DIGITS}; MLServer 1.7.1 runs the scikit-learn MLPClassifier of the "
        "same weights (sklearn runtime, output predict_proba only, OPENBLAS_NUM_THREADS=1, parallel_workers 0, "
        f"max_batch_size {shipped_max_batch_size()}, max_batch_time {args.mlserver_batch_time} s)",
        f"- triton: max_queue_delay_microseconds {args.delay_us}, no preferred sizes; triton-pref: preferred "
        f"{args.preferred}; max_batch_size {shipped_max_batch_size()}; avg batch = rows per execution from "
        "modelserve's batch_stats over each run, srv queue = perf_analyzer's server-side queue time "
        "(n/a: MLServer has no statistics endpoint)",
    ]
    if failed:
        header.append(f"- servers that failed to start: {', '.join(failed)} (see *-server.log)")
    report = markdown(results, raw, batches, ceiling_rows, variants, args, header)
    json_path = out_dir / "batching.json"
    json_path.write_text(
        json.dumps(
            {
                "variants": {v.key: asdict(v) for v in variants},
                "measurements": [asdict(m) for m in results],
                "rounds": [asdict(m) for m in raw],
                "batches": [
                    {"variant": k[0], "protocol": k[1], "concurrency": k[2], "average": b.average, **asdict(b)}
                    for k, b in batches.items()
                ],
                "ceiling_rows_per_s": ceiling_rows,
                "wall_s": wall,
            },
            indent=2,
        )
        + "\n"
    )
    note = "plot skipped (--no-plot)" if args.no_plot else plot(json_path, out_dir / "batching.png")
    report += f"\n{note}\n"
    (out_dir / "batching.md").write_text(report)
    (RESULTS / "latest-batching.md").write_text(report)
    print()
    print(report, end="")
    print(f"\nraw CSVs and logs: {out_dir.relative_to(ROOT)}")
    return 0 if raw and all(m.ok for m in raw) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
