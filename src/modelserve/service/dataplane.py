"""The dataplane: the one entry point every front end calls (REST, gRPC, the in-process Engine) for
health, metadata, config, inference, statistics and the repository.

Transports decode wire bytes into core types (``protocol/rest_codec``, ``protocol/grpc_codec``) and a
:class:`~modelserve.core.context.RequestContext`, call this, and encode what it returns. Nothing here knows
HTTP or gRPC. The inference path is written once (:meth:`DataPlane.infer_steps`) and carried out by the
async or the blocking driver (``core/steps.py``).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from modelserve.core import triton_texts
from modelserve.core.cancellation import CancelToken
from modelserve.core.clock import Clock, wall_time_ms
from modelserve.core.context import EMPTY_CONTEXT, RequestContext
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ErrorCode, ModelServeError, RoutingError, ValidationError
from modelserve.core.inference import InferRequest, InferResult, ParameterValue
from modelserve.core.names import check_model_name
from modelserve.core.steps import Steps, drive, drive_blocking
from modelserve.observability.observation import Observation, Observer
from modelserve.observability.statistics import ModelVersionStatistics, failure_cause, failure_reason
from modelserve.repository.loaded import LoadedVersion, VersionState
from modelserve.repository.manager import IndexEntry, ModelManager
from modelserve.repository.model_config import ModelConfig
from modelserve.routing.aliases import Alias
from modelserve.routing.assignment import BUCKETS
from modelserve.routing.router import Router
from modelserve.scheduling.admission import AdmissionGate
from modelserve.service.classification import classify
from modelserve.service.resilience import Resilience
from modelserve.service.shadow import ShadowDispatcher
from modelserve.service.shared_memory import RegionStatus, SharedMemoryRegistry
from modelserve.service.siblings import Siblings
from modelserve.service.validation import DeclaredInputs, check_declared_inputs, output_names_for, validate_inputs

__all__ = ["EXTENSIONS", "DataPlane", "ModelMetadata", "TensorMetadata"]

# Only what is implemented: perf_analyzer and clients change behaviour on these.
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "parameters",
    "statistics",
)


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class DataPlane:
    """Thread-safe where it says so: ``infer_blocking`` runs on any thread but the loop's; everything
    else runs on the event loop."""

    def __init__(
        self,
        *,
        server_name: str,
        server_version: str,
        manager: ModelManager,
        router: Router,
        gate: AdmissionGate,
        clock: Clock,
        max_requested_outputs: int,
        model_control_mode: str,
        drain_timeout_s: float,
        observers: Sequence[Observer] = (),
        shared_memory: SharedMemoryRegistry | None = None,
        resilience: Resilience | None = None,
        shadows: ShadowDispatcher | None = None,
    ) -> None:
        self.server_name = server_name
        self.server_version = server_version
        self._manager = manager
        self._router = router
        self._gate = gate
        self._clock = clock
        self._max_requested_outputs = max_requested_outputs
        self._model_control_mode = model_control_mode
        self._drain_timeout_s = drain_timeout_s
        self._observers = tuple(observers)
        # The other workers (server.workers > 1): lifecycle changes made here are carried to them.
        self.siblings: Siblings | None = None
        # The registered system shared-memory regions (None: the extension is off); the codecs read
        # inputs from and write outputs to it.
        self.shared_memory = shared_memory
        # Called with (model, arm, target) for each answer a routing split chose (the requests counter).
        self.on_routed: Callable[[str, str, str], None] | None = None
        # Circuit breakers and fallback chains of the models whose policy has them (service/resilience.py).
        self.resilience = resilience if resilience is not None else Resilience(router, clock)
        # Shadow copies of sampled requests, run on their own thread once start_shadows() is called.
        self.shadows = shadows if shadows is not None else ShadowDispatcher(clock)

    def local_view(self) -> DataPlane:
        """This dataplane without its siblings: what answers a sibling's call, so a change made on
        another worker's behalf is never carried on again."""
        view = copy.copy(self)
        view.siblings = None
        return view

    # -- health and metadata ----------------------------------------------------------------------

    def is_live(self) -> bool:
        return True

    def is_ready(self) -> bool:
        return not self._gate.is_draining and self._manager.all_ready()

    def readiness_reason(self) -> str:
        """Why the server is not ready, for the answer to ``GET /v2/health/ready``: shutting down, which
        models failed to load (with the first one's reason), or which are loading. Plain reads of the
        index, safe from any thread (the health port answers from its own)."""
        if self._gate.is_draining:
            return "the server is not ready: it is shutting down"
        not_ready = self._manager.not_ready()
        index_hint = "GET /v2/repository/index lists every model's state and reason"
        failed = [(name, reason) for name, state, reason in not_ready if state is VersionState.FAILED]
        if failed:
            names = ", ".join(f"'{name}'" for name, _ in failed)
            first_name, first_reason = failed[0]
            why = f" ({first_name}: {first_reason[:300]})" if first_reason else ""
            return (
                f"the server is not ready: model{'s' if len(failed) > 1 else ''} {names} failed to load{why}; "
                f"{index_hint}"
            )
        if not_ready:
            states = ", ".join(f"'{name}' {state.value}" for name, state, _ in not_ready)
            return f"the server is not ready: models not ready yet: {states}; {index_hint}"
        return "the server is not ready (loading models, or shutting down)"

    def readiness_detail(self, name: str) -> str:
        """Why a model is not ready, from the index: its versions' states and reasons."""
        entries = [e for e in self._manager.index() if e.name == name]
        parts = [
            f"{'version ' + e.version + ' ' if e.version else ''}{e.state.value}{': ' + e.reason if e.reason else ''}"
            for e in entries
        ]
        return "; ".join(parts) or "unknown"

    async def model_readiness(self, name: str, version: str) -> str:
        """Empty when ``name``/``version`` ("" = the version a request would get) is ready, else why not: for
        a model the repository does not have, Triton's unknown-model text; for a known model that is not
        loaded, loading, failed or has no such version, Triton's "Model version not ready" and the index's
        states. Raises :class:`ValidationError` only for a malformed name or version."""
        try:
            loaded = await self._resolve(name, version)
        except RoutingError as exc:
            if exc.code is ErrorCode.NOT_FOUND and not self._manager.is_known(name):
                return exc.message
            return self._not_ready(name, version)
        if self._gate.is_draining:
            return triton_texts.model_not_ready("the server is shutting down")
        if not loaded.is_ready:
            return self._not_ready(name, version)
        return ""

    def _not_ready(self, name: str, version: str) -> str:
        what = f"model '{name}'" + (f" version {version}" if version else "")
        return triton_texts.model_not_ready(f"{what} is not ready; its versions: {self.readiness_detail(name)}")

    async def is_model_ready(self, name: str, version: str) -> bool:
        """False for a model that is unknown, not loaded, loading, failed or draining (as Triton's core
        answers ``ModelReady``). Raises :class:`ValidationError` only for a malformed name or version."""
        return not await self.model_readiness(name, version)

    def server_metadata(self) -> dict[str, Any]:
        extensions = sorted((*EXTENSIONS, "system_shared_memory")) if self.shared_memory else list(EXTENSIONS)
        return {"name": self.server_name, "version": self.server_version, "extensions": extensions}

    async def _resolve(self, name: str, version: str) -> LoadedVersion:
        return await drive(self._router.resolve(name, version), clock=self._clock)

    async def model_metadata(self, name: str, version: str) -> ModelMetadata:
        loaded = await self._resolve(name, version)
        signature = loaded.signature
        mbs = signature.max_batch_size
        versions = [v.version for v in self._manager.loaded_versions(name)]
        return ModelMetadata(
            name=signature.name,
            versions=versions,
            platform=loaded.config.platform or loaded.config.backend,
            inputs=[TensorMetadata(s.name, s.datatype.value, s.client_shape(mbs)) for s in signature.inputs],
            outputs=[TensorMetadata(s.name, s.datatype.value, s.client_shape(mbs)) for s in signature.outputs],
        )

    async def model_config(self, name: str, version: str) -> ModelConfig:
        return (await self._resolve(name, version)).config

    # -- inference --------------------------------------------------------------------------------

    def infer_steps(self, request: InferRequest, context: RequestContext) -> Steps[InferResult]:
        """The request path, once for every transport: admit, resolve, validate, schedule, answer, observe.
        Raises a :class:`ModelServeError` subclass for anything the client can fix or retry; the message is
        safe to send."""
        policy = self._router.policies.policy(request.model_name)
        shadow = policy.shadow if policy is not None else None
        started_ns = self._clock.now_ns() if self._observers or shadow is not None else 0
        with self._gate.admit():
            if policy is None or (policy.breaker is None and not policy.fallback):
                response = yield from self._attempt(request, [], context)
            else:  # a breaker or a fallback chain (service/resilience.py)
                attempt = partial(self._attempt, context=context)
                response = yield from self.resilience.run(request, context, policy, attempt)
        if shadow is not None and not response.fallback:  # a copy to the shadow, off this path (service/shadow.py)
            self.shadows.offer(
                request.model_name, shadow, request, context, response, self._clock.now_ns() - started_ns
            )
        if self._observers:
            self._observe(request, context, response, started_ns)
        return response

    def _attempt(
        self, request: InferRequest, resolved: list[tuple[str, str]], context: RequestContext
    ) -> Steps[InferResult]:
        """One try at ``request``: route, validate, run (behind its version's breaker when the model's
        policy has one), respond; the (model, version) it routed to is appended to ``resolved``. The
        fallback chain calls it again for each entry it tries."""
        loaded, decision = yield from self._router.route(
            request.model_name, request.model_version, context, request.parameters
        )
        resolved.append((request.model_name, loaded.version))
        output_names = self._check(request, loaded)
        execute = loaded.scheduler.execute(request, output_names, context)
        breaker = self.resilience.breaker_settings(request.model_name)
        if breaker is not None:
            execute = self.resilience.guard(request.model_name, loaded.version, breaker, execute)
        outputs = yield from execute
        response = self._respond(request, loaded, output_names, outputs)
        if decision.arm:
            response.arm = decision.arm
            if self.on_routed is not None:
                self.on_routed(response.model_name, decision.arm, decision.target)
        return response

    def start_shadows(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start running shadow copies (service/shadow.py) on their thread, driven like gRPC calls on ``loop``."""

        def run(request: InferRequest, context: RequestContext) -> InferResult:
            return drive_blocking(self._attempt(request, [], context), loop=loop, clock=self._clock)

        self.shadows.start(run)

    def resilience_summary(self, name: str) -> dict[str, Any]:
        """What ``GET /v2/models/{m}/routing`` adds for ``name`` (keys only where there is something): its
        versions' breakers (state, trips, seconds until half-open, why it last opened) and its shadow's
        figures. This worker's own view: with ``--workers N`` each worker keeps its own."""
        summary: dict[str, Any] = {}
        breakers = self.resilience.breakers.snapshots(name)
        if breakers:
            summary["breakers"] = {
                b.version: {"state": b.state.value, "trips": b.trips, "retry_in_s": b.retry_in_s, "reason": b.reason}
                for b in breakers
            }
        shadow = self.shadows.summary(name)
        if shadow is not None:
            summary["shadow"] = shadow
        return summary

    def shadow_summary(self, name: str) -> dict[str, Any] | None:
        """Model ``name``'s shadow figures (sent, dropped, failed, agreement, latency delta in ms), for
        ``GET /v2/models/{m}/routing``; None when it was never shadowed."""
        return self.shadows.summary(name)

    def precheck_steps(self, name: str, version: str, declared: DeclaredInputs, context: RequestContext) -> Steps[None]:
        """Check what a request declares (input names, datatypes, shapes) against the model it names, before
        a transport decodes its elements: a mistyped request is refused for the cost of its header. The
        same resolve as :meth:`infer_steps`, which checks the decoded request again (the version may move
        between the two). Raises what resolving raises, or :class:`ValidationError`."""
        loaded = yield from self._router.resolve(name, version, context)
        try:
            check_declared_inputs(declared, loaded.signature)
        except ValidationError as exc:
            _count_refusal(loaded, exc)
            raise

    async def precheck(
        self, name: str, version: str, declared: DeclaredInputs, context: RequestContext = EMPTY_CONTEXT
    ) -> None:
        """:meth:`precheck_steps` from the event loop."""
        steps = self.precheck_steps(name, version, declared, context)
        await drive(steps, clock=self._clock, deadline_ns=context.deadline_ns)

    def precheck_blocking(
        self,
        name: str,
        version: str,
        declared: DeclaredInputs,
        context: RequestContext,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """:meth:`precheck_steps` from a thread that is not ``loop``'s (gRPC calls)."""
        steps = self.precheck_steps(name, version, declared, context)
        drive_blocking(steps, loop=loop, clock=self._clock, deadline_ns=context.deadline_ns)

    @property
    def requests_in_flight(self) -> int:
        """Requests admitted server-wide and not finished (both transports)."""
        return self._gate.inflight

    def refuse_if_saturated(self, name: str, version: str) -> None:
        """Raise the :class:`QueueError` a new request for ``name``/``version`` would get now from the
        server's in-flight limit or the version's queue, before its body is read or decoded: under overload
        a refusal must cost far less than a request. O(1), on any thread; a hint only (the request path
        decides again). A refusal counts as a failed request of the version, as it would in its queue."""
        refused = self._gate.refusal()
        if refused is not None:
            raise refused
        loaded = self._router.loaded_now(name, version)
        if loaded is None:
            return
        refused = loaded.scheduler.refusal()
        if refused is not None:
            reason, cause = failure_reason(refused), failure_cause(refused)
            loaded.statistics.record_request(succeeded=False, total_ns=0, failure_reason=reason, failure_cause=cause)
            raise refused

    def count_undecodable(self, name: str, version: str, refused: ModelServeError) -> None:
        """A request naming ``name``/``version`` whose tensors could not be read (data that disagrees
        with its shape, a bad length prefix, a malformed value): a failed request of that version when it
        is served, as Triton counts it (reason OTHER), so an error-rate alert sees it. O(1), any thread."""
        loaded = self._router.loaded_now(name, version)
        if loaded is not None:
            _count_refusal(loaded, refused)

    async def infer(self, request: InferRequest, context: RequestContext = EMPTY_CONTEXT) -> InferResult:
        """Run one request from the event loop (REST, the in-process engine)."""
        return await drive(self.infer_steps(request, context), clock=self._clock, deadline_ns=context.deadline_ns)

    def infer_blocking(
        self,
        request: InferRequest,
        context: RequestContext,
        loop: asyncio.AbstractEventLoop,
        cancel: CancelToken | None = None,
    ) -> InferResult:
        """The same from a thread that is not ``loop``'s (gRPC calls): without batching or on the batcher's
        fast path the model runs on this thread; an on-demand load runs on ``loop``. ``cancel`` fires when
        the client goes away."""
        return drive_blocking(
            self.infer_steps(request, context),
            loop=loop,
            clock=self._clock,
            cancel=cancel,
            deadline_ns=context.deadline_ns,
        )

    def _observe(self, request: InferRequest, context: RequestContext, response: InferResult, started_ns: int) -> None:
        """Hands the request to the observers that sample it (prediction log, drift); never raises into
        the request: a served answer is not turned into an error by its bookkeeping."""
        model, version = response.model_name, response.model_version
        wanting = [observer for observer in self._observers if observer.wants(model, version)]
        if not wanting:
            return
        observation = Observation(
            model=model,
            version=version,
            requested_version=request.model_version,
            request_id=request.id or context.request_id or None,
            inputs=request.inputs,
            outputs=response.outputs,
            parameters=request.parameters,
            latency_ns=self._clock.now_ns() - started_ns,
            time_ms=wall_time_ms(),
            context=context,
        )
        for observer in wanting:
            observer.submit(observation)

    def _check(self, request: InferRequest, loaded: LoadedVersion) -> list[str]:
        try:
            validate_inputs(request, loaded.signature)
            return output_names_for(request, loaded.signature, self._max_requested_outputs)
        except ValidationError as exc:
            _count_refusal(loaded, exc)
            raise

    @staticmethod
    def _respond(
        request: InferRequest, loaded: LoadedVersion, output_names: list[str], outputs: dict[str, np.ndarray]
    ) -> InferResult:
        signature = loaded.signature
        datatypes = {name: signature.outputs_by_name[name].datatype for name in output_names}
        if request.requested_outputs is not None:
            for requested in request.requested_outputs:
                top_n = requested.parameters.get("classification")
                if top_n is not None:
                    outputs[requested.name] = _classified(
                        outputs[requested.name],
                        top_n,
                        signature.max_batch_size,
                        requested.name,
                        loaded.labels.get(requested.name, ()),
                    )
                    datatypes[requested.name] = Datatype.BYTES
        return InferResult(
            model_name=signature.name,
            model_version=loaded.version,
            outputs=outputs,
            output_datatypes=datatypes,
            id=request.id,
        )

    # -- statistics -------------------------------------------------------------------------------

    async def statistics(self, name: str, version: str) -> list[ModelVersionStatistics]:
        if not name:
            if version:
                raise ValidationError("a version needs a model name: /v2/models/{name}/versions/{v}/stats")
            return [v.statistics for v in self._manager.loaded_versions()]
        if version:
            return [(await self._resolve(name, version)).statistics]
        check_model_name(name)
        versions = self._manager.loaded_versions(name)
        if not versions:
            await self._resolve(name, "")  # raises the right not-found / not-loaded error
        return [v.statistics for v in versions]

    # -- repository -------------------------------------------------------------------------------

    def repository_index(self, *, ready_only: bool) -> list[IndexEntry]:
        return self._manager.index(ready_only=ready_only)

    def _check_control(self, action: str) -> None:
        if self._model_control_mode != "explicit":
            raise ModelServeError(
                f"model {action} is disabled: the server runs with --model-control-mode "
                f"{self._model_control_mode}; restart it with --model-control-mode explicit to load and unload "
                "models through the API",
                code=ErrorCode.PERMISSION_DENIED,
            )

    async def load_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        check_model_name(name)
        self._check_control("loading")
        config_json: str | None = None
        files: dict[str, bytes] = {}
        for key, value in parameters.items():
            if key == "config":
                if not isinstance(value, str):
                    raise ValidationError(
                        "load parameter 'config' must be a string holding a Triton ModelConfig as JSON, "
                        f"got {type(value).__name__}"
                    )
                config_json = value
            elif key.startswith("file:"):
                if not isinstance(value, bytes):
                    raise ValidationError(
                        f"load parameter '{key[:64]}' must carry the file's bytes (a bytes parameter over gRPC, "
                        f"a base64 string over REST), got {type(value).__name__}"
                    )
                files[key[len("file:") :]] = value
            else:
                raise ValidationError(
                    f"unknown load parameter '{key[:64]}'; the load API takes 'config' (a Triton ModelConfig "
                    "as JSON, used for this load instead of config.pbtxt) and 'file:<version>/<name>' files"
                )
        if files and not self._manager.accepts_files:
            raise ValidationError(
                "load parameters 'file:<path>' (model files inline in the request) are not accepted: place the "
                "files in the model repository instead, or set repository.allow_load_files (whoever may call "
                "the load API can then run code on this server)"
            )
        if files and self.siblings is not None:
            raise ValidationError(
                "load parameters 'file:<path>' are not accepted with server.workers > 1 (each worker would "
                "need the files); place the files in the model repository instead"
            )
        await self._manager.load(name, config_json, files)
        if self.siblings is not None:
            await self.siblings.load_model(name, parameters)

    def load_parameters(self, name: str) -> dict[str, Any]:
        """The load parameters that would load ``name`` as it was last loaded (its ``config``, if one
        was given): what a worker that joins late passes to its own load."""
        config_json = self._manager.load_config_json(name)
        return {} if config_json is None else {"config": config_json}

    async def aliases(self, name: str) -> dict[str, Alias]:
        return await self._router.aliases(name)

    async def set_alias(self, name: str, alias: str, version: str) -> Alias:
        self._check_control("alias changes")
        moved = await self._router.set_alias(name, alias, version)
        if self.siblings is not None:  # the file is shared: the others only read it again
            await self.siblings.reload_aliases(name)
        return moved

    async def rollback(self, name: str, alias: str) -> Alias:
        self._check_control("rollback")
        moved = await self._router.rollback(name, alias)
        if self.siblings is not None:
            await self.siblings.reload_aliases(name)
        return moved

    async def reload_aliases(self, name: str) -> None:
        """Read ``name``'s aliases from the repository again (a sibling moved one)."""
        await self._router.reload_aliases(name)

    # -- routing policies -------------------------------------------------------------------------

    @property
    def routing_headers(self) -> frozenset[str]:
        """The headers some routing policy reads (lower-case): the transports copy them into the context
        beside ``server.context_headers``. Replaced whole when a policy changes: compare by identity."""
        return self._router.policies.headers

    def routing(self, name: str) -> dict[str, Any]:
        """``name``'s policy document (None when it has none) and each arm's share of the buckets, percent."""
        stored = self._router.routing(name)
        if stored is None:
            return {"name": name, "policy": None, "shares": {}}
        counts = stored.table.counts() if stored.table is not None else {}
        shares = {arm.arm: counts.get(arm.arm, 0) / BUCKETS * 100 for arm in stored.policy.split}
        return {"name": name, "policy": stored.policy.document(), "shares": shares, **self.resilience_summary(name)}

    async def set_routing(self, name: str, document: object) -> dict[str, Any]:
        """Validate, persist and apply ``name``'s policy here and on every sibling before returning."""
        self._check_control("routing changes")
        await self._router.set_routing(name, document)
        if self.siblings is not None:  # the file is shared: the others only read it again
            await self.siblings.reload_routing(name)
        return self.routing(name)

    async def clear_routing(self, name: str) -> None:
        self._check_control("routing changes")
        await self._router.clear_routing(name)
        self.resilience.forget(name)  # its breakers leave /metrics; a new policy starts them closed
        if self.siblings is not None:
            await self.siblings.reload_routing(name)

    async def reload_routing(self, name: str) -> None:
        """Read ``name``'s policy from the repository again (a sibling changed it)."""
        await self._router.reload_routing(name)

    async def unload_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        check_model_name(name)
        self._check_control("unloading")
        for key in parameters:
            if key != "unload_dependents":
                raise ValidationError(f"unknown unload parameter '{key[:64]}'; only 'unload_dependents' is known")
        await self._manager.unload(name, drain_timeout_s=self._drain_timeout_s)
        if self.siblings is not None:
            await self.siblings.unload_model(name, parameters)

    # -- system shared memory ---------------------------------------------------------------------

    def _regions(self) -> SharedMemoryRegistry:
        if self.shared_memory is None:
            raise ModelServeError(
                "system shared memory is disabled on this server; set shared_memory.enabled: true to use it",
                code=ErrorCode.UNSUPPORTED,
            )
        return self.shared_memory

    async def register_shared_memory(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register a system shared-memory region here and on every sibling worker (each opens the object
        itself); if a sibling refuses, the registration is undone everywhere and the error raised, so the
        workers never differ. Raises ``SharedMemoryError`` (INVALID_ARGUMENT) naming the problem."""
        regions = self._regions()
        regions.register(name, key, offset, byte_size)
        if self.siblings is None:
            return
        try:
            await self.siblings.register_shared_memory(name, key, offset, byte_size)
        except ModelServeError:
            regions.unregister(name)
            # Undone where it was done; a sibling that cannot be reached now never had it (a restarted
            # worker starts with no regions). The first error is the one to report.
            await self.siblings.unregister_shared_memory(name, strict=False)
            raise

    def shared_memory_status(self, name: str) -> list[RegionStatus]:
        """Every region (``name`` empty) or the one named; NOT_FOUND for a name not registered."""
        return self._regions().status(name)

    async def unregister_shared_memory(self, name: str) -> None:
        """Unregister region ``name`` (every region when empty) here and on every sibling worker."""
        self._regions().unregister(name)
        if self.siblings is not None:
            await self.siblings.unregister_shared_memory(name)


def _count_refusal(loaded: LoadedVersion, refused: ModelServeError) -> None:
    """A request that named a served version but does not match its signature (an unknown or missing
    input, a wrong datatype or shape) is a failed request of that version, as Triton counts it (reason
    OTHER): an error-rate alert must see a client that keeps sending bad tensors. Counted once: the
    precheck and the request path's check are never both refused for one request."""
    loaded.statistics.record_request(
        succeeded=False, total_ns=0, failure_reason=failure_reason(refused), failure_cause=failure_cause(refused)
    )


def _classified(
    array: np.ndarray, top_n: ParameterValue, max_batch_size: int, name: str, labels: Sequence[str]
) -> np.ndarray:
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise ValidationError(f"output '{name}': 'classification' must be an integer, got {top_n!r}")
    return classify(array, top_n, batched=max_batch_size > 0, name=name, labels=labels)
