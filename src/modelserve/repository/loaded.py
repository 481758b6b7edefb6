"""A loaded model version: its config, signature, runtime instances, scheduler and statistics."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelserve.core.signature import ModelSignature
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.repository.model_config import ModelConfig
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.scheduler import Scheduler

__all__ = ["LoadedVersion", "VersionState"]


class VersionState(enum.StrEnum):
    """States reported by the repository index (Triton's names)."""

    UNKNOWN = "UNKNOWN"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
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

    @property
    def is_ready(self) -> bool:
        return self.scheduler.is_ready
