"""One typed settings tree, read once in ``app.py`` and passed down.

Sources, later ones winning: defaults, then the YAML file given with ``--config``, then command-line
flags. Nothing below ``app.py`` reads the environment or a file of settings. An empty config serves the
bundled example models on 127.0.0.1.

Each group is one subsystem; every field says its unit in its name.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ControlMode",
    "GrpcSettings",
    "HttpSettings",
    "LimitSettings",
    "RepositorySettings",
    "SchedulingSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "load_settings",
]


class SettingsError(Exception):
    """A settings file or flag is invalid; the message names the setting."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlMode(enum.StrEnum):
    NONE = "none"
    EXPLICIT = "explicit"
    POLL = "poll"


class ServerSettings(_Group):
    host: str = Field("127.0.0.1", description="Address both listeners bind; 127.0.0.1 unless you mean it.")
    drain_timeout_s: float = Field(30.0, gt=0, description="On SIGTERM, longest wait for in-flight requests.")
    max_inflight_requests: int = Field(
        2048, ge=1, description="Global cap on admitted requests; over it a request gets 503 at once."
    )


class HttpSettings(_Group):
    port: int = Field(8000, ge=0, le=65535, description="REST port (0 = pick a free one).")
    enabled: bool = True


class GrpcSettings(_Group):
    port: int = Field(8001, ge=0, le=65535, description="gRPC port (0 = pick a free one).")
    enabled: bool = True
    worker_threads: int = Field(
        32, ge=1, description="Threads serving gRPC calls; each waits while its request is queued or runs."
    )
    max_concurrent_rpcs: int = Field(
        4096, ge=1, description="Calls accepted at once; over it grpcio answers RESOURCE_EXHAUSTED."
    )


class LimitSettings(_Group):
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body, after decompression (bytes)."
    )
    max_body_chunks: int = Field(
        65536, ge=16, description="Most HTTP body pieces one request may arrive in (CVE-2025-23310)."
    )
    max_tensor_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest single tensor a request may declare (bytes)."
    )
    max_json_depth: int = Field(64, ge=2, description="Deepest nesting of a JSON tensor's 'data'.")
    max_requested_outputs: int = Field(1024, ge=1, description="Most outputs one request may list.")


class RepositorySettings(_Group):
    path: Path = Field(Path("examples/models"), description="The Triton-style model repository.")
    control_mode: ControlMode = Field(
        ControlMode.NONE,
        description="none: load every model at start, repository load/unload API refused; "
        "explicit: load what load_models names at start, then the repository API; "
        "poll: load every model at start, then apply changes found every poll_secs (API refused).",
    )
    poll_secs: float = Field(15.0, gt=0, description="Poll mode: seconds between looks at the repository.")
    load_models: tuple[str, ...] = Field((), description="Models to load at start in explicit mode ('*' = all).")
    load_on_demand: bool = Field(
        False, description="Load a known but unloaded model on its first inference request (once)."
    )
    load_threads: int = Field(4, ge=1, description="Models loading in parallel at start.")
    memory_budget_mb: int = Field(
        0,
        ge=0,
        description="Resident memory the loaded models may take (MiB); least recently used unpinned "
        "idle models are unloaded to make room. 0 = no budget.",
    )
    pinned_models: tuple[str, ...] = Field((), description="Models the budget and idle unloading never unload.")
    unload_idle_secs: float = Field(0, ge=0, description="Unload unpinned models unused this long (0 = never).")


class BatchPolicyName(enum.StrEnum):
    ADAPTIVE = "adaptive"
    TRITON = "triton"


class SchedulingSettings(_Group):
    max_queue_size: int = Field(
        256,
        ge=0,
        description="Requests that may wait per model version (per priority level when batching); "
        "also the bound used where a dynamic_batching queue policy says 0 (unbounded).",
    )
    batch_policy: BatchPolicyName = Field(
        BatchPolicyName.ADAPTIVE,
        description="Dynamic batching rule for models that do not choose: adaptive (an idle instance takes "
        "what is queued at once) or triton (wait up to max_queue_delay_microseconds for a batch to fill).",
    )


class Settings(_Group):
    server: ServerSettings = ServerSettings()
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings()
    limits: LimitSettings = LimitSettings()
    repository: RepositorySettings = RepositorySettings()
    scheduling: SchedulingSettings = SchedulingSettings()


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Build the settings tree from an optional YAML file and nested overrides (from CLI flags).

    Raises :class:`SettingsError` naming the setting and the problem.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"config file {config_file} must hold a mapping of setting groups")
        data = loaded or {}
    data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from exc
