"""Between the client's view of a tensor and the model's: ``reshape`` from the config, and output
datatypes cast to what the config declares."""

from __future__ import annotations

import numpy as np

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import RuntimeFailure
from modelserve.core.signature import TensorSpec

__all__ = ["to_client", "to_model_shape"]


def to_model_shape(array: np.ndarray, spec: TensorSpec, batching: bool) -> np.ndarray:
    if spec.model_shape is None:
        return array
    shape = ((array.shape[0],) if batching else ()) + spec.model_shape
    return array.reshape(shape)


def to_client(array: np.ndarray, spec: TensorSpec, batch: int | None, owner: str) -> np.ndarray:
    target = spec.datatype
    if target is Datatype.BYTES:
        if array.dtype != object:
            array = array.astype(object)
    elif target is not Datatype.BF16 and array.dtype != target.numpy_dtype:
        array = array.astype(target.numpy_dtype)
    if spec.model_shape is not None:
        client_dims = tuple(spec.dims)
        shape = ((batch,) if batch is not None else ()) + client_dims
        try:
            array = array.reshape(shape)
        except ValueError as exc:
            raise RuntimeFailure(
                f"{owner}: output '{spec.name}' has shape {list(array.shape)}, which cannot be reshaped to "
                f"the config's dims {list(shape)}"
            ) from exc
    return array
