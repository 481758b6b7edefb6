"""gRPC messages of ``inference.GRPCInferenceService`` to and from core types.

Inputs come either in ``raw_input_contents`` (consumed in input order; what tritonclient always sends)
or in the typed ``contents`` fields; mixing the two is refused. Outputs always go out as
``raw_output_contents``, one entry per output in order, as Triton does and as tritonclient's
``as_numpy`` and perf_analyzer expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError
from modelserve.core.inference import (
    ARM_PARAMETER,
    FALLBACK_PARAMETER,
    InferRequest,
    InferResult,
    ParameterValue,
    RequestedOutput,
)
from modelserve.core.shared_memory import RegionAccess, SharedMemoryRef
from modelserve.protocol.parameters import RequestParameters, check_parameter_count, parse_request_parameters
from modelserve.protocol.shared_memory_params import (
    SHARED_MEMORY_PARAMETERS,
    check_input_size,
    regions_or_refuse,
    shared_memory_ref,
    window_elements,
)
from modelserve.protocol.tensor_codec import checked_datatype, checked_shape, tensor_from_raw, tensor_to_raw

__all__ = [
    "GrpcRequestHeader",
    "decode_infer_request",
    "decode_infer_tensors",
    "encode_infer_response",
    "parameter_values",
    "parse_infer_header",
]

# Which InferTensorContents field carries each datatype, and the wider numpy type it arrives in.
_CONTENTS: dict[Datatype, str] = {
    Datatype.BOOL: "bool_contents",
    Datatype.INT8: "int_contents",
    Datatype.INT16: "int_contents",
    Datatype.INT32: "int_contents",
    Datatype.INT64: "int64_contents",
    Datatype.UINT8: "uint_contents",
    Datatype.UINT16: "uint_contents",
    Datatype.UINT32: "uint_contents",
    Datatype.UINT64: "uint64_contents",
    Datatype.FP32: "fp32_contents",
    Datatype.FP64: "fp64_contents",
    Datatype.BYTES: "bytes_contents",
}


_WIDE: dict[str, type[np.generic]] = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def parameter_values(parameters: Mapping[str, Any], what: str = "the request") -> dict[str, ParameterValue]:
    """InferParameter map to plain values (whichever oneof field is set); at most MAX_PARAMETERS of them."""
    check_parameter_count(len(parameters), what)
    values: dict[str, ParameterValue] = {}
    for key, param in parameters.items():
        which = param.WhichOneof("parameter_choice")
        if which is None:
            raise DecodeError(f"parameter '{key[:64]}' has no value set")
        values[key] = getattr(param, which)
    return values


def _check_contents(contents: Any, datatype: Datatype, shape: tuple[int, ...], count: int, what: str) -> str:
    """The typed field ``datatype`` travels in, once its length is checked (no element is read)."""
    field = _CONTENTS.get(datatype)
    if field is None:
        raise DecodeError(f"{what}: {datatype.value} data must be sent in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise DecodeError(f"{what}: contents.{field} has {len(values)} elements but shape {list(shape)} needs {count}")
    return field


def _from_contents(contents: Any, datatype: Datatype, shape: tuple[int, ...], count: int, what: str) -> np.ndarray:
    field = _check_contents(contents, datatype, shape, count, what)
    values = getattr(contents, field)
    if datatype is Datatype.BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    # Built in the field's own type: np.array() of mixed small and >= 2**63 ints would go through float64.
    wide = np.fromiter(values, dtype=_WIDE[field], count=count)
    target = datatype.numpy_dtype
    if datatype in (Datatype.INT8, Datatype.INT16, Datatype.UINT8, Datatype.UINT16) and count:
        info = np.iinfo(target)  # type: ignore[type-var]
        if wide.min() < info.min or wide.max() > info.max:
            raise DecodeError(f"{what}: a value is outside the range of {datatype.value}")
    return wide.astype(target).reshape(shape)


@dataclass(frozen=True, slots=True)
class GrpcRequestHeader:
    """A ModelInferRequest's metadata, checked, with no tensor element decoded (:func:`parse_infer_header`)."""

    message: Any
    declared: dict[str, tuple[Datatype, tuple[int, ...]]]  # input name -> (datatype, shape), in input order
    counts: tuple[int, ...]
    parameters: RequestParameters
    requested_outputs: tuple[RequestedOutput, ...] | None
    # Per input, in input order: its shared-memory window, or None when it travels in the message.
    windows: tuple[SharedMemoryRef | None, ...] = ()

    @property
    def shared_memory_bytes(self) -> int:
        """Bytes the inputs in shared memory will copy in: with the message's size, what decoding costs."""
        return sum(w.byte_size for w in self.windows if w is not None)


def _requested_output(output: Any) -> RequestedOutput:
    what = f"output '{output.name[:64]}'"
    values = parameter_values(output.parameters, what)
    window = shared_memory_ref(values, what)
    if window is not None and "classification" in values:
        raise DecodeError(f"{what} can't set both 'shared_memory_region' and 'classification'")
    return RequestedOutput(name=output.name, parameters=values, shared_memory=window)


def _input_window(tensor: Any, what: str) -> SharedMemoryRef | None:
    """An input's shared-memory window. Only those three parameters are read: an input's other parameters
    are ignored, as before the extension existed."""
    present = {key: tensor.parameters[key] for key in SHARED_MEMORY_PARAMETERS if key in tensor.parameters}
    if not present:
        return None
    return shared_memory_ref(parameter_values(present, what), what)


def parse_infer_header(
    message: Any, max_tensor_bytes: int, max_requested_outputs: int, max_inputs: int = 1024
) -> GrpcRequestHeader:
    """Check a request's metadata (counts, parameters, outputs, names, datatypes, shapes) without touching
    ``raw_input_contents`` or ``contents``. Raises :class:`DecodeError`."""
    raw_contents = message.raw_input_contents
    has_raw = len(raw_contents) > 0
    if len(message.inputs) > max_inputs:
        raise DecodeError(
            f"the request has {len(message.inputs)} inputs; at most {max_inputs} are allowed (limits.max_inputs)"
        )
    params = parse_request_parameters(parameter_values(message.parameters, "the request"))
    requested: tuple[RequestedOutput, ...] | None = None
    if len(message.outputs):
        if len(message.outputs) > max_requested_outputs:
            raise DecodeError(
                f"the request asks for {len(message.outputs)} outputs; at most {max_requested_outputs} are allowed"
            )
        requested = tuple(_requested_output(o) for o in message.outputs)
    declared: dict[str, tuple[Datatype, tuple[int, ...]]] = {}
    counts: list[int] = []
    windows: list[SharedMemoryRef | None] = []
    raw_index = 0  # raw_input_contents hold the inputs not in shared memory, in input order (tritonclient)
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise DecodeError(f"inputs[{index}] needs a name")
        what = f"input '{name[:64]}'"
        if name in declared:
            raise DecodeError(f"{what} appears twice in inputs")
        datatype = checked_datatype(tensor.datatype, what)
        window = _input_window(tensor, what) if len(tensor.parameters) else None
        # What was sent, checked against the shape before the size limit (tensor_codec.checked_shape): the
        # raw bytes or shared-memory window, or typed contents (every element takes at least a byte).
        sent: dict[str, int] = {}
        if window is not None:
            sent["max_sent_elements"] = window_elements(window, datatype)
        elif has_raw:
            if raw_index < len(raw_contents) and not tensor.HasField("contents"):
                sent["sent_bytes"] = len(raw_contents[raw_index])
        else:
            sent["max_sent_elements"] = tensor.contents.ByteSize() if tensor.HasField("contents") else 0
        shape, count = checked_shape(list(tensor.shape), datatype, max_tensor_bytes, what, **sent)
        if window is not None:
            if tensor.HasField("contents"):
                raise DecodeError(f"{what}: unexpected 'contents' provided when using shared memory for the input")
            check_input_size(window, datatype, count, max_tensor_bytes, what)
        elif has_raw:
            if tensor.HasField("contents"):
                raise DecodeError(
                    f"{what} has 'contents' while the request also uses raw_input_contents; send all inputs one way"
                )
            if raw_index >= len(raw_contents):
                raise DecodeError(
                    f"the request has {len(message.inputs)} inputs but only {len(raw_contents)} raw_input_contents"
                )
            raw_index += 1
        else:
            _check_contents(tensor.contents, datatype, shape, count, what)
        declared[name] = (datatype, shape)
        counts.append(count)
        windows.append(window)
    if has_raw and len(raw_contents) != raw_index:
        raise DecodeError(
            f"the request has {len(raw_contents)} raw_input_contents for {raw_index} inputs not in shared memory; "
            "send exactly one per input"
        )
    return GrpcRequestHeader(message, declared, tuple(counts), params, requested, tuple(windows))


def decode_infer_tensors(header: GrpcRequestHeader, regions: RegionAccess | None = None) -> InferRequest:
    """Decode the elements of a checked header's inputs. Inputs in shared memory are copied out of
    ``regions`` (None: the extension is off), and outputs to be written there are checked against it.
    Raises :class:`DecodeError`, or what ``regions`` raises for a bad region."""
    message = header.message
    raw_contents = message.raw_input_contents
    has_raw = len(raw_contents) > 0
    inputs: dict[str, np.ndarray] = {}
    for output in header.requested_outputs or ():
        if output.shared_memory is not None:
            what = f"output '{output.name[:64]}'"
            regions_or_refuse(regions, what).check(output.shared_memory, what)
    windows = header.windows or (None,) * len(header.counts)
    raw_index = 0
    for tensor, (name, (datatype, shape)), count, window in zip(
        message.inputs, header.declared.items(), header.counts, windows, strict=True
    ):
        what = f"input '{name[:64]}'"
        if window is not None:
            raw = regions_or_refuse(regions, what).read(window, what)
            inputs[name] = tensor_from_raw(raw, datatype, shape, count, what)
        elif has_raw:
            inputs[name] = tensor_from_raw(raw_contents[raw_index], datatype, shape, count, what)
            raw_index += 1
        else:
            inputs[name] = _from_contents(tensor.contents, datatype, shape, count, what)
    params = header.parameters
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        input_datatypes={name: datatype for name, (datatype, _) in header.declared.items()},
        id=message.id or None,
        requested_outputs=header.requested_outputs,
        parameters=params.custom,
        priority=params.priority,
        timeout_us=params.timeout_us,
    )


def decode_infer_request(
    message: Any, max_tensor_bytes: int, max_requested_outputs: int, max_inputs: int = 1024
) -> InferRequest:
    """A ModelInferRequest to an :class:`InferRequest` (:func:`parse_infer_header`, then
    :func:`decode_infer_tensors`). Raises :class:`DecodeError`."""
    return decode_infer_tensors(parse_infer_header(message, max_tensor_bytes, max_requested_outputs, max_inputs))


def encode_infer_response(
    response: InferResult,
    requested_outputs: tuple[RequestedOutput, ...] | None = None,
    regions: RegionAccess | None = None,
) -> Any:
    """The ModelInferResponse. An output requested in shared memory is written to its region (``regions``)
    and answered with its parameters and an empty raw_output_contents entry (Triton's: tritonclient finds
    each output's contents by position)."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    if response.arm:
        message.parameters[ARM_PARAMETER].string_param = response.arm
    if response.fallback:
        message.parameters[FALLBACK_PARAMETER].string_param = response.fallback
    windows = {o.name: o.shared_memory for o in requested_outputs or () if o.shared_memory is not None}
    raw = message.raw_output_contents
    for name, array in response.outputs.items():
        datatype = response.output_datatypes[name]
        output = message.outputs.add(name=name, datatype=datatype.value, shape=array.shape)
        contents = tensor_to_raw(array, datatype)
        window = windows.get(name)
        if window is None:
            raw.append(bytes(contents))
            continue
        what = f"output '{name[:64]}'"
        regions_or_refuse(regions, what).write(window, contents, what)
        output.parameters["shared_memory_region"].string_param = window.region
        output.parameters["shared_memory_byte_size"].int64_param = len(contents)
        if window.offset:
            output.parameters["shared_memory_offset"].int64_param = window.offset
        raw.append(b"")
    return message
