"""The index of models: one record per model with its serving versions and its lifecycle state, and
the queries every layer asks (what serves ``name``/``version``, is it loaded, is everything ready).

Transitions of a record (``VersionState`` in ``loaded.py`` draws the whole state machine)::

    begin_load:  nothing serves -> LOADING (versions that serve keep serving)
    fail:        nothing serves -> FAILED with the reason (versions that serve keep serving)
    publish:     -> READY; the new versions replace the old ones in one assignment
    withdraw:    -> UNLOADED; nothing serves from here
    start_draining / drained: replaced versions show DRAINING until they have unloaded

Invariants: ``versions`` holds only versions that are completely built and started, so a request never
sees a half-loaded model; a failed load changes ``versions`` not at all. Versions on their way in
(LOADING, VERIFYING, WARMING, FAILED) or out (DRAINING) are kept apart, in ``transient``, for the index.

Use from the event loop thread only, except :meth:`ModelRecord.report`, which the loading thread calls
(plain dict writes, which the index reads from the loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelserve.config import ControlMode
from modelserve.core import triton_texts
from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, RoutingError
from modelserve.repository.loaded import LoadedVersion, VersionState
from modelserve.repository.scan import RepositoryListing

__all__ = ["IndexEntry", "ModelIndex", "ModelRecord"]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of the repository index. ``memory_source`` says how ``memory_bytes`` was found out: the
    runtimes' ``MemoryFootprint.source`` values (``worker-rss``, ``file-size``, ``pickled-size``,
    ``floor``), joined with ``+`` when a version's instances were measured in different ways."""

    name: str
    version: str
    state: VersionState
    reason: str
    memory_bytes: int = 0
    memory_source: str = ""
    load_ms: float = 0.0
    warmup_ms: float = 0.0
    cold_start_ms: float = 0.0


@dataclass(slots=True)
class ModelRecord:
    """What the server knows of one model. The transitions are the methods below; see the module docstring."""

    versions: dict[str, LoadedVersion] = field(default_factory=dict)
    state: VersionState = VersionState.UNKNOWN
    reason: str = ""
    # Versions on their way in (LOADING, VERIFYING, WARMING), that failed to (FAILED), or on their way out
    # (DRAINING): written by the loading thread, read by the index on the loop (plain dict writes).
    transient: dict[str, tuple[VersionState, str]] = field(default_factory=dict)
    last_used_ns: int = 0
    cold_start_ns: int = 0  # how long the request that loaded it on demand waited (0: not loaded on demand)
    memory_bytes: int = 0  # of the serving versions, as their runtimes reported at load; 0 when none serves
    measured_bytes: int = 0  # the last measurement, kept after unload to size the next load

    def begin_load(self) -> None:
        """A load starts: the outcome of earlier loads is forgotten (versions still draining stay)."""
        self.transient = {v: st for v, st in self.transient.items() if st[0] is VersionState.DRAINING}
        if not self.versions:
            self.state = VersionState.LOADING

    def report(self, version: str, state: VersionState, reason: str = "") -> None:
        """Progress of a version on its way in. Called from the loading thread."""
        self.transient[version] = (state, reason)

    def fail(self, reason: str) -> None:
        """A load failed. Only a model with nothing serving turns FAILED; serving versions are untouched."""
        if not self.versions:
            self.state, self.reason = VersionState.FAILED, reason

    def publish(self, versions: dict[str, LoadedVersion], *, now_ns: int) -> list[LoadedVersion]:
        """The switch: from here new requests go to ``versions`` (one assignment). Returns the versions
        they replace, which the caller drains and unloads."""
        old = self.versions
        self.versions, self.state, self.reason = versions, VersionState.READY, ""
        for number in versions:
            self.transient.pop(number, None)
        self.last_used_ns = now_ns
        self.memory_bytes = self.measured_bytes = sum(v.statistics.memory_bytes for v in versions.values())
        return list(old.values())

    def withdraw(self) -> list[LoadedVersion]:
        """Stop serving (UNLOADED). Returns the versions that served, which the caller drains and unloads."""
        old = self.versions
        self.versions, self.state, self.reason = {}, VersionState.UNLOADED, "unloaded"
        self.memory_bytes = 0
        return list(old.values())

    def start_draining(self, versions: list[LoadedVersion]) -> None:
        for version in versions:
            if version.version not in self.versions:
                self.transient[version.version] = (VersionState.DRAINING, "replaced or unloading")

    def drained(self, version: str) -> None:
        if self.transient.get(version, (None,))[0] is VersionState.DRAINING:
            del self.transient[version]


class ModelIndex:
    """Every model's record, and the repository folder's listing (cached; see ``RepositoryListing``).

    ``control_mode`` only words the hint of a "not loaded" error: it names the way to load a model that
    this server accepts (the load API in explicit mode only)."""

    def __init__(self, root: Path, clock: Clock, *, control_mode: ControlMode = ControlMode.EXPLICIT) -> None:
        self._root = root
        self._clock = clock
        self._control_mode = control_mode
        self._records: dict[str, ModelRecord] = {}
        self._listing = RepositoryListing(root)

    # -- records (for the loader, eviction and unload) ---------------------------------------------

    def find(self, name: str) -> ModelRecord | None:
        return self._records.get(name)

    def record(self, name: str) -> ModelRecord:
        """The record of ``name``, made (UNKNOWN) on first use."""
        return self._records.setdefault(name, ModelRecord())

    def records(self) -> dict[str, ModelRecord]:
        """A snapshot (a new dict) of every record, by model name."""
        return dict(self._records)

    def has_folder(self, name: str) -> bool:
        """Whether the repository holds a folder ``name`` now (one stat)."""
        return (self._root / name / "").is_dir()

    # -- queries -------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Models in the repository folder, whether loaded or not (cached until the folder changes)."""
        return self._listing.names()

    def is_known(self, name: str) -> bool:
        return name in self._records or self.has_folder(name)

    def is_loaded(self, name: str) -> bool:
        record = self._records.get(name)
        return record is not None and bool(record.versions)

    def get(self, name: str, version: str) -> LoadedVersion:
        """The loaded version to serve ``name``/``version`` ("" = the highest ready version); counts as a
        use of the model for LRU eviction and idle unloading.

        Raises :class:`RoutingError`: NOT_FOUND for an unknown model or version, UNAVAILABLE for a known
        model that is not loaded or not ready.
        """
        record = self._records.get(name)
        if record is None or not record.versions:
            if record is not None and record.state is VersionState.LOADING:
                raise RoutingError(
                    triton_texts.no_available_versions(name, f"model '{name}' is loading; retry shortly"),
                    code=ErrorCode.UNAVAILABLE,
                    retry_after_s=1,
                )
            if record is not None or self.is_known(name):
                failed = record is not None and record.state is VersionState.FAILED
                reason = f": {record.reason}" if record is not None and record.reason else ""
                hint = f"model '{name}' {'failed to load' if failed else 'is not loaded'}{reason}; "
                raise RoutingError(
                    triton_texts.no_available_versions(name, hint + _load_hint(name, self._control_mode)),
                    code=ErrorCode.UNAVAILABLE,
                )
            raise RoutingError(
                triton_texts.unknown_model(
                    name, "no such model in the repository; GET /v2/repository/index lists the models"
                )
            )
        record.last_used_ns = self._clock.now_ns()
        if not version:
            return record.versions[max(record.versions, key=int)]
        loaded = record.versions.get(version)
        if loaded is None:
            hint = (
                f"model '{name}' has no version {version} loaded; loaded versions: {sorted(record.versions, key=int)}"
            )
            on_its_way = record.transient.get(version)
            if on_its_way is not None:  # loading, failed or draining: Triton's "not at ready state"
                state, why = on_its_way
                text = triton_texts.version_not_ready(
                    name, version, f"version {version} is {state.value}{': ' + why if why else ''}; {hint}"
                )
            else:
                text = triton_texts.unknown_version(name, version, hint)
            raise RoutingError(text)
        return loaded

    def has_version(self, name: str, version: str) -> bool:
        record = self._records.get(name)
        return record is not None and version in record.versions

    def loaded_versions(self, name: str | None = None) -> list[LoadedVersion]:
        names = [name] if name is not None else sorted(self._records)
        return [
            loaded
            for model_name in names
            if model_name in self._records
            for _, loaded in sorted(self._records[model_name].versions.items(), key=lambda kv: int(kv[0]))
        ]

    def all_ready(self) -> bool:
        """Strict readiness: every model asked to load is loaded and every loaded version can serve. A model
        unloaded on purpose does not count (Triton: "Okay if model is not ready due to unload")."""
        return all(
            record.state is VersionState.READY and all(v.is_ready for v in record.versions.values())
            for record in self._records.values()
            if record.state not in _NOT_EXPECTED
        )

    def not_ready(self) -> list[tuple[str, VersionState, str]]:
        """The models that keep :meth:`all_ready` false, as (name, state, reason), by name: a model whose
        record is not READY with its reason, or the first loaded version that cannot serve. Safe from any
        thread: ``sorted``/``list`` copy each dict in one step under the GIL, and a record read while it changes
        gives one or the other state."""
        found: list[tuple[str, VersionState, str]] = []
        for name, record in sorted(self._records.items(), key=lambda item: item[0]):
            if record.state in _NOT_EXPECTED:
                continue
            if record.state is not VersionState.READY:
                found.append((name, record.state, record.reason))
                continue
            for loaded in list(record.versions.values()):
                if not loaded.is_ready:
                    state, reason = _serving_state(loaded)
                    found.append((name, state, reason))
                    break
        return found

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """One entry per version that serves or is on its way in or out, with its lifecycle state; a model
        with none gets one entry without a version (UNKNOWN, UNLOADED, FAILED with the reason)."""
        entries: list[IndexEntry] = []
        for name in sorted(set(self.model_names()) | set(self._records)):
            record = self._records.get(name)
            versions: dict[str, IndexEntry] = {}
            if record is not None:
                for version, (state, reason) in list(record.transient.items()):
                    versions[version] = IndexEntry(name, version, state, reason)
                for version, loaded in list(record.versions.items()):
                    state, reason = _serving_state(loaded)
                    versions[version] = IndexEntry(
                        name,
                        version,
                        state,
                        reason,
                        memory_bytes=loaded.statistics.memory_bytes,
                        memory_source=loaded.memory_source,
                        load_ms=loaded.load_ns / 1e6,
                        warmup_ms=loaded.warmup_ns / 1e6,
                        cold_start_ms=record.cold_start_ns / 1e6,
                    )
            if not versions:
                state = record.state if record is not None else VersionState.UNKNOWN
                versions[""] = IndexEntry(name, "", state, record.reason if record is not None else "")
            for _, entry in sorted(versions.items(), key=lambda kv: int(kv[0] or 0)):
                if not ready_only or entry.state is VersionState.READY:
                    entries.append(entry)
        return entries


# States of a model nobody expects to serve: never asked to load, or unloaded on purpose.
_NOT_EXPECTED = frozenset({VersionState.UNKNOWN, VersionState.UNLOADED})


def _load_hint(name: str, control_mode: ControlMode) -> str:
    """How to get ``name`` loaded on a server in ``control_mode``: only explicit mode takes the load API."""
    if control_mode is ControlMode.EXPLICIT:
        return f"load it with POST /v2/repository/models/{name}/load"
    if control_mode is ControlMode.POLL:
        return "fix it in the model repository: the server loads it again when the repository changes (poll mode)"
    return (
        "this server loads models only at start (--model-control-mode none): fix the model in the repository "
        "and restart the server, or run it with --model-control-mode explicit to load models through the API"
    )


def _serving_state(loaded: LoadedVersion) -> tuple[VersionState, str]:
    """READY; FAILED when every instance has failed for good (a python worker that kept dying), with
    their reasons, until a reload; else UNAVAILABLE (an instance is recovering, e.g. being replaced)."""
    if loaded.is_ready:
        return VersionState.READY, ""
    failures = [runtime.failure_reason for runtime in loaded.runtimes]
    if failures and all(failures):
        return VersionState.FAILED, "; ".join(dict.fromkeys(failures))
    return VersionState.UNAVAILABLE, "not healthy"
