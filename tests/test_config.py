"""Settings validated at start-up with errors that name the setting: ``server.name`` (``--server-name``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelserve.config import SettingsError, settings_from_mapping


def test_server_name_defaults_to_modelserve_and_takes_triton() -> None:
    assert settings_from_mapping({}).server.name == "modelserve"
    assert settings_from_mapping({"server": {"name": "triton"}}).server.name == "triton"
    assert settings_from_mapping({"server": {"name": "my server-2.1 (eu)"}}).server.name == "my server-2.1 (eu)"


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, "tri\nton", "tri\x1bton", "trïton", " triton", "triton "],
    ids=["empty", "too-long", "newline", "escape", "non-ascii", "leading-space", "trailing-space"],
)
def test_a_bad_server_name_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(SettingsError, match=r"server\.name: .*1-64 printable ASCII characters") as refused:
        settings_from_mapping({"server": {"name": name}})
    assert "\n" not in str(refused.value) and "\x1b" not in str(refused.value)  # shown escaped, never raw


def test_the_server_name_flag_is_validated_like_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelserve", "serve", "--server-name", "x" * 65],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.name" in result.stderr and "Traceback" not in result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "modelserve", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--server-name" in help_text and "server.name" in help_text
