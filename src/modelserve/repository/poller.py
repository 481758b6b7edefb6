"""Poll mode: notice what changed in the repository folder and apply it, like Triton's
``--model-control-mode poll``.

Each poll takes a fingerprint of every model folder (config.pbtxt and every file of every numeric version
folder: name, size, modification time) and compares it with the fingerprint taken when the model was last
loaded. A new model folder loads; a removed one unloads; a changed one reloads, which is a zero-downtime
swap (new versions load beside the old ones, which drain) and, if it fails, leaves the serving versions
as they were. Reading the folder happens on a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from modelserve.repository.manager import ModelManager
from modelserve.repository.scan import list_models

__all__ = ["RepositoryPoller", "fingerprint"]

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(model_dir: Path) -> Fingerprint:
    """Name, size and mtime of config.pbtxt and of every file under the numeric version folders."""
    entries: list[tuple[str, int, int]] = []
    for top in sorted(model_dir.iterdir()):
        if top.is_file() and top.name == "config.pbtxt":
            stat = top.lstat()  # links are not followed: nothing outside the repository is looked at
            entries.append((top.name, stat.st_size, stat.st_mtime_ns))
        elif top.is_dir() and top.name.isdigit():
            entries.append((top.name + "/", 0, 0))
            for folder, _, files in os.walk(top):
                for name in sorted(files):
                    path = Path(folder) / name
                    stat = path.lstat()
                    entries.append((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class RepositoryPoller:
    def __init__(self, manager: ModelManager, root: Path) -> None:
        self._manager = manager
        self._root = root
        self._seen: dict[str, Fingerprint] = {}

    def _snapshot(self) -> dict[str, Fingerprint]:
        snapshot = {}
        for name in list_models(self._root):
            try:
                snapshot[name] = fingerprint(self._root / name)
            except OSError:
                continue  # changing under us: look again next time
        return snapshot

    async def remember_current(self) -> None:
        """Take the fingerprints the initial load saw, so the first poll does not reload everything."""
        self._seen = await asyncio.to_thread(self._snapshot)

    async def poll_once(self) -> None:
        """One look at the repository; the engine calls it every ``repository.poll_secs``."""
        current = await asyncio.to_thread(self._snapshot)
        for name in sorted(set(self._seen) - set(current)):
            log.info("poll: model %s was removed from the repository; unloading", name)
            await self._manager.unload(name)
            del self._seen[name]
        for name, print_ in sorted(current.items()):
            if self._seen.get(name) == print_:
                continue
            log.info("poll: model %s %s; loading", name, "changed" if name in self._seen else "appeared")
            self._seen[name] = print_  # a failed load is not retried until the files change again
            try:
                await self._manager.load(name)
            except Exception as exc:  # reported in the index; the serving versions are untouched
                log.warning("poll: loading model %s failed: %s", name, exc)
