"""Reading the repository folder: which models exist and which numeric version folders each has.

Non-numeric version folders are skipped (Triton does the same) and so are model folders whose name
is not a valid model name. Listing only looks at names (and ``stat``s them): whether a folder stays
inside the repository is checked when it loads (``core/paths.py``), so a model folder that is a
symbolic link out of the repository is listed, and FAILED with the reason when asked to load.
:class:`RepositoryListing` keeps the list of models between calls, because the index and every
``/metrics`` scrape ask for it on the event loop; it warns once per skipped folder.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from modelserve.core.errors import ValidationError
from modelserve.core.names import check_model_name

__all__ = ["ModelFolders", "RepositoryListing", "folder_contents", "list_models", "list_versions", "scan_models"]

log = logging.getLogger(__name__)

# A directory's mtime moves in steps of the file system's timestamp granularity (a kernel tick on ext4
# and tmpfs, 1 s on some network file systems, 2 s on FAT). A folder added in the same step as the scan
# that preceded it leaves the mtime unchanged, so a listing is trusted only once its scan started
# this long after the mtime it saw ("racy git" has the same problem and the same answer).
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class ModelFolders:
    names: list[str]  # valid model names, sorted
    skipped: list[str]  # folders whose name is not a valid model name


def scan_models(root: Path) -> ModelFolders:
    """The folders under ``root`` (hidden ones ignored). Blocking. Raises ``OSError`` (e.g.
    ``FileNotFoundError``) if ``root`` cannot be listed."""
    names: list[str] = []
    skipped: list[str] = []
    # A model folder that is a symbolic link (even one leaving the repository) is listed like any other:
    # its load refuses it (loader.py checks it before anything under it is read), so it shows in the index
    # as FAILED with the link and the fix. Skipping it here with a log line would make a model the operator
    # put there silently absent from the index, /metrics and the load API ("unknown model"), which is harder
    # to diagnose; is_dir() follows the link, but a stat reads nothing outside the repository.
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            names.append(check_model_name(entry.name))
        except ValidationError:
            skipped.append(entry.name)
    return ModelFolders(names=names, skipped=skipped)


def list_models(root: Path) -> list[str]:
    """Model folder names under ``root``, sorted. Raises ``FileNotFoundError`` if ``root`` is missing."""
    return scan_models(root).names


class RepositoryListing:
    """The model names under ``root``, listed again only when ``root`` itself changed.

    Each call costs one ``stat`` of ``root``; the folder is listed again when its inode, mtime or link
    count differ from the last listing's, or while that listing is too close to the mtime to trust (see
    ``_RACY_WINDOW_NS``). Adding, removing or renaming a model folder changes ``root``'s mtime; a change
    inside a model folder does not, and does not change the list either. A missing or unreadable
    ``root`` lists no models. Skipped folder names are logged once per name for the listing's lifetime.
    Not thread-safe: use from one thread (the event loop).
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._key: tuple[int, int, int] | None = None
        self._is_settled = False
        self._names: list[str] = []
        self._warned: set[str] = set()

    def names(self) -> list[str]:
        """Model folder names, sorted (a new list each call)."""
        try:
            stat = self._root.stat()
        except OSError:
            self._key, self._names = None, []
            return []
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_nlink)
        if key == self._key and self._is_settled:
            return list(self._names)
        # Wall time, not the injected monotonic clock: it is compared with a file system timestamp.
        started_ns = time.time_ns()
        try:
            folders = scan_models(self._root)
        except OSError:
            self._key, self._names = None, []
            return []
        for name in folders.skipped:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("skipping folder %r in the model repository: not a valid model name", name)
        self._key, self._names = key, folders.names
        self._is_settled = started_ns - stat.st_mtime_ns > _RACY_WINDOW_NS
        return list(folders.names)


def list_versions(model_dir: Path) -> list[int]:
    """Numeric version folders of one model."""
    versions = []
    for entry in model_dir.iterdir():
        if entry.is_dir() and entry.name.isdigit():
            versions.append(int(entry.name))
        elif entry.is_dir() and not entry.name.startswith((".", "_")):
            log.warning("model %s: ignoring non-numeric version folder %r", model_dir.name, entry.name)
    return versions


# A load error lists what a version folder holds, so a misnamed model file is seen at once; bounded, since a
# folder may hold thousands of entries (data files) and the message goes to the index and the logs.
_LISTED_ENTRIES = 10
_LISTED_NAME_CHARS = 64


def folder_contents(folder: Path) -> str:
    """What ``folder`` holds, for a message: sorted names (folders with a trailing ``/``, links not
    followed), the first 10 and how many more; "nothing" when empty, "(cannot be listed)" on an OSError."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(
                entry.name[:_LISTED_NAME_CHARS] + ("/" if entry.is_dir(follow_symlinks=False) else "")
                for entry in entries
            )
    except OSError:
        return "(cannot be listed)"
    if not names:
        return "nothing"
    more = len(names) - _LISTED_ENTRIES
    return ", ".join(names[:_LISTED_ENTRIES]) + (f", ... ({more} more)" if more > 0 else "")
