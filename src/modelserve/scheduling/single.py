"""One request on one runtime instance, unbatched: client shapes to model shapes, the call, and back.

Shared by the direct scheduler and the batcher's fast path (a batch of one), so both run exactly the same
code. Runs on whatever thread calls it: an instance's thread for REST, the call's thread for gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modelserve.core.clock import Clock
from modelserve.core.errors import ErrorCode, ModelServeError, RuntimeFailure
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature
from modelserve.observability.statistics import ModelVersionStatistics
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.admission import VersionAdmission
from modelserve.scheduling.shapes import to_client, to_model_shape

__all__ = ["SingleRun", "as_runtime_failure"]


def as_runtime_failure(exc: Exception, owner: str) -> ModelServeError:
    """A model's own exception as a client-safe error: its type and first line, never a traceback."""
    if isinstance(exc, ModelServeError):
        return exc
    return RuntimeFailure(f"{owner} failed: {type(exc).__name__}: {exc}")


class SingleRun:
    def __init__(self, signature: ModelSignature, owner: str, statistics: ModelVersionStatistics, clock: Clock) -> None:
        self._signature = signature
        self._owner = owner
        self._stats = statistics
        self._clock = clock
        self._batching = signature.max_batch_size > 0

    def run_lent(
        self,
        runtime: Runtime,
        request: InferRequest,
        output_names: Sequence[str],
        queued_ns: int,
        *,
        admission: VersionAdmission,
        give_back: Callable[[Runtime], None],
    ) -> dict[str, np.ndarray]:
        """:meth:`run` on an instance lent by a scheduler, which gets it back (``give_back``) when the call is
        done, on this thread, even if the caller gave up meanwhile: an instance never runs two calls at once.
        A request that reaches here after its version was released (a gRPC thread late after close) never
        runs."""
        try:
            if admission.is_released:
                raise admission.unloaded_error(started=False)
            return self.run(runtime, request, output_names, queued_ns)
        finally:
            give_back(runtime)

    def run(
        self, runtime: Runtime, request: InferRequest, output_names: Sequence[str], queued_ns: int
    ) -> dict[str, np.ndarray]:
        """Run ``request`` on ``runtime`` now (blocking) and record the execution. Raises a
        :class:`ModelServeError`."""
        clock = self._clock
        signature = self._signature
        batching = self._batching
        inputs = {}
        for name, array in request.inputs.items():
            spec = signature.inputs_by_name.get(name)
            inputs[name] = to_model_shape(array, spec, batching) if spec is not None else array
        batch = next(iter(request.inputs.values())).shape[0] if batching and request.inputs else None
        prepared = clock.now_ns()
        try:
            raw = runtime.infer(inputs, list(output_names))
        except Exception as exc:
            raise as_runtime_failure(exc, self._owner) from exc
        ran = clock.now_ns()
        outputs: dict[str, np.ndarray] = {}
        for name in output_names:
            spec = signature.outputs_by_name.get(name)
            if name not in raw or spec is None:
                raise RuntimeFailure(f"{self._owner} returned no output '{name}'", code=ErrorCode.INTERNAL)
            outputs[name] = to_client(np.asarray(raw[name]), spec, batch, self._owner)
        self._stats.record_execution(
            batch_size=batch if batch is not None else 1,
            input_ns=prepared - queued_ns,
            infer_ns=ran - prepared,
            output_ns=clock.now_ns() - ran,
        )
        return outputs
