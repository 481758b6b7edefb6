"""Tensor datatypes: the protocol's names, numpy dtypes, Triton config enum names, element sizes.

One table so that the codecs, the config reader and the runtimes agree on every datatype.
BF16 is Triton's; numpy has no native bfloat16, so BF16 tensors travel as raw 2-byte words
(``uint16`` views) and are never converted to JSON.
"""

from __future__ import annotations

import enum
from typing import Final

import numpy as np

__all__ = [
    "Datatype",
    "datatype_from_config_enum",
    "datatype_from_numpy",
]


class Datatype(enum.StrEnum):
    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BF16 = "BF16"
    BYTES = "BYTES"

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        """The numpy dtype tensors of this datatype use (``object`` for BYTES, ``uint16`` for BF16)."""
        return _NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element on the wire; 0 for BYTES, whose elements vary in length."""
        return _ITEMSIZE[self]

    @property
    def config_enum(self) -> str:
        """The name in Triton's ``DataType`` enum (``TYPE_FP32``...)."""
        return "TYPE_STRING" if self is Datatype.BYTES else f"TYPE_{self.value}"


_NUMPY: Final[dict[Datatype, np.dtype[np.generic]]] = {
    Datatype.BOOL: np.dtype(np.bool_),
    Datatype.UINT8: np.dtype(np.uint8),
    Datatype.UINT16: np.dtype(np.uint16),
    Datatype.UINT32: np.dtype(np.uint32),
    Datatype.UINT64: np.dtype(np.uint64),
    Datatype.INT8: np.dtype(np.int8),
    Datatype.INT16: np.dtype(np.int16),
    Datatype.INT32: np.dtype(np.int32),
    Datatype.INT64: np.dtype(np.int64),
    Datatype.FP16: np.dtype(np.float16),
    Datatype.FP32: np.dtype(np.float32),
    Datatype.FP64: np.dtype(np.float64),
    Datatype.BF16: np.dtype(np.uint16),
    Datatype.BYTES: np.dtype(object),
}
_ITEMSIZE: Final[dict[Datatype, int]] = {dt: (0 if dt is Datatype.BYTES else _NUMPY[dt].itemsize) for dt in Datatype}
_FROM_NUMPY: Final[dict[np.dtype[np.generic], Datatype]] = {
    np.dtype(np.bool_): Datatype.BOOL,
    np.dtype(np.uint8): Datatype.UINT8,
    np.dtype(np.uint16): Datatype.UINT16,
    np.dtype(np.uint32): Datatype.UINT32,
    np.dtype(np.uint64): Datatype.UINT64,
    np.dtype(np.int8): Datatype.INT8,
    np.dtype(np.int16): Datatype.INT16,
    np.dtype(np.int32): Datatype.INT32,
    np.dtype(np.int64): Datatype.INT64,
    np.dtype(np.float16): Datatype.FP16,
    np.dtype(np.float32): Datatype.FP32,
    np.dtype(np.float64): Datatype.FP64,
    np.dtype(object): Datatype.BYTES,
}
_BY_VALUE: Final[dict[str, Datatype]] = {dt.value: dt for dt in Datatype}
_FROM_CONFIG: Final[dict[str, Datatype]] = {dt.config_enum: dt for dt in Datatype}


def parse_datatype(name: str) -> Datatype | None:
    """The datatype for a protocol name such as ``"FP32"``, or None when the name is unknown."""
    return _BY_VALUE.get(name)


def datatype_from_config_enum(name: str) -> Datatype | None:
    """The datatype for a Triton config enum name such as ``"TYPE_FP32"``, or None (TYPE_INVALID...)."""
    return _FROM_CONFIG.get(name)


def datatype_from_numpy(dtype: np.dtype[np.generic]) -> Datatype | None:
    """The datatype for a numpy dtype; numpy string dtypes (``S``/``U``) count as BYTES."""
    if dtype.kind in ("S", "U"):
        return Datatype.BYTES
    return _FROM_NUMPY.get(dtype)
