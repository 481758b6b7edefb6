"""Circuit breakers and fallback chains on the request path (``RoutingPolicy.breaker`` / ``.fallback``).

The dataplane's request path (``DataPlane.infer_steps``) hands a request whose model has a breaker or a
fallback chain to :meth:`Resilience.run`, with the one *attempt* it would otherwise make (resolve,
validate, run, respond). Each attempt that reaches a version with breaker settings runs inside
:meth:`Resilience.guard`: refused at once while the version's breaker is open, its outcome recorded.

``run`` walks the chain after a failure that may fall back (``routing/fallback.fallback_cause``: the model
failed, timed out, is unavailable, or its breaker is open; never a 4xx or an overload refusal)::

    attempt(primary) ──fails──> fallback[0] ──fails──> fallback[1] ... ──> the primary's error
                                   │ a version or alias of the same model, another model, or static
                                   └─ answers: InferResult.fallback = its label

- At most ``MAX_FALLBACKS`` entries (the policy's limit), each tried once.
- An entry that runs a model after an attempt that ran and failed spends the model's
  :class:`~modelserve.routing.fallback.RetryBudget` (20 % of its requests in 10 s by default); when it is
  spent the primary's error is raised, so an outage cannot double the load. After an open breaker the
  primary never ran, so its fallback costs no extra load and is not charged; a static answer runs nothing.
- An answer is tagged in ``InferResult.fallback`` (the codecs' ``modelserve_fallback``).
- An entry that refuses the request as the client sent it (a 4xx: another signature) or is not there
  (an alias that is not set, a model not loaded) is skipped. Signatures are checked when the policy is
  set (``routing/fallback.check_policy``); this covers a model reloaded with another signature since.
- Once the request's deadline has passed, only a static answer is tried.

Nothing here knows HTTP: the codecs and transports turn ``InferResult.fallback`` into the response
parameter ``modelserve_fallback`` (REST and gRPC) and the REST header ``x-modelserve-fallback``.
Thread-safe (REST on the loop, gRPC on threads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from modelserve.core.clock import Clock
from modelserve.core.context import RequestContext
from modelserve.core.errors import CircuitOpenError, ModelServeError, RoutingError, ValidationError
from modelserve.core.inference import InferRequest, InferResult
from modelserve.core.steps import Steps
from modelserve.observability.metrics import ServerMetrics
from modelserve.routing.breaker import BreakerBoard, BreakerState
from modelserve.routing.fallback import RetryBudget, fallback_cause, fallback_label, static_outputs
from modelserve.routing.policy import (
    BreakerSettings,
    FallbackBudget,
    FallbackModel,
    FallbackStatic,
    FallbackTarget,
    RoutingPolicy,
)
from modelserve.routing.router import Router

__all__ = ["Attempt", "Resilience"]

T = TypeVar("T")

_DEFAULT_BUDGET = FallbackBudget()

# One attempt at a request, as the dataplane makes it: resolve, validate, run (guarded), respond; it appends
# the (model, version) it resolved to the list it is given, so the chain never retries a version that failed.
Attempt = Callable[[InferRequest, list[tuple[str, str]]], Steps[InferResult]]


class Resilience:
    """The breakers and fallback budgets of every model with a policy. Thread-safe."""

    def __init__(self, router: Router, clock: Clock, metrics: ServerMetrics | None = None) -> None:
        self._router = router
        self._clock = clock
        self._metrics = metrics
        self.breakers = BreakerBoard(clock, self._count_transition if metrics is not None else None)
        self._budgets: dict[str, RetryBudget] = {}

    def policy(self, model: str) -> RoutingPolicy | None:
        """``model``'s policy when it has a breaker or a fallback chain (else None: the plain path)."""
        policy = self._router.policies.policy(model)
        if policy is None or (policy.breaker is None and not policy.fallback):
            return None
        return policy

    def breaker_settings(self, model: str) -> BreakerSettings | None:
        policy = self._router.policies.policy(model)
        return policy.breaker if policy is not None else None

    def guard(self, model: str, version: str, settings: BreakerSettings, steps: Steps[T]) -> Steps[T]:
        """``steps`` (a version's run) behind that version's breaker: raises
        :class:`~modelserve.core.errors.CircuitOpenError` at once, without starting ``steps``, while it is
        open; else runs them and records how they ended."""
        breaker = self.breakers.breaker(model, version, settings)
        refused = breaker.admit()
        if refused is not None:
            steps.close()
            raise refused
        error: BaseException | None = None
        try:
            return (yield from steps)
        except BaseException as exc:  # recorded (a cancellation gives a probe slot back), then re-raised
            error = exc
            raise
        finally:
            breaker.record(error)

    def run(
        self, request: InferRequest, context: RequestContext, policy: RoutingPolicy, attempt: Attempt
    ) -> Steps[InferResult]:
        """The request through ``attempt``, then down ``policy.fallback`` (the module docstring has the rules).
        Raises the primary's error when nothing answers."""
        model = request.model_name
        budget = self._budget(model, policy.fallback_budget or _DEFAULT_BUDGET)
        budget.record_request()
        resolved: list[tuple[str, str]] = []
        try:
            return (yield from attempt(request, resolved))
        except ModelServeError as exc:
            cause = fallback_cause(exc)
            if cause is None or not policy.fallback:
                raise
            primary = exc
        ran = not isinstance(primary, CircuitOpenError)
        for target in policy.fallback:
            if isinstance(target, FallbackStatic):
                static = self._static(request, target)
                if static is None:
                    continue  # names outputs the model does not have (reported at start)
                return self._answered(static, model, cause, target)
            if context.deadline_ns is not None and self._clock.now_ns() >= context.deadline_ns:
                continue  # a model would not start any more; a later static answer still can
            retry = _request_for(request, target)
            loaded = self._router.loaded_now(retry.model_name, retry.model_version)
            if loaded is not None and (retry.model_name, loaded.version) in resolved:
                continue  # a version that already failed (a fallback alias pointing at it)
            if ran and not budget.try_spend():
                if self._metrics is not None:
                    self._metrics.fallbacks_refused.labels(model=model).inc()
                raise primary
            try:
                result = yield from attempt(retry, resolved)
            except (ValidationError, RoutingError):
                continue  # this entry does not take the request as sent, or is not there: nothing ran
            except ModelServeError as exc:
                if fallback_cause(exc) is None:
                    raise primary from exc
                ran = not isinstance(exc, CircuitOpenError)
                continue
            return self._answered(result, model, cause, target)
        raise primary

    def breaker_rows(self) -> list[tuple[str, str, str, int]]:
        """(model, version, state, trips) of every breaker, for metrics."""
        return [(s.model, s.version, s.state.value, s.trips) for s in self.breakers.snapshots()]

    def forget(self, model: str) -> None:
        """``model``'s policy was cleared or replaced: its breakers and budget start afresh."""
        self.breakers.forget(model)
        self._budgets = {name: b for name, b in self._budgets.items() if name != model}

    def _budget(self, model: str, settings: FallbackBudget) -> RetryBudget:
        budget = self._budgets.get(model)
        if budget is None or (budget.settings is not settings and budget.settings != settings):
            budget = RetryBudget(settings, self._clock)
            self._budgets = {**self._budgets, model: budget}  # a race makes two; one wins, both are correct
        return budget

    def _static(self, request: InferRequest, target: FallbackStatic) -> InferResult | None:
        loaded = self._router.loaded_now(request.model_name, request.model_version)
        signature = loaded.signature if loaded is not None else None
        if signature is not None and any(signature.output(name) is None for name in target.static):
            return None
        rows = None
        if signature is not None and signature.max_batch_size > 0 and request.inputs:
            first = next(iter(request.inputs.values()))
            rows = int(first.shape[0]) if first.ndim else 1
        outputs, datatypes = static_outputs(target, signature, rows)
        if request.requested_outputs is not None:
            wanted = [o.name for o in request.requested_outputs if o.name in outputs]
            outputs = {name: outputs[name] for name in wanted}
            datatypes = {name: datatypes[name] for name in wanted}
        return InferResult(
            model_name=request.model_name, model_version="", outputs=outputs, output_datatypes=datatypes, id=request.id
        )

    def _answered(self, result: InferResult, model: str, cause: str, target: FallbackTarget) -> InferResult:
        label = fallback_label(target)
        result.fallback = label
        if self._metrics is not None:
            self._metrics.fallbacks.labels(model=model, cause=cause, target=label).inc()
        return result

    def _count_transition(self, model: str, version: str, before: BreakerState, after: BreakerState) -> None:
        assert self._metrics is not None
        self._metrics.breaker_transitions.labels(
            model=model, version=version, from_state=before.value, to_state=after.value
        ).inc()


def _request_for(request: InferRequest, target: FallbackTarget) -> InferRequest:
    if isinstance(target, FallbackModel):
        return dataclasses.replace(request, model_name=target.model, model_version=target.version)
    assert isinstance(target, str)
    return dataclasses.replace(request, model_version=target)
