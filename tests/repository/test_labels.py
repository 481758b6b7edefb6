"""Label files (``label_filename``) read through the repository jail, as Triton reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.core.errors import ModelLoadError
from modelserve.repository import labels as labels_module
from modelserve.repository.labels import read_labels
from modelserve.repository.model_config import new_model_config


def _config(**label_files: str) -> object:
    config = new_model_config()
    config.name = "m"
    for output, filename in label_files.items():
        tensor = config.output.add()
        tensor.name = output
        tensor.label_filename = filename
    config.output.add().name = "unlabelled"
    return config


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a\nb\n", ("a", "b")), ("a\nb", ("a", "b")), ("a\n\nc\n", ("a", "", "c")), ("", ())],
    ids=["final-newline", "no-final-newline", "empty-line-kept", "empty-file"],
)
def test_one_label_per_line(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "labels.txt").write_text(text)
    read = read_labels(_config(y="labels.txt"), tmp_path / "m", root=tmp_path, allow_symlinks=False)
    assert dict(read) == {"y": expected}


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda folder: None, "is not a file in the model folder"),
        (lambda folder: (folder / "labels.txt").write_bytes(b"ok\n\xff\n"), "is not UTF-8 text (byte 3)"),
        (lambda folder: (folder / "labels.txt").symlink_to(folder.parent.parent / "secret.txt"), "labels.txt"),
    ],
    ids=["missing", "not-utf8", "link-out-of-the-repository"],
)
def test_a_bad_label_file_fails_the_load_naming_the_output(tmp_path: Path, setup: object, expected: str) -> None:
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret\n")
    setup(root / "m")  # type: ignore[operator]
    with pytest.raises(ModelLoadError) as raised:
        read_labels(_config(y="labels.txt"), root / "m", root=root, allow_symlinks=False)
    assert "output 'y'" in raised.value.message and expected in raised.value.message
    assert raised.value.stage == "config"
    assert "secret" not in raised.value.message


@pytest.mark.parametrize("name", ["../other/labels.txt", "/etc/passwd"])
def test_a_label_file_outside_the_model_folder_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "labels.txt").write_text("a\n")
    with pytest.raises(ModelLoadError, match="inside the model folder"):
        read_labels(_config(y=name), tmp_path / "m", root=tmp_path, allow_symlinks=False)


def test_a_label_file_over_the_bound_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(labels_module, "MAX_LABEL_FILE_BYTES", 8)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "labels.txt").write_text("0123456789\n")
    with pytest.raises(ModelLoadError, match="holds 11 bytes, more than the 8"):
        read_labels(_config(y="labels.txt"), tmp_path / "m", root=tmp_path, allow_symlinks=False)
