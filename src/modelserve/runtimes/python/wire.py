"""Tensors across the worker pipe: a small JSON header, then each tensor's raw buffer, no copies of data
through JSON. Numeric tensors are sent as their memory; BYTES as length-prefixed elements.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from modelserve.core.bytes_tensor import deserialize_bytes_tensor, serialize_bytes_tensor

__all__ = ["receive_message", "send_message"]


def send_message(conn: Connection, header: dict[str, Any], tensors: Mapping[str, np.ndarray] = {}) -> None:
    """Send ``header`` and ``tensors``. Raises ``OSError``/``BrokenPipeError`` if the peer is gone."""
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, array in tensors.items():
        if array.dtype == object or array.dtype.kind in ("S", "U"):
            data: bytes | memoryview = serialize_bytes_tensor(array)
            kind = "bytes"
        else:
            contiguous = np.ascontiguousarray(array)
            data = contiguous.data.cast("B")
            kind = contiguous.dtype.str
        entries.append({"name": name, "dtype": kind, "shape": list(array.shape)})
        buffers.append(data)
    conn.send_bytes(json.dumps({**header, "tensors": entries}).encode())
    for buffer in buffers:
        conn.send_bytes(buffer)


def receive_message(conn: Connection) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Receive one message. Raises ``EOFError`` when the peer closed the pipe (e.g. it died)."""
    header: dict[str, Any] = json.loads(conn.recv_bytes())
    tensors: dict[str, np.ndarray] = {}
    for entry in header.pop("tensors", []):
        raw = conn.recv_bytes()
        shape = tuple(entry["shape"])
        if entry["dtype"] == "bytes":
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            array = deserialize_bytes_tensor(raw, count, what=f"tensor '{entry['name']}'").reshape(shape)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(shape)
        tensors[entry["name"]] = array
    return header, tensors
