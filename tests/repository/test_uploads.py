"""Model files sent with a load request, staged in a folder of the server's own (repository/uploads.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.core.errors import ModelLoadError
from modelserve.repository import uploads as uploads_module
from modelserve.repository.uploads import UploadedModels


def test_staged_files_land_in_a_private_folder_and_go_when_replaced(tmp_path: Path) -> None:
    uploads = UploadedModels(tmp_path)
    first = uploads.stage("m", {"1/model.onnx": b"one", "1/sub/data.bin": b"two"})
    assert (first / "1" / "model.onnx").read_bytes() == b"one"
    assert (first / "1" / "sub" / "data.bin").read_bytes() == b"two"
    assert first.stat().st_mode & 0o077 == 0 and (first / "1" / "model.onnx").stat().st_mode & 0o077 == 0
    uploads.keep("m", first)
    second = uploads.stage("m", {"2/model.onnx": b"three"})
    uploads.keep("m", second)
    assert not first.exists() and second.exists()
    uploads.keep("m", None)  # unloaded, or loaded from the repository again
    assert not second.exists()
    uploads.close()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_load_discards_its_files_and_keeps_the_serving_ones(tmp_path: Path) -> None:
    uploads = UploadedModels(tmp_path)
    serving = uploads.stage("m", {"1/model.onnx": b"good"})
    uploads.keep("m", serving)
    failed = uploads.stage("m", {"1/model.onnx": b"bad"})
    uploads.discard(failed)
    assert not failed.exists() and (serving / "1" / "model.onnx").read_bytes() == b"good"


def test_two_names_for_one_path_write_nothing(tmp_path: Path) -> None:
    uploads = UploadedModels(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot be written"):
        uploads.stage("m", {"1/a": b"file", "1/a/b": b"under a file"})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_too_many_files_are_refused_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads_module, "MAX_FILES", 2)
    with pytest.raises(ModelLoadError, match="carries 3 files, more than the 2 allowed"):
        UploadedModels(tmp_path).stage("m", {f"1/f{k}": b"" for k in range(3)})
    assert list(tmp_path.iterdir()) == []
