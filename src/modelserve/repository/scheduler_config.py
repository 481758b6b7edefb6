"""From a model's config to its scheduler: ``dynamic_batching`` picks the batcher, with Triton's fields.

| config.pbtxt | here |
|---|---|
| ``max_batch_size`` | most rows in one batch |
| ``dynamic_batching.max_queue_delay_microseconds`` | Triton policy: longest wait for a batch to fill |
| ``dynamic_batching.preferred_batch_size`` | Triton policy: sizes to dispatch at once when reached |
| ``dynamic_batching.preserve_ordering`` | responses leave in batch order |
| ``dynamic_batching.priority_levels``, ``default_priority_level`` | levels 1..N, 1 highest |
| ``dynamic_batching.default_queue_policy``, ``priority_queue_policy`` | per-level queue bound and timeout |
| ``parameters { key: "batch_policy" value: { string_value: "adaptive" or "triton" } }`` | this model's batch policy |

Without ``dynamic_batching`` (or with ``max_batch_size: 0``) a model gets the direct scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from modelserve.core.clock import Clock
from modelserve.core.errors import ModelLoadError
from modelserve.core.signature import ModelSignature
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.repository.model_config import ModelConfig
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.batch_policy import BatchPolicy
from modelserve.scheduling.batcher import DynamicBatchScheduler
from modelserve.scheduling.request_queue import LevelPolicy, PriorityQueues
from modelserve.scheduling.scheduler import DirectScheduler, Scheduler

__all__ = ["BATCH_POLICIES", "SchedulingDefaults", "build_scheduler"]

log = logging.getLogger(__name__)

BATCH_POLICIES = ("adaptive", "triton")


@dataclass(frozen=True, slots=True)
class SchedulingDefaults:
    max_queue_size: int
    batch_policy: str = "adaptive"
    max_queue_time_ns: int = 0
    inline_below_ns: int = 0


def _level_policy(raw: Any, defaults: SchedulingDefaults) -> LevelPolicy:
    # Triton's enum: REJECT = 0, DELAY = 1.
    return LevelPolicy(
        max_queue_size=int(raw.max_queue_size) if raw.max_queue_size > 0 else defaults.max_queue_size,
        max_queue_time_ns=defaults.max_queue_time_ns,
        default_timeout_us=int(raw.default_timeout_microseconds),
        delay_on_timeout=int(raw.timeout_action) == 1,
        allow_timeout_override=bool(raw.allow_timeout_override),
    )


def _queues(config: ModelConfig, defaults: SchedulingDefaults, owner: str) -> PriorityQueues:
    batching = config.dynamic_batching
    levels = int(batching.priority_levels) or 1
    default_level = int(batching.default_priority_level) or (levels if batching.priority_levels else 1)
    if not 1 <= default_level <= levels:
        raise ModelLoadError(
            f"{owner}: dynamic_batching.default_priority_level {default_level} is outside 1..{levels} "
            "(priority_levels)",
            stage="config",
        )
    base = _level_policy(batching.default_queue_policy, defaults)
    policies = dict.fromkeys(range(1, levels + 1), base)
    for level, raw in batching.priority_queue_policy.items():
        if not 1 <= int(level) <= levels:
            raise ModelLoadError(
                f"{owner}: dynamic_batching.priority_queue_policy has level {level}, outside 1..{levels}",
                stage="config",
            )
        policies[int(level)] = _level_policy(raw, defaults)
    return PriorityQueues(levels=levels, default_level=default_level, policies=policies, owner=owner)


def _policy_name(config: ModelConfig, defaults: SchedulingDefaults, owner: str) -> str:
    parameter = config.parameters.get("batch_policy")
    name = parameter.string_value if parameter is not None else defaults.batch_policy
    if name not in BATCH_POLICIES:
        raise ModelLoadError(
            f"{owner}: parameter batch_policy is '{name}'; use one of {', '.join(BATCH_POLICIES)}", stage="config"
        )
    return str(name)


def build_scheduler(
    config: ModelConfig,
    *,
    signature: ModelSignature,
    version: str,
    runtimes: list[Runtime],
    statistics: ModelVersionStatistics,
    defaults: SchedulingDefaults,
    clock: Clock,
) -> Scheduler:
    owner = f"model '{config.name}' version {version}"
    if not config.HasField("dynamic_batching") or config.max_batch_size <= 0:
        if config.HasField("dynamic_batching"):
            log.warning("%s: dynamic_batching needs max_batch_size > 0; requests run one at a time", owner)
        return DirectScheduler(
            signature=signature,
            version=version,
            runtimes=runtimes,
            statistics=statistics,
            max_queue_size=defaults.max_queue_size,
            max_queue_time_ns=defaults.max_queue_time_ns,
            inline_below_ns=defaults.inline_below_ns,
            clock=clock,
        )
    batching = config.dynamic_batching
    preferred = tuple(int(size) for size in batching.preferred_batch_size)
    bad = [size for size in preferred if not 1 <= size <= config.max_batch_size]
    if bad:
        raise ModelLoadError(
            f"{owner}: preferred_batch_size {bad} outside 1..{config.max_batch_size} (max_batch_size)", stage="config"
        )
    policy = BatchPolicy(
        max_batch_size=int(config.max_batch_size),
        preferred_batch_sizes=preferred,
        max_queue_delay_ns=int(batching.max_queue_delay_microseconds) * 1000,
        adaptive=_policy_name(config, defaults, owner) == "adaptive",
    )
    return DynamicBatchScheduler(
        signature=signature,
        version=version,
        runtimes=runtimes,
        statistics=statistics,
        policy=policy,
        queues=_queues(config, defaults, owner),
        preserve_ordering=bool(batching.preserve_ordering),
        clock=clock,
    )
