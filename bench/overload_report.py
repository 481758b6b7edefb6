"""The overload benchmark's results: one row per server, transport and load, the recovery check, and the
markdown table, CSV and JSON that ``run_overload.py`` writes, with issue 11's targets checked per row.

Split from ``run_overload.py`` (which drives the servers and the generator's processes) so that each file
has one job: measuring there, reporting here.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import RESULTS
from tests.load_generator import Tally

LABEL = {"modelserve": "modelserve", "mlserver": "MLServer 1.7.1", "stub": "stub"}
# The recovery target is read this long after the load drops.
RECOVERY_GRACE_S = 5.0
TARGETS = {
    "goodput_pct": 80.0,
    "light_ratio": 2.0,
    "rejection_p99_ms": 50.0,
    "recovery_ratio": 1.5,
    "health_p99_ms": 50.0,
}


@dataclass
class PhaseResult:
    storm: Tally | None
    light: Tally | None
    probe: Tally | None
    follow: Tally | None
    peak_rss_bytes: int
    client_cpu_pct: float
    rejection_cost_s: tuple[float, float] | None


@dataclass
class Row:
    server: str
    transport: str
    load: str  # "1x", "8x", ...
    concurrency: int
    goodput_per_s: float
    goodput_pct: float
    rejected_per_s: float
    retry_hint: str  # "all", "none", "k/n", "-" (no rejection)
    errors: dict[str, int]
    error_samples: dict[str, str]
    timeouts: int
    ok_p50_ms: float | None
    ok_p99_ms: float | None
    rejected_p50_ms: float | None
    rejected_p99_ms: float | None
    peak_rss_mib: float
    light_ok_p99_ms: float | None
    light_ratio: float | None
    light_rejected_p99_ms: float | None
    light_rejected_pct: float
    light_errors: int
    health_p99_ms: float | None
    health_failures: int
    server_rejection_mean_us: float | None
    server_rejection_p99_us: float | None
    answered_per_s: float
    client_cpu_pct: float
    client_bound: bool = False


@dataclass
class Recovery:
    server: str
    transport: str
    rate_per_s: float
    fresh_p99_ms: float | None
    after_p99_ms: float | None
    ratio: float | None
    fresh_goodput_per_s: float
    after_goodput_per_s: float
    after_rejected: int
    after_errors: int
    after_timeouts: int
    after_late: int


@dataclass
class Report:
    ceilings: dict[str, tuple[float, float]] = field(default_factory=dict)  # transport -> (answers/s, CPU %)
    rows: list[Row] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def hint_cell(tally: Tally) -> str:
    n = len(tally.rejected_s)
    if n == 0:
        return "-"
    if tally.rejected_with_hint == n:
        return "all"
    return "none" if tally.rejected_with_hint == 0 else f"{tally.rejected_with_hint}/{n}"


def make_row(
    server: str, transport: str, multiplier: int, concurrency: int, phase: PhaseResult, base: Row | None
) -> Row:
    storm, light, probe = phase.storm, phase.light, phase.probe
    assert storm is not None and light is not None and probe is not None
    p = Tally.percentile_ms
    light_p99 = p(light.ok_s, 99)
    light_answers = len(light.ok_s) + len(light.rejected_s)
    base_goodput = base.goodput_per_s if base else storm.goodput_per_s
    base_light_p99 = base.light_ok_p99_ms if base else light_p99
    cost = phase.rejection_cost_s
    return Row(
        server=server,
        transport=transport,
        load=f"{multiplier}x",
        concurrency=concurrency,
        goodput_per_s=storm.goodput_per_s,
        goodput_pct=100.0 * storm.goodput_per_s / base_goodput if base_goodput else 0.0,
        rejected_per_s=storm.rejected_per_s,
        retry_hint=hint_cell(storm),
        errors=dict(storm.errors),
        error_samples=storm.error_samples,
        timeouts=storm.timeouts,
        ok_p50_ms=p(storm.ok_s, 50),
        ok_p99_ms=p(storm.ok_s, 99),
        rejected_p50_ms=p(storm.rejected_s, 50),
        rejected_p99_ms=p(storm.rejected_s, 99),
        peak_rss_mib=phase.peak_rss_bytes / 2**20,
        light_ok_p99_ms=light_p99,
        light_ratio=light_p99 / base_light_p99 if light_p99 is not None and base_light_p99 else None,
        light_rejected_p99_ms=p(light.rejected_s, 99),
        light_rejected_pct=100.0 * len(light.rejected_s) / light_answers if light_answers else 0.0,
        light_errors=light.error_count + light.timeouts,
        health_p99_ms=p(probe.ok_s, 99),
        health_failures=len(probe.rejected_s) + probe.error_count + probe.timeouts,
        server_rejection_mean_us=cost[0] * 1e6 if cost else None,
        server_rejection_p99_us=cost[1] * 1e6 if cost else None,
        answered_per_s=storm.answered_per_s,
        client_cpu_pct=phase.client_cpu_pct,
    )


def ceiling_text(answers_per_s: float, cpu_pct: float) -> str:
    extrapolated = f", ~{answers_per_s * 100 / cpu_pct:,.0f}/s at 100 %" if cpu_pct > 1 else ""
    return (
        f"{answers_per_s:,.0f} answers/s at generator CPU {cpu_pct:.0f} %{extrapolated} "
        f"(against a stub answering at once on the server CPU: a floor of the generator's ceiling)"
    )


def fmt_ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_line(row: Row) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(row.errors.items())) or "none"
    return (
        f"{row.server:10} {row.transport:4} {row.load:>3} c={row.concurrency:<4} goodput {row.goodput_per_s:7.0f}/s "
        f"({row.goodput_pct:5.1f} %)  rejected {row.rejected_per_s:7.0f}/s hint {row.retry_hint}  "
        f"ok p50/p99 {fmt_ms(row.ok_p50_ms)}/{fmt_ms(row.ok_p99_ms)} ms  "
        f"rej p50/p99 {fmt_ms(row.rejected_p50_ms)}/{fmt_ms(row.rejected_p99_ms)} ms  "
        f"light p99 {fmt_ms(row.light_ok_p99_ms)} ms, rej p99 {fmt_ms(row.light_rejected_p99_ms)} ms  "
        f"live p99 {fmt_ms(row.health_p99_ms)} ms  "
        f"RSS {row.peak_rss_mib:.0f} MiB  errors {errors}, timeouts {row.timeouts}  "
        f"gen CPU {row.client_cpu_pct:.0f} %"
    )


def cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(report: Report, args: argparse.Namespace, header: Sequence[str]) -> str:
    transport_name = {"http": "REST", "grpc": "gRPC"}
    lines = [*header, ""]
    if report.ceilings:
        lines += [f"- generator ceiling, {transport_name[t]}: {ceiling_text(*c)}" for t, c in report.ceilings.items()]
        lines.append("")
    lines += [
        "| server | transport | load | clients | goodput/s | % of 1x | rejected/s | retry hint | errors | timeouts "
        "| admitted p50 / p99 ms | rejection p50 / p99 ms | light p99 ms (x of 1x) | light rejection p99 ms "
        "| server cost per rejection mean / p99 µs | health p99 ms | peak RSS MiB | generator CPU % |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        errors = sum(r.errors.values())
        light = f"{cell(r.light_ok_p99_ms)} ({cell(r.light_ratio, 2)}x)"
        cost = (
            f"{cell(r.server_rejection_mean_us)} / {cell(r.server_rejection_p99_us)}"
            if r.server_rejection_mean_us is not None
            else "-"
        )
        lines.append(
            f"| {LABEL[r.server]} | {transport_name[r.transport]} | {r.load} | {r.concurrency} "
            f"| {cell(r.goodput_per_s, 0)} | {cell(r.goodput_pct)} | {cell(r.rejected_per_s, 0)} | {r.retry_hint} "
            f"| {errors} | {r.timeouts} | {cell(r.ok_p50_ms)} / {cell(r.ok_p99_ms)} "
            f"| {cell(r.rejected_p50_ms)} / {cell(r.rejected_p99_ms)} | {light} | {cell(r.light_rejected_p99_ms)} "
            f"| {cost} | {cell(r.health_p99_ms)}{f' ({r.health_failures} failed)' if r.health_failures else ''} "
            f"| {cell(r.peak_rss_mib, 0)} | {cell(r.client_cpu_pct, 0)}{' (client-bound?)' if r.client_bound else ''} |"
        )
    if report.recoveries:
        lines += [
            "",
            f"Recovery: half load from the moment {max(args.multipliers)}x stops, its p99 counted from "
            f"{RECOVERY_GRACE_S:g} s after the drop for {args.recovery_seconds:g} s, against the same half load "
            "on a fresh server (after 1x only).",
            "",
            "| server | transport | half load req/s | fresh p99 ms | after-storm p99 ms | ratio | after: rejected, errors, timeouts, late sends |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for c in report.recoveries:
            lines.append(
                f"| {LABEL[c.server]} | {transport_name[c.transport]} | {cell(c.rate_per_s, 0)} | {cell(c.fresh_p99_ms, 2)} "
                f"| {cell(c.after_p99_ms, 2)} | {cell(c.ratio, 2)} | {c.after_rejected}, {c.after_errors}, "
                f"{c.after_timeouts}, {c.after_late} |"
            )
    lines += ["", *targets(report)]
    details = [
        f"- {LABEL[r.server]} {transport_name[r.transport]} {r.load}: {k}: {v}"
        for r in report.rows
        for k, v in r.error_samples.items()
    ]
    if details:
        lines += ["", "Error messages (one per kind):", *details]
    if report.failures:
        lines += ["", "Failed measurements:", *[f"- {f}" for f in report.failures]]
    return "\n".join(lines) + "\n"


def targets(report: Report) -> list[str]:
    """Issue 11's targets, per server and transport, for the rows past 1x."""
    out = [
        f"Targets (issue 11): goodput >= {TARGETS['goodput_pct']:.0f} % of 1x; light client's admitted p99 <= "
        f"{TARGETS['light_ratio']:g}x its 1x p99 and its rejections' p99 < {TARGETS['rejection_p99_ms']:.0f} ms; "
        f"recovery p99 <= {TARGETS['recovery_ratio']:g}x fresh; liveness p99 < {TARGETS['health_p99_ms']:.0f} ms.",
        "",
    ]
    for r in report.rows:
        if r.load == "1x":
            continue
        failed = []
        if r.goodput_pct < TARGETS["goodput_pct"]:
            failed.append(f"goodput {r.goodput_pct:.1f} %")
        if r.light_ratio is None:
            failed.append("light client never admitted")
        elif r.light_ratio > TARGETS["light_ratio"]:
            failed.append(f"light p99 {r.light_ratio:.2f}x")
        rejection_p99 = r.light_rejected_p99_ms
        if rejection_p99 is not None and rejection_p99 >= TARGETS["rejection_p99_ms"]:
            failed.append(f"light rejection p99 {rejection_p99:.1f} ms")
        if r.health_p99_ms is None or r.health_p99_ms >= TARGETS["health_p99_ms"] or r.health_failures:
            failed.append(f"liveness p99 {cell(r.health_p99_ms)} ms, {r.health_failures} failed")
        verdict = "meets them" if not failed else "FAILS: " + ", ".join(failed)
        out.append(f"- {LABEL[r.server]} {r.transport} {r.load}: {verdict}")
    for c in report.recoveries:
        ok = c.ratio is not None and c.ratio <= TARGETS["recovery_ratio"]
        out.append(
            f"- {LABEL[c.server]} {c.transport} recovery: "
            + ("meets it" if ok else f"FAILS: {cell(c.ratio, 2)}x")
            + f" ({cell(c.after_p99_ms, 2)} vs {cell(c.fresh_p99_ms, 2)} ms)"
        )
    return out


def write_outputs(report: Report, table: str, out_dir: Path) -> None:
    (out_dir / "results.md").write_text(table)
    (RESULTS / "latest-overload.md").write_text(table)
    (out_dir / "results.json").write_text(
        json.dumps(
            {
                "ceilings": report.ceilings,
                "rows": [asdict(r) for r in report.rows],
                "recoveries": [asdict(c) for c in report.recoveries],
                "failures": report.failures,
            },
            indent=2,
        )
        + "\n"
    )
    with (out_dir / "results.csv").open("w", newline="") as f:
        fields = [k for k in Row.__dataclass_fields__ if k != "error_samples"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in report.rows:
            writer.writerow({k: v for k, v in asdict(r).items() if k in fields})
