from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server_process import ServerProcess, running_server


@pytest.fixture(scope="session")
def examples_server() -> Iterator[ServerProcess]:
    """One server over the bundled example models, shared by the read-mostly tests."""
    with running_server() as server:
        yield server
