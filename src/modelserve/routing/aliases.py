"""Version aliases (``production``, ``canary``, any name), persisted beside the model.

``<repository>/<model>/aliases.json`` holds, per alias, the version it points at and the versions it
pointed at before (newest last), so a rollback is one step back. The file is written atomically (a
temporary file renamed over it), so a crash never leaves half a file; it survives restarts. The file
passes the repository's jail check (``core/paths.py``) before it is read or written: an ``aliases.json``
(or model folder) that is a symbolic link out of the repository is refused, never followed.

A request names an alias where it names a version (REST ``/v2/models/iris/versions/production/infer``,
gRPC ``model_version: "production"``). A request with no version goes to ``production`` when it is set and
its version is loaded, else to the highest loaded version.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modelserve.core.errors import ErrorCode, ModelServeError, ValidationError
from modelserve.routing.model_files import model_file, write_json_atomically

__all__ = ["ALIAS_FILENAME", "DEFAULT_ALIAS", "Alias", "AliasStore", "check_alias_name"]

ALIAS_FILENAME = "aliases.json"
DEFAULT_ALIAS = "production"
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_MAX_HISTORY = 32


def check_alias_name(name: str) -> str:
    if not _ALIAS.fullmatch(name):
        shown = name[:64].encode("unicode_escape").decode("ascii")
        raise ValidationError(f"invalid alias '{shown}': use 1-64 letters, digits, '_' or '-', starting with a letter")
    return name


@dataclass(slots=True)
class Alias:
    version: str
    history: list[str] = field(default_factory=list)


class AliasStore:
    """Thread-safe: read from request threads and the loop, written by admin calls. ``allow_symlinks`` is
    ``repository.allow_symlinks`` (see ``core/paths.py``)."""

    def __init__(self, root: Path, *, allow_symlinks: bool = False) -> None:
        self._root = root
        self._allow_symlinks = allow_symlinks
        self._cache: dict[str, dict[str, Alias]] = {}
        self._lock = threading.Lock()

    def _path(self, model: str) -> Path:
        """The checked, resolved path of ``model``'s aliases file (it need not exist yet)."""
        return model_file(self._root, model, ALIAS_FILENAME, allow_symlinks=self._allow_symlinks)

    def _read(self, model: str) -> dict[str, Alias]:
        path = self._path(model)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelServeError(
                f"model '{model}': {ALIAS_FILENAME} cannot be read ({type(exc).__name__}); fix or remove it",
                code=ErrorCode.INTERNAL,
            ) from exc
        aliases = {}
        for name, entry in raw.items() if isinstance(raw, dict) else ():
            if isinstance(entry, dict) and isinstance(entry.get("version"), str):
                history = [v for v in entry.get("history", []) if isinstance(v, str)]
                aliases[name] = Alias(entry["version"], history)
        return aliases

    def aliases(self, model: str) -> dict[str, Alias]:
        """The model's aliases (read from disk once, then cached). Blocking the first time: file I/O."""
        with self._lock:
            cached = self._cache.get(model)
        if cached is None:
            cached = self._read(model)
            with self._lock:
                self._cache.setdefault(model, cached)
        return cached

    def forget(self, model: str) -> None:
        """Drop the cached aliases of ``model``: the next read comes from the file (another process wrote it)."""
        with self._lock:
            self._cache.pop(model, None)

    def is_cached(self, model: str) -> bool:
        return model in self._cache

    def _write(self, model: str, aliases: dict[str, Alias]) -> None:
        document = {name: {"version": a.version, "history": a.history} for name, a in sorted(aliases.items())}
        write_json_atomically(self._path(model), document)
        with self._lock:
            self._cache[model] = aliases

    def set(self, model: str, alias: str, version: str) -> Alias:
        """Point ``alias`` at ``version``, remembering where it pointed before. Blocking (file I/O)."""
        check_alias_name(alias)
        aliases = dict(self.aliases(model))
        previous = aliases.get(alias)
        history = [] if previous is None else [*previous.history, previous.version][-_MAX_HISTORY:]
        if previous is not None and previous.version == version:
            history = previous.history
        aliases[alias] = Alias(version, history)
        self._write(model, aliases)
        return aliases[alias]

    def rollback(self, model: str, alias: str) -> Alias:
        """Point ``alias`` back at the version it pointed at before. Raises when there is none."""
        check_alias_name(alias)
        aliases = dict(self.aliases(model))
        current = aliases.get(alias)
        if current is None or not current.history:
            raise ValidationError(
                f"model '{model}': alias '{alias}' has no earlier version to roll back to"
                + ("" if current is None else f" (it points at version {current.version} and has no history)")
            )
        aliases[alias] = Alias(current.history[-1], current.history[:-1])
        self._write(model, aliases)
        return aliases[alias]
