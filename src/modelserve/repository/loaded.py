"""A loaded model version: its config, signature, runtime instances, scheduler and statistics."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelserve.core.signature import ModelSignature
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.repository.model_config import ModelConfig
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.scheduler import Scheduler

__all__ = ["LoadedVersion", "VersionState"]


class VersionState(enum.StrEnum):
    r"""The lifecycle of a model version, as the repository index reports it::

        UNKNOWN -> LOADING -> VERIFYING -> WARMING -> READY -> DRAINING -> UNLOADED
                      \___________\___________\--> FAILED (with the reason)

    LOADING: the config is read, checksums (SHA256SUMS) are checked, runtime instances load.
    VERIFYING: the config is checked against what the model file declares; every instance is healthy.
    WARMING: ``model_warmup`` requests run on every instance.
    READY: serving. DRAINING: replaced or unloading; refuses new requests while admitted ones finish.
    UNLOADED: released. FAILED: a load that did not reach READY; nothing that was serving changed.
    UNAVAILABLE: loaded, but no instance can serve right now (e.g. its worker process is being replaced).

    Invariants: one load of a model at a time (single-flight); a new version is published only at READY,
    in one assignment, and the versions it replaces drain before they unload.
    """

    UNKNOWN = "UNKNOWN"
    LOADING = "LOADING"
    VERIFYING = "VERIFYING"
    WARMING = "WARMING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class LoadedVersion:
    name: str
    version: str
    config: ModelConfig
    signature: ModelSignature
    runtimes: list[Runtime]
    scheduler: Scheduler
    statistics: ModelVersionStatistics
    load_ns: int = 0
    warmup_ns: int = 0
    # How ``statistics.memory_bytes`` was measured (``repository.memory.version_memory``'s source).
    memory_source: str = ""
    # Classification labels by output name (``label_filename``; repository/labels.py).
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_ready(self) -> bool:
        return self.scheduler.is_ready
