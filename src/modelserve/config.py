"""One typed settings tree, read once by the composition root (``app/``) and passed down.

Sources, later ones winning: defaults, then the YAML file given with ``--config``, then command-line
flags (or, in process, a mapping given to ``Engine.from_repository``). Nothing below ``app/`` reads the
environment or a file of settings. This module imports nothing of modelserve: every layer may read it.
An empty config serves the bundled example models on 127.0.0.1.

Each group is one subsystem; every field says its unit in its name.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AlertMetric",
    "AlertRule",
    "AlertSettings",
    "ControlMode",
    "DashboardSettings",
    "DriftSettings",
    "GrpcSettings",
    "HttpSettings",
    "LimitSettings",
    "MetricsSettings",
    "MonitorSettings",
    "PredictionLogFormat",
    "PredictionLogSettings",
    "RepositorySettings",
    "SchedulingSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "SharedMemorySettings",
    "load_settings",
    "settings_from_mapping",
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
    name: str = Field(
        "modelserve",
        description="The name server metadata reports (REST GET /v2, gRPC ServerMetadata); Triton's clients and "
        "examples that check for Triton expect 'triton'. 1-64 printable ASCII characters.",
    )
    host: str = Field("127.0.0.1", description="Address both listeners bind; 127.0.0.1 unless you mean it.")
    workers: int | Literal["auto"] = Field(
        1,
        description="Server processes sharing the ports, each a whole server with its own models (memory "
        "budget per process); 'auto' = the CPUs this process may use (affinity and cgroup quota). Over 1, a "
        "supervisor starts them, restarts one that dies and drains all on SIGTERM.",
    )
    pin_workers: bool = Field(
        True,
        description="With several workers, pin worker i to the i-th CPU this process may use (each worker's "
        "threads then hand the GIL over on one core: ~30 % more requests per second measured); false leaves "
        "placement to the OS scheduler.",
    )
    drain_timeout_s: float = Field(30.0, gt=0, description="On SIGTERM, longest wait for in-flight requests.")
    max_inflight_requests: int = Field(
        2048, ge=1, description="Global cap on admitted requests; over it a request gets 503 at once."
    )
    context_headers: tuple[str, ...] = Field(
        (),
        description="Request headers (gRPC metadata keys) copied into each request's context, where routing "
        "rules and the prediction log read them; no other header is read. x-request-id is read too (over gRPC only "
        "when this list is not empty).",
    )

    @field_validator("name")
    @classmethod
    def _server_name(cls, name: str) -> str:
        # Sent in every metadata answer and shown in logs: bounded, and nothing a terminal or a JSON/HTTP
        # consumer could trip on (control characters, non-ASCII look-alikes).
        if not 1 <= len(name) <= 64 or not all(" " <= c <= "~" for c in name) or name.strip() != name:
            shown = name[:64].encode("unicode_escape").decode("ascii")
            raise ValueError(
                f"server.name must be 1-64 printable ASCII characters without leading or trailing spaces, got '{shown}'"
            )
        return name

    @field_validator("workers")
    @classmethod
    def _worker_count(cls, workers: int | str) -> int | str:
        if isinstance(workers, int) and not 1 <= workers <= 256:
            raise ValueError(f"server.workers must be 1-256 or 'auto', not {workers}")
        return workers

    @field_validator("context_headers")
    @classmethod
    def _header_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"{name[:64]!r} is not a header name (letters, digits, '-', '_', '.')")
        return tuple(dict.fromkeys(name.lower() for name in names))


class HttpSettings(_Group):
    port: int = Field(8000, ge=0, le=65535, description="REST port (0 = pick a free one).")
    enabled: bool = True
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also answer GET /v2/health/live and /v2/health/ready on this port, from a thread of its "
        "own: point Kubernetes probes here and they never wait behind a storm on the REST port.",
    )
    # The guards against slow and stalled clients (transport/http/connections.py says how each is applied).
    idle_timeout_s: float = Field(
        30.0, gt=0, description="A connection with no request in progress (new, or between requests) closes after this."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="From a request's first byte until its headers are complete; past it, 408 and close."
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Grace for a request body: it must be in by body_timeout_s + bytes received / min_body_rate "
        "after its headers, or it gets 408 and the connection closes.",
    )
    min_body_rate: int = Field(
        16384, ge=1, description="Slowest body a client may send after the grace period (bytes per second)."
    )
    max_backlog_ms: int = Field(
        50,
        ge=0,
        description="An inference request read but left waiting for the event loop longer than this while "
        "32 or more requests are in flight (the server is behind) is refused at once with 503 + Retry-After, "
        "before its body is read; 0 = never.",
    )
    refusal_backoff_max_ms: int = Field(
        100,
        ge=0,
        description="After a request refused for overload, its connection is not read for 1 ms, doubling with "
        "each refusal in a row up to this (reset by any other answer); 0 = off.",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="Open REST connections at once; one more is answered 503 (Retry-After) and closed before "
        "it is read. The process's open-file limit is raised to fit it when the hard limit allows.",
    )


class GrpcSettings(_Group):
    port: int = Field(8001, ge=0, le=65535, description="gRPC port (0 = pick a free one).")
    enabled: bool = True
    # 36 = 32 inference calls (what worker_threads was before reserved_threads existed, so concurrency 32
    # over gRPC is still served whole) + the 4 reserved threads.
    worker_threads: int = Field(
        36, ge=2, description="Threads serving gRPC calls; each waits while its request is queued or runs."
    )
    reserved_threads: int = Field(
        4,
        ge=1,
        description="Worker threads inference calls may never take: they serve metadata, statistics and "
        "repository calls (health probes and refusals have threads of their own besides).",
    )
    max_waiting_calls: int = Field(
        32,
        ge=0,
        description="Inference calls that may wait for one of the worker_threads - reserved_threads inference "
        "threads; past that a new inference call gets UNAVAILABLE at once, before it is read.",
    )
    retry_pushback_ms: int = Field(
        100,
        ge=0,
        description="Sent as the grpc-retry-pushback-ms trailing metadata with that UNAVAILABLE: how long a "
        "client should wait before retrying (milliseconds).",
    )
    # Calls over this are refused by grpcio itself (RESOURCE_EXHAUSTED, before any of our code), health
    # probes included. Inference calls are bounded well below it by the lanes (transport/grpc/admission.py);
    # what else waits here is short: probes, metadata, refusals answered in microseconds.
    max_concurrent_rpcs: int = Field(
        2048,
        ge=1,
        description="Calls accepted at once (running or waiting for a thread); over it grpcio answers "
        "RESOURCE_EXHAUSTED, health probes included, so it sits well above the clients a replica expects. "
        "Must exceed worker_threads + max_waiting_calls.",
    )
    max_stream_inflight: int = Field(
        64,
        ge=1,
        description="Requests of one ModelStreamInfer stream running at once; the stream is not read further "
        "until one is answered (back-pressure on the client, never an unbounded queue).",
    )

    @model_validator(mode="after")
    def _threads_left_for_health(self) -> GrpcSettings:
        # Both limits are what keeps a health probe from waiting behind inference (transport/grpc/admission.py).
        if self.reserved_threads >= self.worker_threads:
            raise ValueError(
                f"grpc.reserved_threads ({self.reserved_threads}) must be less than grpc.worker_threads "
                f"({self.worker_threads}): inference calls get the threads not reserved; lower "
                "grpc.reserved_threads or raise grpc.worker_threads"
            )
        accepted = self.worker_threads + self.max_waiting_calls
        if self.max_concurrent_rpcs <= accepted:
            raise ValueError(
                f"grpc.max_concurrent_rpcs ({self.max_concurrent_rpcs}) must exceed grpc.worker_threads + "
                f"grpc.max_waiting_calls ({accepted}), or grpcio refuses calls (health probes too) before "
                "the inference lane is full; raise grpc.max_concurrent_rpcs"
            )
        return self


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
    max_inputs: int = Field(
        1024, ge=1, description="Most inputs one request may carry (refused before any tensor is decoded)."
    )


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
    allow_symlinks: bool = Field(
        False,
        description="Follow symbolic links inside the repository whose target is inside it too; false refuses "
        "every link. A link that leaves the repository is always refused (the model is FAILED with the reason).",
    )
    allow_load_files: bool = Field(
        False,
        description="Accept model files inside a load request (Triton's 'file:<version>/<name>' load "
        "parameters, explicit mode, one worker): whoever may call the load API can then run code here.",
    )
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
    max_queue_time_ms: int = Field(
        500,
        ge=0,
        description="A version's queue also refuses (503 at once) while its oldest waiting request has waited "
        "longer than this, so under overload the wait follows time, not only length (0 = length only).",
    )
    inline_below_us: int = Field(
        100,
        ge=0,
        description="An unbatched in-process model (onnx, sklearn) whose calls have recently taken less than "
        "this runs REST requests on the event loop's thread, without the two hand-offs to an instance thread "
        "and back (they cost more than a microseconds model); 0 = always hand off.",
    )
    batch_policy: BatchPolicyName = Field(
        BatchPolicyName.ADAPTIVE,
        description="Dynamic batching rule for models that do not choose: adaptive (an idle instance takes "
        "what is queued at once) or triton (wait up to max_queue_delay_microseconds for a batch to fill).",
    )


class MetricsSettings(_Group):
    enabled: bool = Field(True, description="Serve Prometheus metrics at GET /metrics on the REST port.")
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also serve /metrics on its own listener at this port (Triton's --metrics-port); "
        "None = no separate listener.",
    )


class MonitorSettings(_Group):
    sample_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the windowed view (dashboard, alerts) reads the statistics."
    )
    horizon_s: float = Field(
        900.0, gt=0, description="How far back the windowed view keeps samples; alert windows must fit in it."
    )


class PredictionLogFormat(enum.StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


class PredictionLogSettings(_Group):
    enabled: bool = Field(False, description="Log a sample of predictions (inputs, outputs, latency) to files; opt-in.")
    directory: Path = Field(Path("prediction-logs"), description="Folder of the log files, one subfolder per model.")
    sample_rate: float = Field(0.01, ge=0, le=1, description="Fraction of requests logged, for every model.")
    model_sample_rates: dict[str, float] = Field(
        default_factory=dict, description="Per-model sample rate overriding sample_rate (0 = never log it)."
    )
    format: PredictionLogFormat = Field(
        PredictionLogFormat.JSONL, description="jsonl, or parquet (needs the 'parquet' extra: pyarrow)."
    )
    max_file_bytes: int = Field(64 * 2**20, ge=1024, description="A log file rotates when it reaches this size.")
    max_files: int = Field(10, ge=1, description="Rotated files kept per model; the oldest is deleted.")
    max_inline_bytes: int = Field(
        4096,
        ge=0,
        description="Tensors larger than this are logged as a summary (shape, datatype, sha256, min/max/mean).",
    )
    queue_size: int = Field(
        10000, ge=1, description="Records waiting for the writer; when full, new records are dropped and counted."
    )


class DriftSettings(_Group):
    enabled: bool = Field(True, description="Compare served inputs with each version's reference profile, if any.")
    window_rows: int = Field(1000, ge=10, description="Rows per comparison window.")
    psi_threshold: float = Field(0.2, gt=0, description="A window whose PSI for some feature exceeds this is drift.")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Fraction of requests whose inputs feed the windows.")
    queue_size: int = Field(
        10000, ge=1, description="Requests waiting for the drift worker; when full, new ones are skipped and counted."
    )


class AlertMetric(enum.StrEnum):
    P50_LATENCY_MS = "p50_latency_ms"
    P95_LATENCY_MS = "p95_latency_ms"
    P99_LATENCY_MS = "p99_latency_ms"
    ERROR_RATE = "error_rate"
    REQUEST_RATE = "request_rate"
    QUEUE_DEPTH = "queue_depth"
    DRIFT_PSI = "drift_psi"


class AlertRule(_Group):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    metric: AlertMetric
    threshold: float = Field(description="The alert condition is: value > threshold.")
    model: str = Field("*", description="Model name the rule watches, or '*' for each model.")
    window_s: float = Field(
        60.0,
        gt=0,
        description="The metric is computed over this trailing window (not used by queue_depth, the newest "
        "sample, nor drift_psi, the last completed drift window).",
    )
    for_s: float = Field(0.0, ge=0, description="The condition must hold this long before the alert fires.")
    severity: str = Field("warning", max_length=32)


class AlertSettings(_Group):
    rules: tuple[AlertRule, ...] = Field((), description="Alert rules; see the README's Operations section.")
    evaluation_interval_s: float = Field(5.0, gt=0, description="How often the rules are evaluated.")
    webhook_url: str | None = Field(None, description="POST firing and resolved alerts here (http or https).")
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="Longest one POST may take.")
    webhook_max_attempts: int = Field(5, ge=1, le=20, description="Tries per notification, with doubling backoff.")
    webhook_backoff_s: float = Field(0.5, gt=0, description="Wait before the first retry; doubles, capped at 30 s.")
    webhook_queue_size: int = Field(
        100, ge=1, description="Notifications waiting to be sent; when full, new ones are dropped and counted."
    )
    history_size: int = Field(200, ge=1, description="Resolved alerts kept for GET /v2/alerts.")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # urllib would also open file:// and ftp:// URLs; a webhook is an HTTP endpoint, nothing else.
        if url is None:
            return None
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
            raise ValueError(f"must be an http:// or https:// URL with a host, got {url!r}")
        return url

    @model_validator(mode="after")
    def _unique_rule_names(self) -> AlertSettings:
        # The name identifies the alert in /v2/alerts, the log and the modelserve_alerts_firing series.
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"alert rule names must be unique; rename the rules named {', '.join(duplicates)}")
        return self


class DashboardSettings(_Group):
    enabled: bool = Field(True, description="Serve the live dashboard at GET /dashboard on the REST port.")


class SharedMemorySettings(_Group):
    """Triton's system shared memory extension: clients register POSIX shared-memory objects and pass
    tensors through them (README, "System shared memory")."""

    enabled: bool = Field(
        True,
        description="Serve /v2/systemsharedmemory and gRPC SystemSharedMemory*, and read inputs from / write "
        "outputs to registered regions; false answers them 501 / UNIMPLEMENTED and does not advertise "
        "system_shared_memory.",
    )
    max_regions: int = Field(64, ge=1, description="Regions registered at once; one more is refused (400).")
    max_total_bytes: int = Field(
        2 * 2**30,
        ge=1,
        description="Bytes all registered regions may span together; a registration past it is refused (400).",
    )


class Settings(_Group):
    server: ServerSettings = ServerSettings()
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings()
    limits: LimitSettings = LimitSettings()
    repository: RepositorySettings = RepositorySettings()
    scheduling: SchedulingSettings = SchedulingSettings()
    metrics: MetricsSettings = MetricsSettings()
    monitor: MonitorSettings = MonitorSettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    drift: DriftSettings = DriftSettings()
    alerts: AlertSettings = AlertSettings()
    dashboard: DashboardSettings = DashboardSettings()
    shared_memory: SharedMemorySettings = SharedMemorySettings()
    # Initial routing policies, model name -> the policy's mapping (the shape of PUT /v2/models/{m}/routing).
    # Kept raw here (this module imports nothing of modelserve): app/ validates each as a RoutingPolicy at
    # start. A model whose <model>/routing.json exists (written by the routing API) keeps that file's policy.
    routing: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Initial traffic policies by model name (key, split, override, ...); see 'Traffic routing'.",
    )

    @model_validator(mode="after")
    def _alert_windows_fit_the_monitor(self) -> Settings:
        # The monitor keeps horizon_s of samples: a longer alert window would silently cover less.
        for index, rule in enumerate(self.alerts.rules):
            if rule.window_s > self.monitor.horizon_s:
                raise ValueError(
                    f"alerts.rules.{index}.window_s ({rule.window_s:g} s, rule {rule.name!r}) is longer than "
                    f"monitor.horizon_s ({self.monitor.horizon_s:g} s); shorten the window or raise the horizon"
                )
        return self


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
    return settings_from_mapping(data, overrides)


def settings_from_mapping(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings tree from a mapping in the shape of the YAML file, with nested ``overrides``
    winning. Raises :class:`SettingsError` naming the setting and the problem."""
    data = _merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from exc
