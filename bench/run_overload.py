"""Overload: goodput and rejections at 1x, 8x and 32x capacity, REST and gRPC, modelserve vs MLServer 1.7.1.

What it shows (issue 11, "Overload, REST and gRPC"): whether a server keeps serving at capacity when far
more clients than it can serve keep asking, and how fast and cheaply it turns the excess away.

Method
------
* Both servers serve iris from the same examples (modelserve ``examples/models/iris``, MLServer the same
  fitted estimator from ``.bench/mlserver-models``, as ``run_core.py``), one server at a time, restarted
  for each transport (so RSS, metrics and "fresh" are per transport), pinned to ``--server-cpus``
  (default CPU 0) and started/stopped by ``bench/common.py``.
* Same request for both: one iris row, shape [1, 4] FP32, asking for both outputs by each server's names
  (label + probabilities); REST as a JSON tensor (MLServer has no binary tensors), gRPC as
  raw_input_contents. A dry run must answer 200/OK before any load.
* The load generator is ``tests/load_generator.py`` (shared with the short version in ``make test``): raw
  asyncio protocols on uvloop over keep-alive HTTP/1.1 with a prebuilt request, and grpc.aio with raw
  bytes over one channel (its own connection) per 64 callers. It runs in ``--client-procs`` processes
  (default 2; storm callers split between them) plus one each for the light client, the probe and the
  half load, all pinned to ``--client-cpus`` (default CPU 1). Closed loop: each caller sends again the
  moment it is answered or refused, with no back-off: the worst client population a server meets.
* For each server and transport:
  1. **1x** (capacity): ``--concurrency`` (32) closed-loop callers, ``--warmup`` (2 s) then ``--seconds``
     (8 s) counted. Its goodput is the capacity every other row is compared with.
  2. **fresh half load**: paced at half that goodput (up to 256 in flight) for ``--recovery-seconds``:
     the p99 a fresh server gives at half capacity.
  3. **8x** and **32x** (256 and 1,024 callers), same timing.
  4. **recovery**: the moment 32x stops (its calls abandoned), the same half load starts; its p99 counted
     from 5 s after the drop (the issue's "within 5 s of the load dropping") for ``--recovery-seconds``,
     against the fresh one, says whether the server has recovered by then.
  Beside each storm (1x, 8x, 32x) a **light client** sends one request every 10 ms on its own connection
  (its own process): its admitted p99 against its p99 at 1x, and its rejections' p99; and a **liveness
  probe** (REST ``GET /v2/health/live``, gRPC ``ServerLive``) every 50 ms on its own connection: whether
  health checks starve behind inference on the same transport.
* Per row: goodput (successful infer/s) and its % of 1x; rejections/s (REST 503/429, gRPC
  UNAVAILABLE/RESOURCE_EXHAUSTED) and whether every one carried ``Retry-After`` /
  ``grpc-retry-pushback-ms``; other errors and timeouts (no answer within ``--timeout`` s) apart;
  p50/p99 of admitted requests and of rejections as the client saw them; the server's peak RSS (psutil,
  the process and its children, sampled every 0.2 s); the server's own cost per rejection, from the
  histogram ``modelserve_rejection_duration_seconds`` on ``/metrics`` when the server exports it (mean and
  p99 interpolated in its buckets; absent: "-"); and the load generator's CPU use.
* Is the generator the bottleneck? Before the servers, each transport's generator runs at the largest
  concurrency against a stub that answers every request with a canned reply (``--serve-stub``, on the
  server CPU): its answers/s are printed as the generator's ceiling (a floor of it: the stub may be the
  limit), and each row gives the generator's CPU use; a row whose answers/s come near the ceiling, or
  whose generator CPU is near 100 %, is client-bound and says so.

perf_analyzer is not used for the load: it stops at the first failed request, and refusals are what
this measures. Every wait is bounded (readiness, connecting, each phase, the workers' results, shutdown),
and servers are always stopped in ``finally`` blocks.

Layout, top to bottom: the generator's worker processes, watching the server, one phase, the rows, one
server and transport, the ceiling's stub server, the report, main. It runs past 800 lines; the report
(markdown, targets, CSV) is the part to move out first when it grows.

Outputs: ``.bench/results/overload-<timestamp>/`` (results.md, results.json, results.csv, server logs);
the markdown is also copied to ``.bench/results/latest-overload.md`` and printed.

Usage (from the repository root, after ``bash bench/setup.sh``; ``make bench-overload`` does both)::

    .venv/bin/python bench/run_overload.py [--only both|modelserve|mlserver] [--protocols http,grpc]
        [--concurrency 32] [--multipliers 1,8,32] [--seconds 8] [--client-procs 2] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import grpc
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the shared generator: tests/load_generator.py

from common import (
    RESULTS,
    ROOT,
    ServerSpec,
    cpu_model,
    free_ports,
    git_revision,
    install_signal_handlers,
    int_list,
    mlserver_spec,
    modelserve_spec,
    protocol_list,
    running,
)
from overload_report import (
    RECOVERY_GRACE_S,
    PhaseResult,
    Recovery,
    Report,
    Row,
    ceiling_text,
    fmt_ms,
    make_row,
    markdown,
    row_line,
    write_outputs,
)
from tests.load_generator import Schedule, Shape, Tally, Target, health_target, iris_target, run

SERVERS = ("mlserver", "modelserve")  # run order, as run_core.py: the reference first
# Both outputs, in each server's names, so both do the same work (as perf_analyzer asks in run_core.py).
OUTPUTS = {"modelserve": ("label", "probabilities"), "mlserver": ("predict", "predict_proba")}
REJECTION_HISTOGRAM = "modelserve_rejection_duration_seconds"
LIGHT_RATE_PER_S = 100.0  # the light client: one request every 10 ms
PROBE_RATE_PER_S = 20.0  # the liveness probe: one every 50 ms (a kubelet's is every few seconds; more samples)
HALF_LOAD_IN_FLIGHT = 256  # the paced half load may have this many requests out at once
READY_TIMEOUT_S = 60.0  # workers connected (1,024 connections to a busy server included)
RESULT_GRACE_S = 30.0  # after a phase's end, for the workers' tallies to come back
SAMPLE_INTERVAL_S = 0.2
CLIENT_BOUND = 0.85  # a row's answers/s above this share of the ceiling, or the generator's CPU above it


# -- the generator's processes --------------------------------------------------------------------------


def client_worker(conn: Connection) -> None:
    """One generator process: for each (target, shape) it is sent, connect, say "ready", take the
    schedule, run it, send the tally back. Ends on None or when the parent goes away."""
    try:
        while (job := conn.recv()) is not None:
            target, shape = job

            def schedule_for() -> Schedule:
                conn.send(("ready", None))
                schedule: Schedule = conn.recv()
                return schedule

            try:
                conn.send(("tally", run(target, shape, schedule_for)))
            except (OSError, TimeoutError, grpc.RpcError) as exc:
                conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return


class Clients:
    """``storm_procs`` storm workers, then one each for the light client, the liveness probe and the
    follow-up (half) load; started once and reused by every phase. Start with :meth:`start`, always
    :meth:`stop`."""

    def __init__(self, storm_procs: int) -> None:
        self.storm_procs = storm_procs
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []

    @property
    def light(self) -> int:
        return self.storm_procs

    @property
    def probe(self) -> int:
        return self.storm_procs + 1

    @property
    def follow(self) -> int:
        return self.storm_procs + 2

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # nothing of this process (threads, grpc) is inherited
        for _ in range(self.storm_procs + 3):
            parent, child = context.Pipe()
            proc = context.Process(target=client_worker, args=(child,), daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)

    def stop(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):  # already gone
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    def send(self, worker: int, message: Any) -> None:
        self._conns[worker].send(message)

    def receive(self, worker: int, kind: str, deadline: float) -> Any:
        conn = self._conns[worker]
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"load generator worker {worker} sent no {kind!r} in time")
        got, value = conn.recv()
        if got != kind:
            raise RuntimeError(f"load generator worker {worker}: {got}: {value}")
        return value


def split(concurrency: int, parts: int) -> list[int]:
    """concurrency callers over parts workers, as evenly as possible (empty parts dropped)."""
    shares = [concurrency // parts + (i < concurrency % parts) for i in range(parts)]
    return [s for s in shares if s > 0]


# -- watching the server --------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Resident bytes of the process and its children; 0 once it has gone."""
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def scrape_histogram(http_port: int, transport: str, name: str = REJECTION_HISTOGRAM) -> dict[float, float] | None:
    """Cumulative bucket counts of the histogram (summed over its label sets whose ``transport`` label,
    if any, is ``transport``), by upper bound, with "sum" and "count" under the keys -1.0 and -2.0;
    None when the server does not export it."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    buckets: dict[float, float] = {}
    found = False
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        found = True
        for sample in family.samples:
            if sample.labels.get("transport", transport) != transport:
                continue
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == f"{name}_sum":
                buckets[-1.0] = buckets.get(-1.0, 0.0) + sample.value
            elif sample.name == f"{name}_count":
                buckets[-2.0] = buckets.get(-2.0, 0.0) + sample.value
    return buckets if found else None


def histogram_cost(before: dict[float, float] | None, after: dict[float, float] | None) -> tuple[float, float] | None:
    """(mean, p99) in seconds of what was observed between two scrapes; None without data. The p99 is
    interpolated linearly inside its bucket (Prometheus' histogram_quantile); in the +Inf bucket it is
    the largest finite bound."""
    if before is None or after is None:
        return None
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    count = delta.get(-2.0, 0.0)
    if count <= 0:
        return None
    bounds = sorted(k for k in delta if k >= 0)
    rank, lower, below = 0.99 * count, 0.0, 0.0
    p99 = bounds[-2] if len(bounds) > 1 else 0.0
    for le in bounds:
        if delta[le] >= rank:
            if le == float("inf"):
                break
            share = (rank - below) / (delta[le] - below) if delta[le] > below else 1.0
            p99 = lower + (le - lower) * share
            break
        lower, below = le, delta[le]
    return delta.get(-1.0, 0.0) / count, p99


# -- one phase ------------------------------------------------------------------------------------------


def run_phase(
    clients: Clients,
    target: Target,
    server_pid: int,
    metrics_port: int | None,
    args: argparse.Namespace,
    *,
    storm: int = 0,
    light: bool = False,
    follow: Shape | None = None,
    follow_after_storm: bool = False,
    warmup_s: float | None = None,
    seconds: float | None = None,
) -> PhaseResult:
    """Run a storm of ``storm`` closed-loop callers (0: none), the light client and the liveness probe
    beside it (``light``), and/or the ``follow`` load (paced); ``follow_after_storm``: it starts the moment
    the storm stops and runs for ``--recovery-seconds``, else alongside. Blocks until every worker has
    reported (bounded)."""
    warmup_s = args.warmup if warmup_s is None else warmup_s
    seconds = args.seconds if seconds is None else seconds
    jobs: list[tuple[int, Target, Shape]] = [
        (i, target, Shape.closed(n, args.timeout)) for i, n in enumerate(split(storm, clients.storm_procs))
    ]
    if light:
        jobs.append((clients.light, target, Shape.paced(LIGHT_RATE_PER_S, 1, args.timeout)))
        probe_port = args.probe_port if target.transport == "http" and args.probe_port else target.port
        probe = health_target(target.transport, probe_port, target.host)
        jobs.append((clients.probe, probe, Shape.paced(PROBE_RATE_PER_S, 1, args.timeout)))
    if follow is not None:
        jobs.append((clients.follow, target, follow))
    for worker, job_target, shape in jobs:
        clients.send(worker, (job_target, shape))
    ready_by = time.monotonic() + READY_TIMEOUT_S
    for worker, _, _ in jobs:
        clients.receive(worker, "ready", ready_by)

    before = scrape_histogram(metrics_port, target.transport) if metrics_port is not None else None
    main = Schedule.starting_in(0.1, warmup_s, seconds)
    after_storm = Schedule(
        main.end_at, main.end_at + RECOVERY_GRACE_S, main.end_at + RECOVERY_GRACE_S + args.recovery_seconds
    )
    for worker, _, _ in jobs:
        is_follow_after = worker == clients.follow and follow_after_storm
        clients.send(worker, after_storm if is_follow_after else main)

    # Watch the server's memory, and the generator's CPU over the counted window.
    pids = clients.pids
    last_end = max(main.end_at, after_storm.end_at if follow_after_storm else 0.0)
    peak_rss = 0
    cpu_from: tuple[float, float] | None = None  # (CPU seconds, time) at measure_from
    cpu_to: tuple[float, float] | None = None  # the same at end_at
    while (now := time.monotonic()) < last_end:
        peak_rss = max(peak_rss, tree_rss(server_pid))
        if cpu_from is None and now >= main.measure_from:
            cpu_from = (cpu_seconds(pids), now)
        if cpu_to is None and now >= main.end_at:
            cpu_to = (cpu_seconds(pids), now)
        time.sleep(min(SAMPLE_INTERVAL_S, max(0.0, last_end - now)))
    if cpu_to is None:
        cpu_to = (cpu_seconds(pids), time.monotonic())
    client_cpu_pct = 0.0
    if cpu_from is not None and cpu_to[1] > cpu_from[1]:
        cpus = len(args.client_cpus.split(",")) if args.client_cpus else os.cpu_count() or 1
        client_cpu_pct = 100.0 * (cpu_to[0] - cpu_from[0]) / (cpu_to[1] - cpu_from[1]) / cpus

    tallies: dict[int, Tally] = {}
    results_by = last_end + args.timeout + RESULT_GRACE_S
    for worker, _, _ in jobs:
        tallies[worker] = clients.receive(worker, "tally", results_by)
    after = scrape_histogram(metrics_port, target.transport) if metrics_port is not None and before else None
    storm_tallies = [tallies[w] for w, _, _ in jobs if w < clients.storm_procs]
    return PhaseResult(
        storm=Tally.merged(storm_tallies) if storm_tallies else None,
        light=tallies.get(clients.light) if light else None,
        probe=tallies.get(clients.probe) if light else None,
        follow=tallies.get(clients.follow) if follow is not None else None,
        peak_rss_bytes=peak_rss,
        client_cpu_pct=client_cpu_pct,
        rejection_cost_s=histogram_cost(before, after),
    )


# -- rows -----------------------------------------------------------------------------------------------


# -- per server and transport ---------------------------------------------------------------------------


def dry_run(target: Target) -> None:
    """One request must be answered 200 / OK, or the load would measure an error path."""
    if target.transport == "http":
        head, body = target.payload.split(b"\r\n\r\n", 1)
        path = head.split(b" ", 2)[1].decode()
        request = urllib.request.Request(
            f"http://{target.host}:{target.port}{path}", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    return
                detail = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        raise RuntimeError(f"dry run over REST failed: {detail}")
    with grpc.insecure_channel(f"{target.host}:{target.port}") as channel:
        try:
            channel.unary_unary(target.grpc_method)(target.payload, timeout=10)
        except grpc.RpcError as exc:
            raise RuntimeError(f"dry run over gRPC failed: {exc.code()}: {exc.details()}") from exc


def measure(
    spec: ServerSpec, transport: str, clients: Clients, args: argparse.Namespace, out_dir: Path, report: Report
) -> None:
    log = out_dir / f"{spec.name}-{transport}-server.log"
    with running(spec, "iris", args.server_cpus, log) as proc:
        args.probe_port = spec.health_port  # REST probes go to modelserve's own health listener when asked
        port = spec.http_port if transport == "http" else spec.grpc_port
        target = iris_target(transport, port, outputs=OUTPUTS[spec.name])
        dry_run(target)
        # modelserve serves /metrics on its REST port; MLServer on another, without the histogram (so "-").
        metrics_port = spec.http_port if spec.name == "modelserve" else None
        base: Row | None = None
        fresh: Tally | None = None
        for multiplier in args.multipliers:
            concurrency = args.concurrency * multiplier
            is_last = multiplier == args.multipliers[-1]
            half = Shape.paced(base.goodput_per_s / 2, HALF_LOAD_IN_FLIGHT, args.timeout) if base else None
            phase = run_phase(
                clients, target, proc.pid, metrics_port, args, storm=concurrency, light=True,
                follow=half if is_last else None, follow_after_storm=True,
            )  # fmt: skip
            row = make_row(spec.name, transport, multiplier, concurrency, phase, base)
            ceiling = report.ceilings.get(transport)
            row.client_bound = row.client_cpu_pct > 100 * CLIENT_BOUND or bool(
                ceiling and row.answered_per_s > CLIENT_BOUND * ceiling[0]
            )
            report.rows.append(row)
            print("  " + row_line(row), flush=True)
            if base is None:
                base = row
                # The fresh half load, on a server that has seen 1x only: what recovery is compared with.
                fresh = run_phase(
                    clients, target, proc.pid, metrics_port, args, warmup_s=1.0, seconds=args.recovery_seconds,
                    follow=Shape.paced(row.goodput_per_s / 2, HALF_LOAD_IN_FLIGHT, args.timeout),
                ).follow  # fmt: skip
            if is_last and half is not None and phase.follow is not None:
                after = phase.follow
                fresh_p99 = Tally.percentile_ms(fresh.ok_s, 99) if fresh else None
                after_p99 = Tally.percentile_ms(after.ok_s, 99)
                recovery = Recovery(
                    server=spec.name,
                    transport=transport,
                    rate_per_s=half.rate_per_s,
                    fresh_p99_ms=fresh_p99,
                    after_p99_ms=after_p99,
                    ratio=after_p99 / fresh_p99 if fresh_p99 and after_p99 is not None else None,
                    fresh_goodput_per_s=fresh.goodput_per_s if fresh else 0.0,
                    after_goodput_per_s=after.goodput_per_s,
                    after_rejected=len(after.rejected_s),
                    after_errors=after.error_count,
                    after_timeouts=after.timeouts,
                    after_late=after.late,
                )
                report.recoveries.append(recovery)
                print(
                    f"  recovery: half load {half.rate_per_s:.0f}/s, p99 fresh {fmt_ms(fresh_p99)} ms, "
                    f"from {RECOVERY_GRACE_S:g} s after {multiplier}x {fmt_ms(after_p99)} ms",
                    flush=True,
                )


def measure_ceiling(transport: str, clients: Clients, args: argparse.Namespace, out_dir: Path, report: Report) -> None:
    http_port, grpc_port = free_ports(2)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-stub", transport, str(http_port), str(grpc_port)]
    spec = ServerSpec("stub", command, {}, http_port, grpc_port, {})
    concurrency = args.concurrency * max(args.multipliers)
    with running(spec, "iris", args.server_cpus, out_dir / f"stub-{transport}.log") as proc:
        target = iris_target(transport, http_port if transport == "http" else grpc_port)
        phase = run_phase(clients, target, proc.pid, None, args, storm=concurrency, warmup_s=1.0, seconds=3.0)
    assert phase.storm is not None
    report.ceilings[transport] = (phase.storm.answered_per_s, phase.client_cpu_pct)
    print(f"  generator ceiling, {transport}: {ceiling_text(*report.ceilings[transport])}", flush=True)


# -- the stub server (a child process: --serve-stub) ----------------------------------------------------


class _StubHttp(asyncio.Protocol):
    """Answers every request with a canned 200 (keep-alive), whatever it asked: health checks included."""

    REPLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self._buffer) < end + 4 + length:
                return
            del self._buffer[: end + 4 + length]
            assert self._transport is not None
            self._transport.write(self.REPLY)
            if b"connection: close" in head:
                self._transport.close()


def serve_stub(transport: str, http_port: int, grpc_port: int) -> None:
    """The generator's ceiling: REST on uvloop, or gRPC (grpc.aio, asyncio's loop) answering b"" to ModelInfer;
    both serve the canned REST answer for the readiness checks. Runs until SIGTERM."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        http = await loop.create_server(_StubHttp, "127.0.0.1", http_port, backlog=4096)
        server = None
        if transport == "grpc":

            async def infer(request: bytes, context: Any) -> bytes:
                return b""

            server = grpc.aio.server()
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
                    ),
                )
            )
            server.add_insecure_port(f"127.0.0.1:{grpc_port}")
            await server.start()
        async with http:
            await asyncio.Event().wait()  # until SIGTERM ends the process
        if server is not None:
            await server.stop(None)

    if transport == "http":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# -- the report -----------------------------------------------------------------------------------------


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", choices=("both", "modelserve", "mlserver"), default="both")
    p.add_argument("--protocols", type=protocol_list, default=["http", "grpc"], help="default: http,grpc")
    p.add_argument("--concurrency", type=int, default=32, help="the 1x closed-loop callers (default 32)")
    p.add_argument("--multipliers", type=int_list, default=[1, 8, 32], help="of --concurrency; must start at 1")
    p.add_argument("--seconds", type=float, default=8.0, help="counted seconds per level (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each level (default 2)")
    p.add_argument("--recovery-seconds", type=float, default=5.0, help="half load after the last level (default 5)")
    p.add_argument("--timeout", type=float, default=10.0, help="a request unanswered after this is a timeout (s)")
    p.add_argument("--client-procs", type=int, default=2, help="storm processes (plus one light, one half load)")
    p.add_argument("--config", type=Path, default=None, help="a modelserve --config YAML")
    p.add_argument(
        "--health-port",
        action="store_true",
        help="start modelserve with --health-port and send its REST liveness probe there",
    )
    p.add_argument("--skip-ceiling", action="store_true", help="do not measure the generator against a stub")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="CPU list for the generator's processes ('' = no pinning)")
    p.add_argument("--serve-stub", nargs=3, metavar=("TRANSPORT", "HTTP_PORT", "GRPC_PORT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.multipliers[0] != 1:
        raise SystemExit("--multipliers must start with 1: the 1x row is the capacity the others are compared with")
    if args.client_procs < 1:
        raise SystemExit("--client-procs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_stub:
        transport, http_port, grpc_port = args.serve_stub
        serve_stub(transport, int(http_port), int(grpc_port))
        return 0
    install_signal_handlers()
    wanted = [s for s in SERVERS if args.only in ("both", s)]
    # Build every spec once first, so that a missing prerequisite fails before any measurement.
    for name in wanted:
        mlserver_spec("iris") if name == "mlserver" else modelserve_spec("iris", config=args.config)
    args.probe_port = None
    if args.client_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu) for cpu in args.client_cpus.split(",")})  # the workers inherit it

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / f"overload-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = Report()
    clients = Clients(args.client_procs)
    clients.start()
    try:
        if not args.skip_ceiling:
            for transport in args.protocols:
                measure_ceiling(transport, clients, args, out_dir, report)
        for name in wanted:
            for transport in args.protocols:
                # A new server (and new ports) for each transport: the last one's may still be in TIME_WAIT.
                spec = (
                    mlserver_spec("iris")
                    if name == "mlserver"
                    else modelserve_spec("iris", config=args.config, health_port=args.health_port)
                )
                try:
                    measure(spec, transport, clients, args, out_dir, report)
                except RuntimeError as exc:  # a server that never became ready, or a failed phase: go on
                    print(f"[{name}] {transport} FAILED: {exc}", file=sys.stderr, flush=True)
                    report.failures.append(f"{name} {transport}: {exc}")
                    # A worker may still be inside the failed phase: start the generator afresh.
                    clients.stop()
                    clients = Clients(args.client_procs)
                    clients.start()
    finally:
        clients.stop()

    header = [
        "# Overload: goodput and rejections at 1x, 8x and 32x capacity, modelserve vs MLServer (iris, batch 1)",
        "",
        f"- run {stamp}, git {git_revision()}, {os.cpu_count()} CPUs ({cpu_model()}); wall time "
        f"{time.monotonic() - started:.0f} s",
        f"- server pinned to CPUs '{args.server_cpus}', generator ({args.client_procs} storm processes, one each "
        f"for the light client, the liveness probe and the half load; tests/load_generator.py) to "
        f"'{args.client_cpus}'",
        f"- closed loop without back-off at {', '.join(f'{m}x' for m in args.multipliers)} of {args.concurrency} "
        f"callers; {args.warmup:g} s warm-up then {args.seconds:g} s counted per level; light client: one request "
        f"every 10 ms on its own connection; timeout {args.timeout:g} s",
        "- same request for both: one iris row [1, 4] FP32, both outputs; REST JSON, gRPC raw_input_contents; "
        f"modelserve {'with ' + str(args.config) if args.config else 'with default settings'}, MLServer "
        "parallel_workers 0",
    ]
    table = markdown(report, args, header)
    write_outputs(report, table, out_dir)
    print()
    print(table, end="")
    print(f"\nresults and server logs: {out_dir.relative_to(ROOT)}")
    return 0 if report.rows and not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
