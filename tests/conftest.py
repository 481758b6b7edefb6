from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.server_process import ServerProcess, running_server

# CI runs the property and fuzz tests on fixed seeds, so that a landing cannot fail on an input nobody has
# seen; developers' runs explore new inputs (random seeds), and what they find becomes an @example.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def examples_server() -> Iterator[ServerProcess]:
    """One server over the bundled example models, shared by the read-mostly tests."""
    with running_server() as server:
        yield server
