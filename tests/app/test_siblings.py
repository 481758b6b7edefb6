"""How workers reach each other (``app/siblings.py``), in process: a sibling's answering side on a real Unix
socket, with a fake dataplane (the edge); the calling side's errors, its reads that skip a silent sibling,
and the framing's bound on a hostile message."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from modelserve.app.siblings import SiblingWorkers, serve_siblings, socket_path
from modelserve.core.errors import ErrorCode, ModelServeError, RoutingError


class FakeLocal:
    """What ``serve_siblings`` calls on a worker's local dataplane."""

    def __init__(self, *, fail_loads: bool = False) -> None:
        self.fail_loads = fail_loads
        self.loaded: list[str] = []
        self.aliases_reloaded: list[str] = []
        self.routing_reloaded: list[str] = []

    async def load_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        if self.fail_loads:
            raise RoutingError(f"model '{name}' is not in this worker's repository")
        self.loaded.append(name)

    async def unload_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        self.loaded.remove(name)

    async def reload_aliases(self, name: str) -> None:
        self.aliases_reloaded.append(name)

    async def reload_routing(self, name: str) -> None:
        self.routing_reloaded.append(name)

    def load_parameters(self, name: str) -> dict[str, Any]:
        return {"config": '{"max_batch_size": 2}'} if name == "configured" else {}

    async def statistics(self, name: str, version: str) -> list[Any]:
        return []

    def repository_index(self, *, ready_only: bool) -> list[Any]:
        return [type("Entry", (), {"name": n})() for n in self.loaded]


async def _serve(folder: Path, index: int, local: FakeLocal, metrics: bytes = b"") -> asyncio.Server:
    return await serve_siblings(socket_path(folder, index), local, lambda: metrics)  # type: ignore[arg-type]


def test_a_change_reaches_every_sibling_and_reads_come_back_by_worker(tmp_path: Path) -> None:
    async def scenario() -> None:
        one, two = FakeLocal(), FakeLocal()
        servers = [await _serve(tmp_path, 1, one, b"m1\n"), await _serve(tmp_path, 2, two, b"m2\n")]
        try:
            caller = SiblingWorkers(tmp_path, index=0, count=3)
            await caller.load_model("iris", {})
            assert one.loaded == two.loaded == ["iris"]
            await caller.reload_aliases("iris")
            assert one.aliases_reloaded == two.aliases_reloaded == ["iris"]
            await caller.reload_routing("iris")
            assert one.routing_reloaded == two.routing_reloaded == ["iris"]
            assert await caller.metrics_texts() == {1: "m1\n", 2: "m2\n"}
            assert await caller.statistics_documents("", "") == [{"model_stats": []}] * 2
            assert await caller.loaded_models() == {"iris": {}}
            await caller.load_model("configured", {"config": '{"max_batch_size": 2}'})
            # A worker that joins late loads each model with the parameters its siblings loaded it with.
            assert await caller.loaded_models() == {"configured": {"config": '{"max_batch_size": 2}'}, "iris": {}}
            await caller.unload_model("configured", {})
            await caller.unload_model("iris", {})
            assert one.loaded == two.loaded == []
        finally:
            for server in servers:
                server.close()

    asyncio.run(scenario())


def test_a_sibling_that_fails_or_is_gone_is_named_and_reads_skip_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await _serve(tmp_path, 1, FakeLocal(fail_loads=True))
        try:
            caller = SiblingWorkers(tmp_path, index=0, count=3)  # worker 2 has no socket: restarting
            with pytest.raises(ModelServeError) as caught:
                await caller.load_model("iris", {})
            error = caught.value
            assert error.code is ErrorCode.UNAVAILABLE
            assert "worker 1: model 'iris' is not in this worker's repository" in error.message
            assert "worker 2: unreachable" in error.message and "repeat the call" in error.message
            assert await caller.metrics_texts() == {1: ""}, "the silent worker is skipped, not an error"
        finally:
            server.close()

    asyncio.run(scenario())


def test_a_hostile_message_is_refused_before_it_is_read_and_the_socket_still_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await _serve(tmp_path, 1, FakeLocal(), b"ok\n")
        try:
            path = str(socket_path(tmp_path, 1))
            for hostile in (struct.pack(">I", 2**31) + b"x", struct.pack(">I", 5) + b"[1,2]", b"\x00\x00"):
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(hostile)
                await writer.drain()
                if hostile == b"\x00\x00":
                    writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), 5)
                assert answer == b"", f"{hostile[:8]!r} got an answer"
                writer.close()
            reader, writer = await asyncio.open_unix_connection(path)
            unknown = b'{"op": "nothing"}'
            writer.write(struct.pack(">I", len(unknown)) + unknown)
            await writer.drain()
            (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
            assert b"unknown sibling call" in await reader.readexactly(length)
            writer.close()
            assert await SiblingWorkers(tmp_path, 0, 2).metrics_texts() == {1: "ok\n"}
        finally:
            server.close()

    asyncio.run(scenario())
