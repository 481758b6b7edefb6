"""The pure parts of the fallback chain (routing/fallback.py): which failures fall back, the budget, the
signature check and static answers."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import (
    CircuitOpenError,
    ErrorCode,
    QueueError,
    RoutingError,
    RuntimeFailure,
    ValidationError,
)
from modelserve.core.signature import ModelSignature, TensorSpec
from modelserve.routing.fallback import (
    RetryBudget,
    check_fallbacks,
    fallback_cause,
    fallback_label,
    static_outputs,
)
from modelserve.routing.policy import FallbackBudget, FallbackModel, FallbackStatic, RoutingPolicy
from tests.fakes import ManualClock

IRIS = ModelSignature(
    name="iris",
    platform="onnxruntime_onnx",
    max_batch_size=8,
    inputs=(TensorSpec("input-0", Datatype.FP32, (4,)),),
    outputs=(TensorSpec("label", Datatype.INT64, (1,)), TensorSpec("probabilities", Datatype.FP32, (3,))),
)


def test_only_server_side_failures_fall_back() -> None:
    assert fallback_cause(CircuitOpenError("open", retry_after_s=3)) == "breaker_open"
    assert fallback_cause(RuntimeFailure("raised")) == "model"
    assert fallback_cause(QueueError("late", code=ErrorCode.DEADLINE_EXCEEDED)) == "timeout"
    assert fallback_cause(RoutingError("alias 'production' points at 3, not loaded", code=ErrorCode.UNAVAILABLE)) == (
        "unavailable"
    )
    assert fallback_cause(ValidationError("bad shape")) is None
    assert fallback_cause(RoutingError("no such model")) is None
    assert fallback_cause(QueueError("queue full", retry_after_s=1)) is None  # overload: shed, not shifted
    assert fallback_cause(QueueError("client went away", code=ErrorCode.CANCELLED)) is None


def test_labels_name_the_entry() -> None:
    assert fallback_label("production") == "production"
    assert fallback_label(FallbackModel(model="iris_sklearn")) == "iris_sklearn"
    assert fallback_label(FallbackModel(model="iris_sklearn", version="2")) == "iris_sklearn/2"
    assert fallback_label(FallbackStatic(static={"label": [-1]})) == "static"


def test_the_budget_allows_percent_of_the_windows_requests() -> None:
    clock = ManualClock()
    budget = RetryBudget(FallbackBudget(percent=20, window_s=10, min_per_window=3), clock)
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]  # the minimum, with no requests
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_spend() for _ in range(100))
    assert granted == 20 - 3  # 20 % of 100, of which 3 were spent already
    clock.advance(10)  # the window slid past everything
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_a_zero_budget_never_allows_an_extra_attempt() -> None:
    budget = RetryBudget(FallbackBudget(percent=0, min_per_window=0), ManualClock())
    for _ in range(1000):
        budget.record_request()
    assert not budget.try_spend()


def test_another_model_must_accept_this_models_inputs_and_have_its_outputs() -> None:
    policy = RoutingPolicy(fallback=(FallbackModel(model="other"),))
    check_fallbacks("iris", policy, IRIS, {"other": IRIS})
    check_fallbacks("iris", policy, IRIS, {})  # not loaded now: not checked
    wrong_type = ModelSignature("other", "python", 8, (TensorSpec("input-0", Datatype.FP64, (4,)),), IRIS.outputs)
    with pytest.raises(
        ValueError, match=r"fallback\[0\]: model 'other' input 'input-0' is FP64 \[4\], model 'iris' sends FP32 \[4\]"
    ):
        check_fallbacks("iris", policy, IRIS, {"other": wrong_type})
    extra_input = ModelSignature(
        "other", "python", 8, (*IRIS.inputs, TensorSpec("mask", Datatype.BOOL, (4,))), IRIS.outputs
    )
    with pytest.raises(ValueError, match="needs input 'mask', which model 'iris' does not take"):
        check_fallbacks("iris", policy, IRIS, {"other": extra_input})
    fewer_outputs = ModelSignature("other", "python", 8, IRIS.inputs, IRIS.outputs[:1])
    with pytest.raises(ValueError, match=r"lacks outputs \['probabilities'\]"):
        check_fallbacks("iris", policy, IRIS, {"other": fewer_outputs})
    variable = ModelSignature("other", "python", 8, (TensorSpec("input-0", Datatype.FP32, (-1,)),), IRIS.outputs)
    check_fallbacks("iris", policy, IRIS, {"other": variable})  # [-1] accepts every [4]


def test_a_static_answer_must_fit_the_models_outputs() -> None:
    check_fallbacks("iris", RoutingPolicy(fallback=(FallbackStatic(static={"label": [-1]}),)), IRIS, {})
    with pytest.raises(ValueError, match=r"static output 'class' is not an output of model 'iris'"):
        check_fallbacks("iris", RoutingPolicy(fallback=(FallbackStatic(static={"class": [-1]}),)), IRIS, {})
    with pytest.raises(ValueError, match="do not fit its datatype INT64"):
        check_fallbacks("iris", RoutingPolicy(fallback=(FallbackStatic(static={"label": [0.5]}),)), IRIS, {})


def test_static_outputs_repeat_the_values_per_request_row() -> None:
    outputs, datatypes = static_outputs(FallbackStatic(static={"label": [-1], "probabilities": [0, 0, 1]}), IRIS, 3)
    assert outputs["label"].tolist() == [[-1], [-1], [-1]] and outputs["label"].dtype == np.int64
    assert outputs["probabilities"].shape == (3, 3) and outputs["probabilities"].dtype == np.float32
    assert datatypes == {"label": Datatype.INT64, "probabilities": Datatype.FP32}
    unbatched, types = static_outputs(FallbackStatic(static={"text": ["none"]}), None, None)
    assert unbatched["text"].tolist() == [b"none"] and types["text"] is Datatype.BYTES
