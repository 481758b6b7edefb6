"""``<model>/routing.json`` (``routing/policy_files.py``): jail-checked like ``aliases.json`` (a file linked
out of the repository is refused, never read or written through), and a file that is not a valid policy
stops the start naming the file and the field."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from modelserve import Engine, ErrorCode, ModelServeError
from modelserve.config import SettingsError
from tests.model_builders import write_onnx_scale

LEAVES = "leaves the model repository"
POLICY = {"split": [{"arm": "only", "target": "1", "weight": 100}]}
X = np.ones((1, 3), np.float32)


def repository(tmp_path: Path) -> tuple[Path, Path]:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    write_onnx_scale(repo / "good" / "1" / "model.onnx", 2.0)
    outside.mkdir()
    return repo, outside


def test_a_routing_file_linked_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    repo, outside = repository(tmp_path)
    outside_file = outside / "routing.json"
    outside_file.write_text('{"policy": {}, "buckets": {}}\n')

    async def linked_at_start() -> None:
        (repo / "good" / "routing.json").symlink_to(outside_file)
        with pytest.raises(SettingsError, match=LEAVES):
            async with Engine.from_repository(repo, load=["good"]):
                pass
        (repo / "good" / "routing.json").unlink()

    async def linked_later() -> None:
        async with Engine.from_repository(repo, load=["good"]) as engine:
            (repo / "good" / "routing.json").symlink_to(outside_file)
            with pytest.raises(ModelServeError) as write:
                await engine.set_routing("good", POLICY)
            assert write.value.code is ErrorCode.INTERNAL and LEAVES in write.value.message
            assert "model 'good': routing.json" in write.value.message
            assert (await engine.infer("good", {"x": X})).arm == ""  # the policy was not applied

    asyncio.run(linked_at_start())
    asyncio.run(linked_later())
    assert outside_file.read_text() == '{"policy": {}, "buckets": {}}\n'


def test_an_invalid_routing_file_stops_the_start_naming_the_field(tmp_path: Path) -> None:
    repo, _ = repository(tmp_path)
    (repo / "good" / "routing.json").write_text('{"policy": {"split": [{"arm": "a", "target": "1", "weight": 101}]}}')

    async def scenario() -> None:
        with pytest.raises(
            SettingsError, match=r"model 'good': routing.json is not a valid routing policy: split\.0\.weight"
        ):
            async with Engine.from_repository(repo, load=["good"]):
                pass

    asyncio.run(scenario())
