"""A model's traffic policy: where its requests go (weighted arms, an override header, a sticky unit key),
what is mirrored (shadow), what answers when the chosen target fails (fallback chain), and when a target is
taken out (circuit breaker).

The same document is the ``routing.<model>`` block of the settings file, the body of
``PUT /v2/models/{m}/routing`` and what ``GET`` answers; it is validated here, once, whatever its source::

    key: {header: x-user-id, parameter: user_id}          # where the sticky unit id comes from; first found wins
    split:                                                # arms -> alias or version, weights in percent (sum 100)
      - {arm: control,   target: production, weight: 90}
      - {arm: treatment, target: canary,     weight: 10}
    override: {header: x-canary, arms: {"true": treatment, "false": control}}
    shadow: {target: "3", percent: 5, compare: {output: label}}
    fallback: [production, {model: iris_sklearn}, {static: {label: [-1]}}]
    breaker: {consecutive_failures: 5, failure_ratio: 0.5, min_requests: 20, open_s: 30, half_open_probes: 3}

Nothing here decides or does anything: ``routing/`` holds the pure decisions over a policy (assignment,
breaker), the service layer dispatches shadows and fallbacks. ``owner`` lets an experiment (the experiments
issue) own a policy: a policy owned by one cannot be replaced through the routing API without saying so.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelserve.core.names import check_model_name

__all__ = [
    "Arm",
    "BreakerSettings",
    "Comparison",
    "FallbackBudget",
    "FallbackModel",
    "FallbackStatic",
    "FallbackTarget",
    "Override",
    "RoutingPolicy",
    "ShadowSettings",
    "UnitKey",
]

# Header and parameter names: what HTTP allows in a field name, lower-cased on read (gRPC metadata keys are).
_FIELD_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"
# An alias or version number: what a request may put in its version slot.
_TARGET = r"^[A-Za-z0-9_.-]{1,64}$"
_ARM = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_ARMS = 16
MAX_FALLBACKS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnitKey(_Strict):
    """Where a request's sticky unit id comes from: the first of ``header`` (REST header or gRPC metadata
    key) and ``parameter`` (a request parameter) that the request carries."""

    header: str | None = Field(None, pattern=_FIELD_NAME)
    parameter: str | None = Field(None, pattern=_FIELD_NAME)

    @model_validator(mode="after")
    def _one_source(self) -> UnitKey:
        if self.header is None and self.parameter is None:
            raise ValueError("'key' needs a 'header' or a 'parameter' (or both) to read the unit id from")
        return self


class Arm(_Strict):
    arm: str = Field(pattern=_ARM, description="The arm's name, reported in modelserve_arm.")
    target: str = Field(pattern=_TARGET, description="An alias or a version number of the same model.")
    weight: float = Field(ge=0, le=100, description="Percent of units (or of requests without a key).")


class Override(_Strict):
    """A header whose value picks an arm outright (only the values listed here; others are ignored)."""

    header: str = Field(pattern=_FIELD_NAME)
    arms: dict[str, str] = Field(min_length=1, max_length=MAX_ARMS)


class Comparison(_Strict):
    """What a shadow's answer is compared on: one output, equal argmax (``argmax``) or values within
    ``tolerance`` (absolute; 0 = equal)."""

    output: str = Field(min_length=1, max_length=256)
    argmax: bool = False
    tolerance: float = Field(0.0, ge=0)


class ShadowSettings(_Strict):
    target: str = Field(pattern=_TARGET, description="Alias or version that gets a copy of sampled requests.")
    percent: float = Field(ge=0, le=100, description="Share of requests mirrored.")
    compare: Comparison | None = None


class FallbackModel(_Strict):
    """Another model, whose signature must accept this model's inputs (checked when the policy is set)."""

    model: str
    version: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return check_model_name(value)


class FallbackStatic(_Strict):
    """A fixed answer: output name -> flat list of values (the shape is the list's length, per request)."""

    static: dict[str, list[Any]] = Field(min_length=1, max_length=64)


# A version number or alias of the same model, another model, or a fixed answer.
FallbackTarget = Annotated[str, Field(pattern=_TARGET)] | FallbackModel | FallbackStatic


class FallbackBudget(_Strict):
    """How many fallback attempts that run a model may follow a failed one: ``percent`` of the model's
    requests in the last ``window_s`` (at least ``min_per_window``, so a quiet model still falls back), so
    an outage cannot double the load. An answer after an open breaker (the primary never ran) and a
    static answer cost nothing and are not counted."""

    percent: float = Field(20.0, ge=0, le=100)
    window_s: float = Field(10.0, gt=0, le=3600)
    min_per_window: int = Field(3, ge=0, le=10_000)


class BreakerSettings(_Strict):
    consecutive_failures: int = Field(5, ge=1, le=10_000, description="Opens after this many failures in a row.")
    failure_ratio: float = Field(0.5, gt=0, le=1, description="...or when this share of the window failed...")
    min_requests: int = Field(20, ge=1, le=1_000_000, description="...once the window holds this many requests.")
    window_s: float = Field(10.0, gt=0, le=3600, description="The window the ratio is taken over.")
    open_s: float = Field(30.0, gt=0, le=3600, description="First stay open; doubles on each trip in a row.")
    max_open_s: float = Field(300.0, gt=0, le=86_400, description="The longest stay open.")
    half_open_probes: int = Field(3, ge=1, le=1000, description="Probes let through half-open; all must succeed.")

    @model_validator(mode="after")
    def _stays_fit(self) -> BreakerSettings:
        if self.open_s > self.max_open_s:
            raise ValueError(
                f"'breaker': open_s ({self.open_s:g}) is longer than max_open_s ({self.max_open_s:g}), the longest "
                "stay open; raise max_open_s or shorten open_s"
            )
        return self


class RoutingPolicy(_Strict):
    """One model's policy. Every part is optional: a policy with only ``breaker`` protects the default
    route; one with only ``shadow`` mirrors it."""

    salt: str = Field(
        "",
        max_length=128,
        description="Mixed into the bucket hash (default: the model's name); a new salt reshuffles every unit.",
    )
    key: UnitKey | None = None
    split: tuple[Arm, ...] = Field((), max_length=MAX_ARMS)
    override: Override | None = None
    shadow: ShadowSettings | None = None
    fallback: tuple[FallbackTarget, ...] = Field((), max_length=MAX_FALLBACKS)
    fallback_budget: FallbackBudget | None = Field(None, description="Default: 20 % of requests in 10 s.")
    breaker: BreakerSettings | None = None
    owner: str = Field("", max_length=128, description="Who set it: '' (an operator) or an experiment's id.")

    @model_validator(mode="after")
    def _consistent(self) -> RoutingPolicy:
        if self.split:
            names = [arm.arm for arm in self.split]
            if len(set(names)) != len(names):
                raise ValueError(f"'split' names an arm twice: {names}")
            total = sum(arm.weight for arm in self.split)
            if abs(total - 100.0) > 1e-6:
                raise ValueError(f"'split' weights must sum to 100, got {total:g}")
        if self.override is not None:
            known = {arm.arm for arm in self.split}
            unknown = sorted(set(self.override.arms.values()) - known)
            if unknown:
                raise ValueError(f"'override' names arms {unknown} that 'split' does not have ({sorted(known)})")
        if self.key is not None and not self.split:
            raise ValueError("'key' assigns units to the arms of 'split', which is empty")
        return self

    def document(self) -> dict[str, Any]:
        """The JSON document of the policy (what GET answers and the persisted file holds)."""
        return self.model_dump(mode="json", exclude_none=True)
