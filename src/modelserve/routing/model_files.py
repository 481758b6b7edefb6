"""The small JSON files routing keeps beside a model (``aliases.json``, ``routing.json``): each path is
jail-checked before it is read or written, and a write is atomic (a temporary file in the same folder,
renamed over the old one), so a crash never leaves half a file and a reader never sees one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from modelserve.core.errors import ErrorCode, ModelLoadError, ModelServeError
from modelserve.core.paths import inside

__all__ = ["model_file", "write_json_atomically"]


def model_file(root: Path, model: str, filename: str, *, allow_symlinks: bool) -> Path:
    """The checked, resolved path of ``<root>/<model>/<filename>`` (it need not exist yet). Raises
    :class:`ModelServeError` (INTERNAL: the repository is wrong, not the request) naming a refused link."""
    try:
        return inside(
            root,
            root / model / filename,
            what=f"model '{model}': {filename}",
            allow_symlinks=allow_symlinks,
            must_exist=False,
            stage="config",
        )
    except ModelLoadError as exc:
        raise ModelServeError(exc.message, code=ErrorCode.INTERNAL) from exc


def write_json_atomically(path: Path, document: Any) -> None:
    """Write ``document`` as indented JSON to ``path`` (resolved, as :func:`model_file` returns it)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
