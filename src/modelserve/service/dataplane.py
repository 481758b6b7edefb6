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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from modelserve.repository.loaded import LoadedVersion
from modelserve.repository.manager import IndexEntry, ModelManager
from modelserve.repository.model_config import ModelConfig
from modelserve.routing.aliases import Alias
from modelserve.routing.router import Router
from modelserve.scheduling.admission import AdmissionGate
from modelserve.service.classification import classify
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

    def readiness_detail(self, name: str) -> str:
        """Why a model is not ready, from the index: its versions' states and reasons."""
        entries = [e for e in self._manager.index() if e.name == name]
        parts = [
            f"{'version ' + e.version + ' ' if e.version else ''}{e.state.value}{': ' + e.reason if e.reason else ''}"
            for e in entries
        ]
        return "; ".join(parts) or "unknown"

    async def is_model_ready(self, name: str, version: str) -> bool:
        """Raises RoutingError (NOT_FOUND) for a model the repository does not have."""
        try:
            loaded = await self._resolve(name, version)
        except RoutingError as exc:
            if exc.code is ErrorCode.NOT_FOUND and not self._manager.is_known(name):
                raise
            return False
        return loaded.is_ready and not self._gate.is_draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": self.server_version, "extensions": list(EXTENSIONS)}

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
        started_ns = self._clock.now_ns() if self._observers else 0
        with self._gate.admit():
            loaded = yield from self._router.resolve(request.model_name, request.model_version, context)
            output_names = self._check(request, loaded)
            outputs = yield from loaded.scheduler.execute(request, output_names, context)
        response = self._respond(request, loaded, output_names, outputs)
        if self._observers:
            self._observe(request, context, response, started_ns)
        return response

    def precheck_steps(self, name: str, version: str, declared: DeclaredInputs, context: RequestContext) -> Steps[None]:
        """Check what a request declares (input names, datatypes, shapes) against the model it names, before
        a transport decodes its elements: a mistyped request is refused for the cost of its header. The
        same resolve as :meth:`infer_steps`, which checks the decoded request again (the version may move
        between the two). Raises what resolving raises, or :class:`ValidationError`."""
        loaded = yield from self._router.resolve(name, version, context)
        check_declared_inputs(declared, loaded.signature)

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
        validate_inputs(request, loaded.signature)
        return output_names_for(request, loaded.signature, self._max_requested_outputs)

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
                        outputs[requested.name], top_n, signature.max_batch_size, requested.name
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
        for key in parameters:
            if key.startswith("file:"):
                raise ValidationError(
                    "load parameters 'file:<path>' (model files inline in the request) are not accepted: "
                    "place the files in the model repository instead"
                )
            raise ValidationError(
                f"unknown load parameter '{key[:64]}'; the load API takes no parameters here: edit "
                "config.pbtxt in the repository and load again"
            )
        await self._manager.load(name)
        if self.siblings is not None:
            await self.siblings.load_model(name, parameters)

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

    async def unload_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        check_model_name(name)
        self._check_control("unloading")
        for key in parameters:
            if key != "unload_dependents":
                raise ValidationError(f"unknown unload parameter '{key[:64]}'; only 'unload_dependents' is known")
        await self._manager.unload(name, drain_timeout_s=self._drain_timeout_s)
        if self.siblings is not None:
            await self.siblings.unload_model(name, parameters)


def _classified(array: np.ndarray, top_n: ParameterValue, max_batch_size: int, name: str) -> np.ndarray:
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise ValidationError(f"output '{name}': 'classification' must be an integer, got {top_n!r}")
    return classify(array, top_n, batched=max_batch_size > 0, name=name)
