"""The engine owns the system shared-memory registry: regions a client registered are closed when the
engine stops (the server's shutdown), and ``shared_memory.enabled: false`` builds none."""

from __future__ import annotations

import asyncio
import os
import uuid
from multiprocessing import shared_memory
from pathlib import Path

from modelserve import Engine
from tests.triton_repository import triton_example_repository


def maps(key: str) -> int:
    """Descriptors this process has open on the shm object ``key``."""
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held += os.readlink(f"/proc/self/fd/{fd}") == f"/dev/shm/{key}"
        except OSError:  # the descriptor listdir used, closed by now
            continue
    return held


def test_stopping_the_engine_closes_every_region(tmp_path: Path) -> None:
    root = triton_example_repository(tmp_path / "models")
    keys = [f"mstest_{uuid.uuid4().hex}" for _ in range(2)]
    objects = [shared_memory.SharedMemory(key, create=True, size=4096) for key in keys]
    own = [maps(key) for key in keys]  # the test's own handles'

    async def scenario() -> None:
        async with Engine.from_repository(root, load=["simple"]) as engine:
            for index, key in enumerate(keys):
                await engine.dataplane.register_shared_memory(f"r{index}", "/" + key, 0, 4096)
            assert [maps(key) - held for key, held in zip(keys, own, strict=True)] == [1, 1]  # the engine's
        assert [maps(key) for key in keys] == own
        assert engine.shared_memory is not None and engine.shared_memory.status() == []

    try:
        asyncio.run(scenario())
    finally:
        for obj in objects:
            obj.close()
            obj.unlink()


def test_with_the_extension_off_the_engine_builds_no_registry(tmp_path: Path) -> None:
    engine = Engine.from_repository(tmp_path, config={"shared_memory": {"enabled": False}})
    assert engine.shared_memory is None and engine.dataplane.shared_memory is None
    assert "system_shared_memory" not in engine.dataplane.server_metadata()["extensions"]
