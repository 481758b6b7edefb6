"""The repository is a jail: no path the server opens from the repository leaves its root.

Each test puts one symbolic link into a repository (a model folder, a version folder, config.pbtxt, the
model file, a python model, a SHA256SUMS entry, a warm-up file, a drift profile, aliases.json), runs the
in-process engine over it, and checks that the model is refused with a reason that names the link and the
fix, that nothing behind the link was read or executed, and that a good model beside it loads and serves.
The last test does the same through the real server's repository index.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import textwrap
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelserve import Engine, ErrorCode, ModelServeError
from modelserve.repository.lifecycle import IndexEntry
from modelserve.repository.loaded import VersionState
from tests.model_builders import iris_repository, write_onnx_scale, write_python_model
from tests.server_process import EXAMPLES, running_server
from tests.waiting import wait_until, wait_until_async

X = np.ones((1, 3), dtype=np.float32)
LEAVES = "leaves the model repository"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def folders(tmp_path: Path) -> tuple[Path, Path]:
    """``(repo, outside)``: a repository holding one good ONNX model ``good``, and a folder beside it."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    write_onnx_scale(repo / "good" / "1" / "model.onnx", 2.0)
    outside.mkdir()
    return repo, outside


def failure(engine: Engine, name: str) -> str:
    """The reason ``name`` is FAILED in the index (fails the test when it is not)."""
    entries: list[IndexEntry] = [e for e in engine.models() if e.name == name]
    failed = [e.reason for e in entries if e.state is VersionState.FAILED]
    assert failed, f"{name} is not FAILED: {entries}"
    return failed[0]


async def assert_good_serves(engine: Engine) -> None:
    result = await engine.infer("good", {"x": X})
    assert result.outputs["y"].tolist() == [[2.0, 2.0, 2.0]]


def refused(
    repo: Path, name: str, *, config: Mapping[str, Any] | None = None
) -> str:  # the reason ``name`` failed, with ``good`` loaded beside it and serving
    reasons: list[str] = []

    async def scenario() -> None:
        async with Engine.from_repository(repo, load=["good", name], config=config) as engine:
            reasons.append(failure(engine, name))
            await assert_good_serves(engine)

    run(scenario)
    return reasons[0]


def test_a_model_folder_linked_out_of_the_repository_is_failed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    write_onnx_scale(outside / "linked" / "1" / "model.onnx", 3.0)
    (repo / "linked").symlink_to(outside / "linked", target_is_directory=True)
    reason = refused(repo, "linked")
    assert "model 'linked': model folder 'linked'" in reason and LEAVES in reason
    assert "move or copy the target into the repository" in reason
    assert str(outside) not in reason  # messages reach clients: no path outside the repository in them


def test_a_version_folder_linked_out_of_the_repository_is_failed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    write_onnx_scale(outside / "v1" / "model.onnx", 3.0)
    (repo / "versioned").mkdir()
    (repo / "versioned" / "1").symlink_to(outside / "v1", target_is_directory=True)
    reason = refused(repo, "versioned")
    assert "model 'versioned' version 1: version folder 'versioned/1'" in reason and LEAVES in reason


def test_a_config_pbtxt_linked_out_of_the_repository_is_failed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    write_onnx_scale(repo / "configured" / "1" / "model.onnx", 3.0)
    (outside / "config.pbtxt").write_text('name: "configured"\nbackend: "onnxruntime"\n')
    (repo / "configured" / "config.pbtxt").symlink_to(outside / "config.pbtxt")
    reason = refused(repo, "configured")
    assert "model 'configured': config.pbtxt 'configured/config.pbtxt'" in reason and LEAVES in reason


def test_a_model_onnx_linked_out_of_the_repository_is_failed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    write_onnx_scale(outside / "model.onnx", 3.0)
    (repo / "onnx" / "1").mkdir(parents=True)
    (repo / "onnx" / "1" / "model.onnx").symlink_to(outside / "model.onnx")
    reason = refused(repo, "onnx")
    assert "'onnx/1/model.onnx'" in reason and LEAVES in reason


PYTHON_CONFIG = """
    backend: "python"
    max_batch_size: 0
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

# Writes its marker file when imported: the marker is the proof that the file was executed.
MARKING_MODEL = """
    from pathlib import Path

    from modelserve import PythonModel

    Path({marker!r}).touch()


    class Model(PythonModel):
        def infer(self, inputs):
            return {{"y": inputs["x"]}}
"""


def test_a_model_py_linked_from_outside_is_not_executed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    linked_marker, copied_marker = tmp_path / "linked-was-imported", tmp_path / "copied-was-imported"
    (outside / "model.py").write_text(textwrap.dedent(MARKING_MODEL.format(marker=str(linked_marker))))
    write_python_model(repo / "linked_py", "", PYTHON_CONFIG)
    (repo / "linked_py" / "1" / "model.py").unlink()
    (repo / "linked_py" / "1" / "model.py").symlink_to(outside / "model.py")
    # The same model, copied in: it loads, and its marker shows the check would see an execution.
    write_python_model(repo / "copied_py", MARKING_MODEL.format(marker=str(copied_marker)), PYTHON_CONFIG)

    async def scenario() -> None:
        async with Engine.from_repository(repo, load=["good", "linked_py", "copied_py"]) as engine:
            reason = failure(engine, "linked_py")
            assert "'linked_py/1/model.py'" in reason and LEAVES in reason
            copied = await engine.infer("copied_py", {"x": np.ones(3, np.float32)})
            assert copied.outputs["y"].tolist() == [1.0, 1.0, 1.0]
            await assert_good_serves(engine)

    run(scenario)
    assert copied_marker.exists()
    assert not linked_marker.exists(), "the model.py linked from outside the repository was executed"


def test_a_manifest_entry_linked_out_of_the_repository_is_failed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    version = repo / "summed" / "1"
    write_onnx_scale(version / "model.onnx", 3.0)
    (outside / "weights.bin").write_bytes(b"outside")
    (version / "weights.bin").symlink_to(outside / "weights.bin")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in (version / "model.onnx",)]
    lines.append(f"{hashlib.sha256(b'outside').hexdigest()}  weights.bin")  # what the outside file holds
    (version / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    (outside / "weights.bin").chmod(0)  # were it opened, the reason would be "cannot be read" instead
    try:
        reason = refused(repo, "summed")
    finally:
        (outside / "weights.bin").chmod(0o600)
    assert "'summed/1/weights.bin'" in reason and LEAVES in reason
    assert "checksum" not in reason and "cannot be read" not in reason


WARMUP_CONFIG = """
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
    model_warmup [ {
      name: "from_file" batch_size: 1
      inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "x.bin" } }
    } ]
"""


def test_a_warmup_file_linked_out_of_the_repository_is_failed(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    data = np.ones(3, dtype="<f4").tobytes()
    (outside / "x.bin").write_bytes(data)
    for name in ("warm_linked", "warm_copied"):
        write_onnx_scale(repo / name / "1" / "model.onnx", 3.0)
        (repo / name / "config.pbtxt").write_text(textwrap.dedent(WARMUP_CONFIG))
        (repo / name / "warmup").mkdir()
    (repo / "warm_linked" / "warmup" / "x.bin").symlink_to(outside / "x.bin")
    (repo / "warm_copied" / "warmup" / "x.bin").write_bytes(data)

    async def scenario() -> None:
        async with Engine.from_repository(repo, load=["good", "warm_linked", "warm_copied"]) as engine:
            reason = failure(engine, "warm_linked")
            assert "model_warmup file 'warm_linked/warmup/x.bin'" in reason and LEAVES in reason
            assert (await engine.infer("warm_copied", {"x": X})).outputs["y"].tolist() == [[3.0, 3.0, 3.0]]
            await assert_good_serves(engine)

    run(scenario)


def test_a_drift_profile_linked_out_of_the_repository_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = iris_repository(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(repo / "iris", repo / "iris_linked")
    config = repo / "iris_linked" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "iris"', 'name: "iris_linked"'))
    shutil.copy(EXAMPLES / "iris" / "1.profile.json", repo / "iris" / "1.profile.json")
    shutil.copy(EXAMPLES / "iris" / "1.profile.json", outside / "1.profile.json")
    (repo / "iris_linked" / "1.profile.json").symlink_to(outside / "1.profile.json")
    rows = {"input-0": np.tile(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32), (10, 1))}

    async def scenario() -> None:
        async with Engine.from_repository(repo, load="*", config={"drift": {"window_rows": 10}}) as engine:
            await engine.infer("iris_linked", rows)
            await engine.infer("iris", rows)
            drift = engine.operations.drift
            # One drift thread takes requests in order: once iris's window is done, iris_linked's is decided.
            await wait_until_async(lambda: drift.latest(), timeout_s=20, what="iris's first drift window")
            assert [(r.model, r.version) for r in drift.latest()] == [("iris", "1")]
            assert await engine.infer("iris_linked", rows)  # the model itself still serves

    with caplog.at_level(logging.WARNING, logger="modelserve.observability.drift"):
        run(scenario)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("drift profile 'iris_linked/1.profile.json'" in w and LEAVES in w for w in warnings), warnings


def test_an_aliases_file_linked_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    outside_aliases = outside / "aliases.json"
    outside_aliases.write_text('{"production": {"version": "1", "history": []}}\n')
    (repo / "good" / "aliases.json").symlink_to(outside_aliases)

    async def scenario() -> None:
        async with Engine.from_repository(repo, load=["good"]) as engine:
            with pytest.raises(ModelServeError) as read:
                await engine.infer("good", {"x": X}, version="production")
            assert read.value.code is ErrorCode.INTERNAL
            assert (
                "model 'good': aliases.json 'good/aliases.json'" in read.value.message and LEAVES in read.value.message
            )
            with pytest.raises(ModelServeError) as write:
                await engine.dataplane.set_alias("good", "canary", "1")
            assert LEAVES in write.value.message
            assert (await engine.infer("good", {"x": X}, version="1")).outputs["y"].tolist() == [[2.0, 2.0, 2.0]]

    run(scenario)
    assert outside_aliases.read_text() == '{"production": {"version": "1", "history": []}}\n'


def test_allow_symlinks_follows_links_inside_the_repository_but_never_out(tmp_path: Path) -> None:
    repo, outside = folders(tmp_path)
    write_onnx_scale(repo / "shared" / "weights" / "model.onnx", 5.0)
    (repo / "inner" / "1").mkdir(parents=True)
    (repo / "inner" / "1" / "model.onnx").symlink_to(Path("..", "..", "shared", "weights", "model.onnx"))
    write_onnx_scale(outside / "model.onnx", 3.0)
    (repo / "outer" / "1").mkdir(parents=True)
    (repo / "outer" / "1" / "model.onnx").symlink_to(outside / "model.onnx")

    # By default every link is refused, with the setting that would allow this one.
    reason = refused(repo, "inner")
    assert "'inner/1/model.onnx' is a symbolic link (to 'shared/weights/model.onnx' in the repository)" in reason
    assert "set repository.allow_symlinks: true" in reason

    async def scenario() -> None:
        config = {"repository": {"allow_symlinks": True}}
        async with Engine.from_repository(repo, load=["good", "inner", "outer"], config=config) as engine:
            assert (await engine.infer("inner", {"x": X})).outputs["y"].tolist() == [[5.0, 5.0, 5.0]]
            reason = failure(engine, "outer")
            assert "'outer/1/model.onnx'" in reason and LEAVES in reason
            assert "whatever repository.allow_symlinks says" in reason
            await assert_good_serves(engine)

    run(scenario)


def test_the_server_reports_a_model_linked_out_as_failed_and_serves_the_others(tmp_path: Path) -> None:
    repo = iris_repository(tmp_path)
    outside = tmp_path / "outside"
    write_onnx_scale(outside / "scaled" / "1" / "model.onnx", 3.0)
    (repo / "scaled").symlink_to(outside / "scaled", target_is_directory=True)
    # Readiness is strict (every model asked to load is READY), so the server is only waited on for live.
    with running_server(repo, wait_ready=False) as server:

        def settled() -> dict[str, dict[str, str]] | None:
            index = {m["name"]: m for m in httpx.post(f"{server.http_url}/v2/repository/index").json()}
            states = {m.get("state") for m in index.values()}
            return index if states <= {"READY", "FAILED"} and len(index) == 2 else None

        index = wait_until(settled, timeout_s=60, interval_s=0.05, what="both models to finish loading")
        assert index["iris"]["state"] == "READY"
        assert index["scaled"]["state"] == "FAILED"
        assert "model folder 'scaled'" in index["scaled"]["reason"] and LEAVES in index["scaled"]["reason"]
        infer = httpx.post(
            f"{server.http_url}/v2/models/iris/infer",
            json={"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]},
        )
        assert infer.status_code == 200, infer.text
        assert httpx.get(f"{server.http_url}/v2/models/iris/ready").status_code == 200
