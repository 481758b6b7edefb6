"""text_stats: upper-case each string element and report its length in UTF-8 bytes."""

from __future__ import annotations

import numpy as np

from modelserve import PythonModel


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _upper(value: bytes) -> bytes:
    # surrogateescape keeps bytes that are not valid UTF-8 unchanged instead of failing.
    return value.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


class Model(PythonModel):
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        text = inputs["text"]
        items = [_as_bytes(value) for value in text.reshape(-1)]
        upper = np.empty(len(items), dtype=object)
        upper[:] = [_upper(item) for item in items]
        length = np.array([len(item) for item in items], dtype=np.int64)
        return {"upper": upper.reshape(text.shape), "length": length.reshape(text.shape)}
