"""Model files sent inside a load request (Triton's ``file:<version>/<name>`` load parameters), written to a
folder of the server's own before the model loads from it.

Off unless ``repository.allow_load_files`` is set: whoever may call the load API can then run code on
the server (a python model is a ``model.py``), so the setting belongs behind the gateway's
model-repository scope. What is checked before anything is written:

- each name is relative, ``<version>/<file>`` or deeper, made of plain components: no ``..``, no ``.``,
  no empty component, no NUL or backslash, at most :data:`MAX_COMPONENT_BYTES` bytes a component (the
  file system's NAME_MAX) and :data:`MAX_DEPTH` components; the first is a version number;
- at most :data:`MAX_FILES` files (their bytes are bounded by the request body limit already);
- so nothing lands beside the version folders: the load's ``config`` parameter is the config (and a
  label file or warm-up data cannot be sent this way).

Files are created with ``O_EXCL | O_NOFOLLOW`` in a fresh folder (mode 0700) under the staging root, so
nothing outside it is written or followed; the folder of a model's previous upload is removed when the
next load of that model, or its unload, replaces it, and the whole staging root at shutdown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from modelserve.core.errors import ModelLoadError

__all__ = ["MAX_COMPONENT_BYTES", "MAX_DEPTH", "MAX_FILES", "UploadedModels"]

MAX_FILES = 256
MAX_DEPTH = 8
MAX_COMPONENT_BYTES = 255


class UploadedModels:
    """The staging root: one folder per model whose last load brought its own files. Blocking calls
    (file writes); the manager runs them on a thread.

    ``base`` is where the staging root is made (``mkdtemp``: a fresh 0700 folder nobody else can have
    prepared), on the first upload."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._root: Path | None = None
        self._folders: dict[str, Path] = {}

    def stage(self, name: str, files: Mapping[str, bytes]) -> Path:
        """Write ``files`` (relative name -> content) into a new model folder for ``name`` and return it
        (``<root>/<unique>/<name>``). Raises :class:`ModelLoadError` (stage "config") naming the first
        file whose name is refused; nothing is written then."""
        if len(files) > MAX_FILES:
            raise ModelLoadError(
                f"the load request carries {len(files)} files, more than the {MAX_FILES} allowed",
                stage="config",
            )
        checked = [(_checked_parts(relative), content) for relative, content in files.items()]
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="modelserve-uploads-", dir=self._base))
        model_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=self._root)) / name
        model_dir.mkdir(mode=0o700)
        try:
            for parts, content in checked:
                folder = model_dir.joinpath(*parts[:-1])
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(folder / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
        except OSError as exc:
            shutil.rmtree(model_dir.parent, ignore_errors=True)
            raise ModelLoadError(
                f"the load request's files cannot be written ({type(exc).__name__}; two names for one file?)",
                stage="config",
            ) from None
        return model_dir

    def keep(self, name: str, model_dir: Path | None) -> None:
        """``name`` now serves from ``model_dir`` (None: from the repository); its previous upload goes."""
        previous = self._folders.pop(name, None)
        if model_dir is not None:
            self._folders[name] = model_dir
        if previous is not None and previous != model_dir:
            shutil.rmtree(previous.parent, ignore_errors=True)

    def discard(self, model_dir: Path) -> None:
        """Remove a staged folder that did not load."""
        if model_dir not in self._folders.values():
            shutil.rmtree(model_dir.parent, ignore_errors=True)

    def close(self) -> None:
        """Remove every staged folder (shutdown)."""
        self._folders.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def _checked_parts(relative: str) -> list[str]:
    shown = relative[:80] + ("..." if len(relative) > 80 else "")
    parts = relative.split("/")

    def refuse(why: str) -> ModelLoadError:
        return ModelLoadError(f"load parameter 'file:{shown}' {why}", stage="config")

    if "\\" in relative or "\x00" in relative:
        raise refuse("holds a backslash or NUL; use '/' between the version folder and the file name")
    if len(parts) < 2 or len(parts) > MAX_DEPTH:
        raise refuse(f"must name '<version>/<file>' (2 to {MAX_DEPTH} components), e.g. 'file:1/model.onnx'")
    for part in parts:
        if part in ("", ".", ".."):
            raise refuse("has an empty, '.' or '..' component; names stay inside the model folder")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise refuse(f"has a component longer than {MAX_COMPONENT_BYTES} bytes")
    if not parts[0].isascii() or not parts[0].isdigit():
        raise refuse("must start with a version folder number, e.g. 'file:1/model.onnx'")
    return parts
