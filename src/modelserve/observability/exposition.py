"""Several workers' ``/metrics`` texts as one scrape (``server.workers``, app/workers.py).

Counters and histograms are summed sample by sample (same series: same name, same labels): the scrape
reads as one server. Gauges are summed only where a sum is what the gauge means (requests in flight or
pending, memory the models take: every worker holds its own copy); every other gauge (a model's state,
drift statistics, firing alerts, host CPU) is kept per worker with a ``worker`` label, since the sum of
two workers' PSI or of two "READY = 1" flags means nothing.

The texts are merged line by line in the text format, not re-encoded through a parser: every name stays
exactly as the workers wrote it (prometheus_client's parser renames Triton's ``nv_inference_request_success``
counter samples to ``..._total``, which would break Triton's dashboards). All workers run the same code,
so a series is written the same way (labels in the same order) by each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["SUMMED_GAUGES", "merge_expositions"]

SUMMED_GAUGES = frozenset(
    {"modelserve_inflight_requests", "nv_inference_pending_request_count", "modelserve_model_memory_bytes"}
)
_SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})


class _Family:
    __slots__ = ("help", "name", "series", "summed", "type")

    def __init__(self, name: str) -> None:
        self.name = name
        self.help: str | None = None
        self.type: str | None = None
        self.summed = True
        self.series: dict[str, float] = {}  # series (name and labels, as written) -> value


def merge_expositions(texts: Mapping[int, str]) -> str:
    """One exposition from each worker's text (``texts[worker]``), merged as the module says."""
    families: dict[str, _Family] = {}
    for worker, text in sorted(texts.items()):
        family: _Family | None = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name, _, rest = line[7:].partition(" ")
                family = families.setdefault(name, _Family(name))
                if line.startswith("# HELP "):
                    family.help = family.help if family.help is not None else rest
                else:
                    family.type = rest
                    family.summed = rest in _SUMMED_TYPES or name in SUMMED_GAUGES
                continue
            if not line or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if family is None:  # a sample before any TYPE: an untyped family of its own
                family = families.setdefault(series.partition("{")[0], _Family(series.partition("{")[0]))
                family.summed = False
            key = series if family.summed else _with_worker(series, worker)
            family.series[key] = family.series.get(key, 0.0) + _value(value)
    lines: list[str] = []
    for family in families.values():
        if family.help is not None:
            lines.append(f"# HELP {family.name} {family.help}")
        if family.type is not None:
            lines.append(f"# TYPE {family.name} {family.type}")
        lines += [f"{series} {_number(value)}" for series, value in family.series.items()]
    return "\n".join(lines) + "\n"


def _with_worker(series: str, worker: int) -> str:
    if series.endswith("}"):
        separator = "" if series.endswith("{}") else ","
        return f'{series[:-1]}{separator}worker="{worker}"}}'
    return f'{series}{{worker="{worker}"}}'


def _value(text: str) -> float:
    try:
        return float(text)  # float() reads "+Inf", "-Inf" and "NaN" too
    except ValueError:
        return math.nan


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))
