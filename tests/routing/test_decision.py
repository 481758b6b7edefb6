"""The routing decision (``routing/decision.py``): precedence explicit > override > sticky key > random,
only the override values the policy lists, the key's header before its parameter. Pure: no server."""

from __future__ import annotations

from collections.abc import Callable

from modelserve.routing.assignment import BucketTable, bucket_of
from modelserve.routing.decision import DEFAULT_DECISION, RouteDecision, RoutePlan, decide
from modelserve.routing.policy import RoutingPolicy

POLICY = RoutingPolicy.model_validate(
    {
        "key": {"header": "x-user-id", "parameter": "user_id"},
        "split": [
            {"arm": "control", "target": "1", "weight": 90},
            {"arm": "treatment", "target": "canary", "weight": 10},
        ],
        "override": {"header": "x-canary", "arms": {"true": "treatment", "false": "control"}},
    }
)
TABLE = BucketTable.fresh([("control", 90.0), ("treatment", 10.0)])
PLAN = RoutePlan.build("iris", POLICY, TABLE)


def sticky_arm(unit: str) -> str:
    return TABLE.arm(bucket_of("iris", unit))


def fixed(draw: float) -> Callable[[], float]:
    return lambda: draw


def never() -> float:
    raise AssertionError("a request with a key or an override must not draw")


def test_an_explicit_version_wins_over_everything() -> None:
    decision = decide(PLAN, "2", {"x-canary": "true", "x-user-id": "u"}, {}, never)
    assert decision == RouteDecision("", "2", "explicit")


def test_the_override_wins_over_the_key_and_only_listed_values_count() -> None:
    assert decide(PLAN, "", {"x-canary": "true", "x-user-id": "u"}, {}, never) == RouteDecision(
        "treatment", "canary", "override"
    )
    assert decide(PLAN, "", {"x-canary": "false"}, {}, never).arm == "control"
    unlisted = decide(PLAN, "", {"x-canary": "yes", "x-user-id": "u"}, {}, never)
    assert unlisted.why == "sticky" and unlisted.arm == sticky_arm("u")


def test_the_key_header_comes_before_the_parameter() -> None:
    units = [f"unit-{i}" for i in range(200)]
    header_unit = next(u for u in units if sticky_arm(u) == "treatment")
    parameter_unit = next(u for u in units if sticky_arm(u) == "control")
    both = decide(PLAN, "", {"x-user-id": header_unit}, {"user_id": parameter_unit}, never)
    assert both == RouteDecision("treatment", "canary", "sticky")
    assert decide(PLAN, "", {}, {"user_id": parameter_unit}, never).arm == "control"
    assert decide(PLAN, "", {}, {"user_id": 7}, never).arm == sticky_arm("7")  # numbers as their text


def test_without_a_key_a_weighted_draw_decides() -> None:
    assert decide(PLAN, "", {}, {}, lambda: 0.0) == RouteDecision("control", "1", "random")
    assert decide(PLAN, "", {}, {}, lambda: 0.8999).arm == "control"
    assert decide(PLAN, "", {}, {}, lambda: 0.9) == RouteDecision("treatment", "canary", "random")
    assert decide(PLAN, "", {}, {}, lambda: 0.999999).arm == "treatment"


def test_a_zero_weight_arm_is_never_drawn() -> None:
    policy = RoutingPolicy.model_validate(
        {"split": [{"arm": "off", "target": "1", "weight": 0}, {"arm": "on", "target": "2", "weight": 100}]}
    )
    plan = RoutePlan.build("iris", policy, BucketTable.fresh([("off", 0.0), ("on", 100.0)]))
    assert {decide(plan, "", {}, {}, fixed(d)).arm for d in (0.0, 0.5, 0.999)} == {"on"}


def test_no_policy_or_no_split_is_the_default_route() -> None:
    assert decide(None, "", {"x-canary": "true"}, {}, never) == DEFAULT_DECISION
    breaker_only = RoutePlan.build("iris", RoutingPolicy.model_validate({"breaker": {}}), None)
    assert decide(breaker_only, "", {}, {}, never) == DEFAULT_DECISION
