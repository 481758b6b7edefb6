"""When a dead python worker is replaced, and when replacing it stops: a pure policy over its deaths.

A worker that dies is replaced after a back-off, 0.1 s doubling to 5 s: a model that crashes at once in
every new worker would otherwise fork a process in a tight loop. A worker that has served a request
successfully, or stayed up for ``healthy_period_s``, proves the model can run, so the count of deaths in
a row starts again (and with it the back-off). ``max_consecutive_deaths`` deaths in a row mean the model
itself is broken (it exits in ``load`` or on every request, or the machine kills it for memory each
time): replacing stops, and the instance reports that permanently, with the last cause, until the model
is reloaded.

The counting is the caller's state; :func:`after_death` only decides, so it is tested without processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelserve.core.errors import ModelLoadError

__all__ = [
    "DEFAULT_MAX_CONSECUTIVE_DEATHS",
    "MAX_DEATHS_PARAMETER",
    "RestartDecision",
    "RestartPolicy",
    "after_death",
    "policy_from_parameters",
]

# The config ``parameters`` key that overrides ``RestartPolicy.max_consecutive_deaths`` for one model.
MAX_DEATHS_PARAMETER = "max_consecutive_worker_deaths"
DEFAULT_MAX_CONSECUTIVE_DEATHS = 5


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """``max_consecutive_deaths``: deaths in a row that stop replacement (at least 1). Back-off: the
    first replacement waits ``first_backoff_s``, each further death in a row doubles it, up to
    ``max_backoff_s``. ``healthy_period_s``: how long a worker must have served for its death not to
    count as one more in a row."""

    max_consecutive_deaths: int = DEFAULT_MAX_CONSECUTIVE_DEATHS
    first_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    healthy_period_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_consecutive_deaths < 1:
            raise ValueError(f"max_consecutive_deaths must be at least 1, got {self.max_consecutive_deaths}")
        if not 0 <= self.first_backoff_s <= self.max_backoff_s:
            raise ValueError(
                f"back-off must satisfy 0 <= first ({self.first_backoff_s} s) <= max ({self.max_backoff_s} s)"
            )


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """After a death: the deaths in a row now, and either replace after ``delay_s`` or give up."""

    consecutive_deaths: int
    delay_s: float
    gives_up: bool


def after_death(policy: RestartPolicy, consecutive_deaths: int, served_for_s: float) -> RestartDecision:
    """Decide what follows a worker's death.

    ``consecutive_deaths``: deaths in a row before this one (0 after a request succeeded).
    ``served_for_s``: how long the dead worker had been able to serve (0 for one that died loading).
    """
    count = 1 if served_for_s >= policy.healthy_period_s else consecutive_deaths + 1
    if count >= policy.max_consecutive_deaths:
        return RestartDecision(count, 0.0, gives_up=True)
    delay_s = min(policy.first_backoff_s * 2 ** (count - 1), policy.max_backoff_s)
    return RestartDecision(count, delay_s, gives_up=False)


def policy_from_parameters(parameters: Mapping[str, str], owner: str) -> RestartPolicy:
    """The policy for one model: the defaults, with ``max_consecutive_worker_deaths`` from its config's
    ``parameters`` if set. Raises :class:`ModelLoadError` (stage ``config``) naming the key for a bad value."""
    raw = parameters.get(MAX_DEATHS_PARAMETER)
    if raw is None:
        return RestartPolicy()
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ModelLoadError(
            f"{owner}: parameters '{MAX_DEATHS_PARAMETER}' must be a whole number of at least 1, got {raw!r}; "
            f"leave it out for the default ({DEFAULT_MAX_CONSECUTIVE_DEATHS})",
            stage="config",
        )
    return RestartPolicy(max_consecutive_deaths=value)
