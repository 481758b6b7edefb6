"""The settings file `make serve` uses stays valid as the settings tree changes."""

from __future__ import annotations

from modelserve.config import AlertMetric, load_settings
from tests.server_process import REPO_ROOT


def test_make_serve_config_is_valid_and_watches_iris_drift() -> None:
    settings = load_settings(REPO_ROOT / "examples" / "modelserve.yaml", {})
    assert settings.repository.path.as_posix() == "examples/models"
    drift_rules = [rule for rule in settings.alerts.rules if rule.metric is AlertMetric.DRIFT_PSI]
    assert [rule.model for rule in drift_rules] == ["iris"]
