"""Several workers' statistics documents as one (``protocol/documents.merge_statistics_documents``)."""

from __future__ import annotations

from typing import Any

from modelserve.protocol.documents import merge_statistics_documents


def _document(name: str, count: int, last: int, batches: dict[int, int], memory: int) -> dict[str, Any]:
    duration = {"count": count, "ns": count * 1000}
    return {
        "model_stats": [
            {
                "name": name,
                "version": "1",
                "last_inference": last,
                "inference_count": count,
                "execution_count": count,
                "inference_stats": {"success": dict(duration), "queue": dict(duration)},
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": {"count": n, "ns": n},
                        "compute_infer": {"count": n, "ns": n},
                        "compute_output": {"count": n, "ns": n},
                    }
                    for size, n in batches.items()
                ],
                "memory_usage": [{"type": "CPU", "id": 0, "byte_size": memory}],
            }
        ]
    }


def test_counts_and_durations_add_up_batches_merge_by_size_and_the_latest_inference_wins() -> None:
    merged = merge_statistics_documents(
        [_document("iris", 3, 100, {1: 3}, 10), _document("iris", 5, 250, {1: 1, 4: 1}, 10)]
    )
    [iris] = merged["model_stats"]
    assert iris["inference_count"] == 8 and iris["execution_count"] == 8
    assert iris["inference_stats"]["success"] == {"count": 8, "ns": 8000}
    assert iris["last_inference"] == 250
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in iris["batch_stats"]] == [(1, 4), (4, 1)]
    assert iris["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 20}]


def test_a_version_only_one_worker_reports_is_kept_and_inputs_are_not_changed() -> None:
    first, second = _document("iris", 1, 1, {1: 1}, 0), _document("digits", 2, 2, {}, 0)
    merged = merge_statistics_documents([first, second])
    assert [m["name"] for m in merged["model_stats"]] == ["iris", "digits"]
    merge_statistics_documents([first, first])
    assert first["model_stats"][0]["inference_count"] == 1, "the inputs were modified"
