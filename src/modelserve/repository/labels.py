"""Classification labels: an output's ``label_filename`` in config.pbtxt names a text file in the model
folder, one label per line, line ``i`` naming class index ``i`` (Triton's label files).

Read once per load, through the repository jail (``core/paths.inside``): a label file linked out of the
repository, or named with a path that leaves the model folder, fails the load naming the output. The file
is bounded before it is read (:data:`MAX_LABEL_FILE_BYTES`), so a label file cannot make a load allocate
without limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from modelserve.core.errors import ModelLoadError
from modelserve.core.paths import inside
from modelserve.repository.model_config import ModelConfig

__all__ = ["MAX_LABEL_FILE_BYTES", "read_labels"]

# Ten times ImageNet-21k's label file; a larger one is a mistake, not a label set.
MAX_LABEL_FILE_BYTES = 16 * 2**20


def read_labels(
    config: ModelConfig, model_dir: Path, *, root: Path, allow_symlinks: bool
) -> Mapping[str, tuple[str, ...]]:
    """The labels of each output that names a ``label_filename``, by output name.

    Raises :class:`ModelLoadError` (stage "config") naming the output and the file when the file is
    missing, outside the model folder, too large or not UTF-8 text."""
    labels: dict[str, tuple[str, ...]] = {}
    for output in config.output:
        if not output.label_filename:
            continue
        owner = f"model '{config.name}' output '{output.name}': label_filename '{output.label_filename[:128]}'"
        relative = Path(output.label_filename)
        if relative.is_absolute() or ".." in relative.parts:
            raise ModelLoadError(
                f"{owner} must name a file inside the model folder (no absolute path, no '..')", stage="config"
            )
        path = inside(
            root, model_dir / relative, what=owner, must_exist=False, allow_symlinks=allow_symlinks, stage="config"
        )
        if not path.is_file():
            raise ModelLoadError(
                f"{owner} is not a file in the model folder; put it beside config.pbtxt or remove the field",
                stage="config",
            )
        size = path.stat().st_size
        if size > MAX_LABEL_FILE_BYTES:
            raise ModelLoadError(
                f"{owner} holds {size} bytes, more than the {MAX_LABEL_FILE_BYTES} a label file may hold",
                stage="config",
            )
        try:
            text = path.read_bytes()[: MAX_LABEL_FILE_BYTES + 1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{owner} is not UTF-8 text (byte {exc.start})", stage="config") from None
        except OSError as exc:
            raise ModelLoadError(f"{owner} cannot be read: {type(exc).__name__}", stage="config") from None
        # One label per line, as Triton reads them (std::getline): a final newline adds no empty label.
        lines = text.split("\n")
        labels[output.name] = tuple(lines[:-1] if text.endswith("\n") or not text else lines)
    return labels
