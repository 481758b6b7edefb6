"""The restart policy of python workers, as the pure function it is: back-off, giving up, starting again."""

from __future__ import annotations

import pytest

from modelserve.core.errors import ModelLoadError
from modelserve.runtimes.python.restart import (
    DEFAULT_MAX_CONSECUTIVE_DEATHS,
    RestartPolicy,
    after_death,
    policy_from_parameters,
)


def test_the_back_off_doubles_from_a_tenth_of_a_second_to_five_and_then_gives_up() -> None:
    policy = RestartPolicy(max_consecutive_deaths=10)
    delays, deaths = [], 0
    while True:
        decision = after_death(policy, deaths, served_for_s=0.0)
        deaths = decision.consecutive_deaths
        if decision.gives_up:
            break
        delays.append(decision.delay_s)
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert deaths == 10


def test_the_default_gives_up_at_the_fifth_death_in_a_row() -> None:
    policy = policy_from_parameters({}, "model 'm' version 1")
    assert policy.max_consecutive_deaths == DEFAULT_MAX_CONSECUTIVE_DEATHS == 5
    assert not after_death(policy, 3, served_for_s=0.0).gives_up
    assert after_death(policy, 4, served_for_s=0.0).gives_up


def test_a_worker_that_served_for_the_healthy_period_starts_the_count_again() -> None:
    policy = RestartPolicy()
    decision = after_death(policy, 4, served_for_s=policy.healthy_period_s)
    assert decision.consecutive_deaths == 1 and decision.delay_s == pytest.approx(0.1) and not decision.gives_up
    assert after_death(policy, 4, served_for_s=policy.healthy_period_s - 1).gives_up


def test_a_limit_of_one_gives_up_at_the_first_death() -> None:
    assert after_death(policy_from_parameters({"max_consecutive_worker_deaths": "1"}, "m"), 0, 0.0).gives_up


@pytest.mark.parametrize("raw", ["0", "-2", "five", "2.5", ""])
def test_a_bad_limit_names_the_parameter_and_the_default(raw: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        policy_from_parameters({"max_consecutive_worker_deaths": raw}, "model 'm' version 1")
    message = caught.value.message
    assert message.startswith("model 'm' version 1: parameters 'max_consecutive_worker_deaths'")
    assert repr(raw) in message and "the default (5)" in message
    assert caught.value.stage == "config"


def test_the_policy_refuses_settings_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RestartPolicy(max_consecutive_deaths=0)
    with pytest.raises(ValueError, match="back-off"):
        RestartPolicy(first_backoff_s=6.0, max_backoff_s=5.0)
