"""How the workers of one server (``server.workers``) reach each other: a Unix socket per worker.

Each worker listens on ``<control folder>/worker-<index>.sock`` (the supervisor creates the folder, mode
0700, so only this user can connect) and answers the few calls the others make: apply a lifecycle change
here only (load, unload, re-read aliases, register or unregister a system shared-memory region), and
report this worker's statistics, metrics text or loaded models. :class:`SiblingWorkers` is the calling
side (``service.siblings.Siblings``); :func:`serve_siblings` the answering side, which acts on this worker
alone, so a change is never carried on twice.

The framing is the smallest that works between two processes of the same program: one request per
connection, each message a 4-byte big-endian length then a JSON object (orjson), both bounded before
anything is allocated. No HTTP: nothing else ever speaks on these sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.protocol.documents import statistics_document
from modelserve.service.dataplane import DataPlane

__all__ = ["SiblingWorkers", "serve_siblings", "socket_path"]

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
_READ_TIMEOUT_S = 5.0  # statistics, metrics: a sibling that takes longer is skipped
_CHANGE_TIMEOUT_S = 300.0  # a load on a sibling takes what loading the model takes


def socket_path(control_dir: Path, index: int) -> Path:
    return control_dir / f"worker-{index}.sock"


async def _send(writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
    body = orjson.dumps(message)
    writer.write(_HEADER.pack(len(body)) + body)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    (length,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if length > _MAX_MESSAGE_BYTES:
        raise ValueError(f"a sibling message of {length} bytes is over the {_MAX_MESSAGE_BYTES} byte limit")
    message = orjson.loads(await reader.readexactly(length))
    if not isinstance(message, dict):
        raise ValueError("a sibling message must be a JSON object")
    return message


class SiblingWorkers:
    """The calling side: this worker's view of the others (``service.siblings.Siblings``)."""

    def __init__(self, control_dir: Path, index: int, count: int) -> None:
        self._control_dir = control_dir
        self._index = index
        self._others = [i for i in range(count) if i != index]

    @property
    def worker_index(self) -> int:
        return self._index

    async def _call(self, worker: int, request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        async def exchange() -> dict[str, Any]:
            reader, writer = await asyncio.open_unix_connection(str(socket_path(self._control_dir, worker)))
            try:
                await _send(writer, request)
                return await _receive(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        return await asyncio.wait_for(exchange(), timeout_s)

    async def _everyone(self, request: Mapping[str, Any], timeout_s: float) -> dict[int, dict[str, Any] | Exception]:
        answers = await asyncio.gather(
            *(self._call(worker, request, timeout_s) for worker in self._others), return_exceptions=True
        )
        out: dict[int, dict[str, Any] | Exception] = {}
        for worker, answer in zip(self._others, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancellation and the like are not a sibling's failure
            out[worker] = answer
        return out

    async def _change(self, request: Mapping[str, Any], what: str) -> None:
        failed = []
        for worker, answer in (await self._everyone(request, _CHANGE_TIMEOUT_S)).items():
            if isinstance(answer, Exception):
                failed.append(f"worker {worker}: unreachable ({type(answer).__name__}; it may be restarting)")
            elif "error" in answer:
                failed.append(f"worker {worker}: {answer['error']['message']}")
        if failed:
            raise ModelServeError(
                f"{what} done on worker {self._index} but not on every worker ({'; '.join(failed)}); the workers "
                "now differ: repeat the call (it is safe to repeat)",
                code=ErrorCode.UNAVAILABLE,
            )

    async def load_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        await self._change({"op": "load", "name": name, "parameters": dict(parameters)}, f"loading '{name}'")

    async def unload_model(self, name: str, parameters: Mapping[str, Any]) -> None:
        await self._change({"op": "unload", "name": name, "parameters": dict(parameters)}, f"unloading '{name}'")

    async def reload_aliases(self, name: str) -> None:
        await self._change({"op": "reload_aliases", "name": name}, f"the alias change of '{name}'")

    async def reload_routing(self, name: str) -> None:
        await self._change({"op": "reload_routing", "name": name}, f"the routing change of '{name}'")

    async def register_shared_memory(self, name: str, key: str, offset: int, byte_size: int) -> None:
        request = {"op": "register_shared_memory", "name": name, "key": key, "offset": offset, "byte_size": byte_size}
        await self._change(request, f"registering shared memory region '{name[:64]}'")

    async def unregister_shared_memory(self, name: str, *, strict: bool = True) -> None:
        what = (
            f"unregistering shared memory region '{name[:64]}'" if name else "unregistering every shared memory region"
        )
        try:
            await self._change({"op": "unregister_shared_memory", "name": name}, what)
        except ModelServeError as exc:
            if strict:
                raise
            log.warning("%s", exc.message)

    async def _read(self, request: Mapping[str, Any]) -> dict[int, Any]:
        values = {}
        for worker, answer in (await self._everyone(request, _READ_TIMEOUT_S)).items():
            if isinstance(answer, Exception):
                log.debug("worker %d did not answer %s: %r", worker, request["op"], answer)
            elif "error" not in answer:
                values[worker] = answer["value"]
        return values

    async def statistics_documents(self, name: str, version: str) -> list[dict[str, Any]]:
        answers = await self._read({"op": "statistics", "name": name, "version": version})
        return [answers[worker] for worker in sorted(answers)]

    async def metrics_texts(self) -> dict[int, str]:
        return {worker: str(text) for worker, text in (await self._read({"op": "metrics"})).items()}

    async def loaded_models(self) -> dict[str, dict[str, Any]]:
        for loaded in (await self._read({"op": "loaded_models"})).values():
            if isinstance(loaded, dict):
                return {
                    str(name): dict(parameters) for name, parameters in loaded.items() if isinstance(parameters, dict)
                }
        return {}


async def serve_siblings(path: Path, local: DataPlane, render_metrics: Callable[[], bytes]) -> asyncio.Server:
    """Answer the other workers' calls on ``path``; ``local`` acts on this worker alone."""

    async def statistics(request: dict[str, Any]) -> Any:
        return statistics_document(await local.statistics(str(request["name"]), str(request["version"])))

    async def metrics(request: dict[str, Any]) -> Any:
        return render_metrics().decode()

    async def load(request: dict[str, Any]) -> Any:
        await local.load_model(str(request["name"]), dict(request["parameters"]))

    async def unload(request: dict[str, Any]) -> Any:
        await local.unload_model(str(request["name"]), dict(request["parameters"]))

    async def reload_aliases(request: dict[str, Any]) -> Any:
        await local.reload_aliases(str(request["name"]))

    async def reload_routing(request: dict[str, Any]) -> Any:
        await local.reload_routing(str(request["name"]))

    async def loaded_models(request: dict[str, Any]) -> Any:
        names = sorted({entry.name for entry in local.repository_index(ready_only=True)})
        return {name: local.load_parameters(name) for name in names}

    async def register_shared_memory(request: dict[str, Any]) -> Any:
        offset, byte_size = request["offset"], request["byte_size"]
        if not isinstance(offset, int) or not isinstance(byte_size, int):
            raise TypeError("a shared memory registration's offset and byte_size are integers")
        await local.register_shared_memory(str(request["name"]), str(request["key"]), offset, byte_size)

    async def unregister_shared_memory(request: dict[str, Any]) -> Any:
        await local.unregister_shared_memory(str(request["name"]))

    operations: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "statistics": statistics,
        "metrics": metrics,
        "load": load,
        "unload": unload,
        "reload_aliases": reload_aliases,
        "reload_routing": reload_routing,
        "loaded_models": loaded_models,
        "register_shared_memory": register_shared_memory,
        "unregister_shared_memory": unregister_shared_memory,
    }

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_receive(reader), _READ_TIMEOUT_S)
            operation = operations.get(str(request.get("op")))
            if operation is None:
                reply: dict[str, Any] = {"error": {"code": "invalid_argument", "message": "unknown sibling call"}}
            else:
                try:
                    reply = {"value": await operation(request)}
                except ModelServeError as exc:
                    reply = {"error": {"code": (exc.code or ErrorCode.INTERNAL).value, "message": exc.message}}
            await _send(writer, reply)
        except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.warning("a sibling call failed: %r", exc)
        finally:
            writer.close()

    path.unlink(missing_ok=True)  # a previous worker of this slot left its socket behind
    return await asyncio.start_unix_server(answer, str(path))
