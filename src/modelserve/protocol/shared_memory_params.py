"""The shared-memory parameters of a tensor (Triton's shared-memory extension), read into a
:class:`~modelserve.core.shared_memory.SharedMemoryRef`.

``shared_memory_region`` (string) names a registered region, ``shared_memory_byte_size`` (integer) is
required with it, ``shared_memory_offset`` (integer) is optional and 0 by default; either integer without a
region is refused, as Triton refuses it. Checks that need only the tensor happen here, before any region is
looked at: a fixed-size tensor's ``byte_size`` must equal its shape's element count times its datatype's
size, and no window may be larger than the server's tensor limit (the bytes are copied in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ErrorCode
from modelserve.core.shared_memory import RegionAccess, SharedMemoryRef

__all__ = ["SHARED_MEMORY_PARAMETERS", "check_input_size", "regions_or_refuse", "shared_memory_ref", "window_elements"]

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"
SHARED_MEMORY_PARAMETERS = frozenset({REGION, OFFSET, BYTE_SIZE})


def _integer(parameters: Mapping[str, Any], key: str, what: str) -> int:
    value = parameters[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(f"{what}: '{key}' must be a non-negative integer, got {str(value)[:64]!r}")
    return value


def shared_memory_ref(parameters: Mapping[str, Any], what: str) -> SharedMemoryRef | None:
    """The tensor's shared-memory window, or None when its parameters name no region. Raises
    :class:`DecodeError` for a parameter of the wrong type or one given without the others it needs."""
    if REGION not in parameters:
        for key in (OFFSET, BYTE_SIZE):
            if key in parameters:
                raise DecodeError(f"{what}: '{key}' can not be specified without the '{REGION}' parameter")
        return None
    region = parameters[REGION]
    if not isinstance(region, str) or not region:
        raise DecodeError(f"{what}: '{REGION}' must be the name of a registered region (a non-empty string)")
    if BYTE_SIZE not in parameters:
        raise DecodeError(f"{what}: '{BYTE_SIZE}' must be specified along with the '{REGION}' parameter")
    offset = _integer(parameters, OFFSET, what) if OFFSET in parameters else 0
    return SharedMemoryRef(region=region, offset=offset, byte_size=_integer(parameters, BYTE_SIZE, what))


def check_input_size(ref: SharedMemoryRef, datatype: Datatype, count: int, max_tensor_bytes: int, what: str) -> None:
    """An input's window against its declared shape (``count`` elements): exact for fixed-size types,
    and never over ``max_tensor_bytes``. Raises :class:`DecodeError`."""
    if datatype is not Datatype.BYTES:
        expected = count * datatype.itemsize
        if ref.byte_size != expected:
            raise DecodeError(
                f"{what}: {BYTE_SIZE} is {ref.byte_size} but shape of {count} {datatype.value} elements needs "
                f"{expected} bytes ({count} x {datatype.itemsize}); make the byte size match the shape"
            )
    elif ref.byte_size > max_tensor_bytes:
        raise DecodeError(
            f"{what}: {BYTE_SIZE} {ref.byte_size} is over the server's limit of {max_tensor_bytes} bytes per "
            "tensor (limits.max_tensor_bytes)",
            code=ErrorCode.PAYLOAD_TOO_LARGE,
        )


def regions_or_refuse(regions: RegionAccess | None, what: str) -> RegionAccess:
    """``regions``, or the refusal for a tensor that names a region while the extension is off."""
    if regions is None:
        raise DecodeError(
            f"{what} names a shared memory region, but system shared memory is disabled on this server "
            "(shared_memory.enabled: false); send the tensor in the request instead",
            code=ErrorCode.UNSUPPORTED,
        )
    return regions


def window_elements(ref: SharedMemoryRef, datatype: Datatype) -> int:
    """The most elements of ``datatype`` the window's bytes can hold (BYTES: a 4-byte length each): a
    shape declaring more is refused as a mismatch, before the size limit (tensor_codec.checked_shape)."""
    return ref.byte_size // (datatype.itemsize or 4)
