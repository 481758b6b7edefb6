"""JSON-ready documents for the REST API (metadata, config, statistics, repository index).

The gRPC transport builds its messages from the same documents (``json_format.ParseDict``), so the two
transports cannot disagree on what a field means.
"""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from modelserve.observability.statistics import Duration, ModelVersionStatistics
from modelserve.repository.manager import IndexEntry
from modelserve.repository.model_config import ModelConfig
from modelserve.service.dataplane import DataPlane, ModelMetadata

__all__ = [
    "config_document",
    "index_document",
    "merge_statistics_documents",
    "metadata_document",
    "statistics_document",
    "statistics_everywhere",
]


def metadata_document(metadata: ModelMetadata) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": metadata.versions,
        "platform": metadata.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in metadata.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in metadata.outputs],
    }


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _int64_as_numbers(descriptor: Descriptor, document: dict[str, Any]) -> None:
    """protobuf's JSON printer writes int64 as strings; Triton writes numbers (``"dims": [4]``)."""
    for key, value in document.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.type in _INT64_TYPES:
            document[key] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for item in value.values():
                        _int64_as_numbers(value_field.message_type, item)
            elif isinstance(value, list):
                for item in value:
                    _int64_as_numbers(field.message_type, item)
            elif isinstance(value, dict):
                _int64_as_numbers(field.message_type, value)


def config_document(config: ModelConfig) -> dict[str, Any]:
    """The ModelConfig with proto field names and numeric int64s, as Triton's ``/config`` returns it."""
    document: dict[str, Any] = json_format.MessageToDict(config, preserving_proto_field_name=True)
    _int64_as_numbers(config.DESCRIPTOR, document)
    document.setdefault("max_batch_size", 0)
    return document


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


_EMPTY = {"count": 0, "ns": 0}


def statistics_document(stats: list[ModelVersionStatistics]) -> dict[str, Any]:
    return {
        "model_stats": [
            {
                "name": s.name,
                "version": s.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": _duration(s.success),
                    "fail": _duration(s.fail),
                    "queue": _duration(s.queue),
                    "compute_input": _duration(s.compute_input),
                    "compute_infer": _duration(s.compute_infer),
                    "compute_output": _duration(s.compute_output),
                    "cache_hit": dict(_EMPTY),
                    "cache_miss": dict(_EMPTY),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": _duration(b.compute_input),
                        "compute_infer": _duration(b.compute_infer),
                        "compute_output": _duration(b.compute_output),
                    }
                    for size, b in sorted(s.batches.items())
                ],
                "memory_usage": [{"type": "CPU", "id": 0, "byte_size": s.memory_bytes}] if s.memory_bytes else [],
            }
            for s in stats
        ]
    }


def index_document(entries: list[IndexEntry], *, with_details: bool = False) -> list[dict[str, Any]]:
    """Triton's fields (name, version, state, reason); ``with_details`` adds, for loaded versions, what
    REST clients may read and Triton's gRPC message has no field for: memory_bytes with memory_source (how
    it was measured: worker-rss, file-size, pickled-size or floor), load_ms, warmup_ms, cold_start_ms."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        item: dict[str, Any] = {"name": entry.name, "state": entry.state.value}
        if entry.version:
            item["version"] = entry.version
        if entry.reason:
            item["reason"] = entry.reason
        # Only loaded versions have a measured size (never 0), so memory_source marks them. load_ms is no
        # such mark: a load timed by a fake clock (in-process tests) takes 0 ms.
        if with_details and entry.memory_source:
            item["memory_bytes"] = entry.memory_bytes
            item["memory_source"] = entry.memory_source
            item["load_ms"] = round(entry.load_ms, 2)
            item["warmup_ms"] = round(entry.warmup_ms, 2)
            if entry.cold_start_ms:
                item["cold_start_ms"] = round(entry.cold_start_ms, 2)
        out.append(item)
    return out


async def statistics_everywhere(api: DataPlane, name: str, version: str) -> dict[str, Any]:
    """The statistics document both transports send: this worker's, summed with its siblings' when the
    server runs several workers (``server.workers``), so any worker answers for the whole server."""
    local = statistics_document(await api.statistics(name, version))
    if api.siblings is None:
        return local
    return merge_statistics_documents([local, *await api.siblings.statistics_documents(name, version)])


def merge_statistics_documents(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' statistics documents as one (``server.workers``): each version's counts and
    durations summed, its last inference the latest, its batch sizes merged by size, its memory summed
    (every worker holds its own copy of the model). A version only some workers report is kept as they
    report it; the first document's order is kept."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for document in documents:
        for entry in document.get("model_stats", []):
            key = (entry["name"], entry["version"])
            if key not in merged:
                merged[key] = copy.deepcopy(entry)
                continue
            into = merged[key]
            into["last_inference"] = max(into["last_inference"], entry["last_inference"])
            into["inference_count"] += entry["inference_count"]
            into["execution_count"] += entry["execution_count"]
            for phase, duration in entry["inference_stats"].items():
                _add_duration(into["inference_stats"].setdefault(phase, dict(_EMPTY)), duration)
            batches = {b["batch_size"]: b for b in into["batch_stats"]}
            for batch in entry["batch_stats"]:
                if batch["batch_size"] not in batches:
                    batches[batch["batch_size"]] = copy.deepcopy(batch)
                    continue
                for phase in ("compute_input", "compute_infer", "compute_output"):
                    _add_duration(batches[batch["batch_size"]][phase], batch[phase])
            into["batch_stats"] = [batches[size] for size in sorted(batches)]
            memory = sum(m["byte_size"] for m in into["memory_usage"]) + sum(
                m["byte_size"] for m in entry["memory_usage"]
            )
            into["memory_usage"] = [{"type": "CPU", "id": 0, "byte_size": memory}] if memory else []
    return {"model_stats": list(merged.values())}


def _add_duration(into: dict[str, int], other: dict[str, int]) -> None:
    into["count"] += other["count"]
    into["ns"] += other["ns"]
