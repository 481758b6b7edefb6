"""REST bodies of the Open Inference Protocol: JSON, and Triton's binary tensor extension.

A request body is a JSON header, optionally followed by binary tensor blobs. The header's length comes
from ``Inference-Header-Content-Length`` (the only signal: Content-Type decides nothing, since
tritonclient sends JSON with no Content-Type or with ``application/octet-stream``). Blobs follow in the
order of the inputs that carry ``binary_data_size``. Every length is checked against the body before use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ErrorCode
from modelserve.core.inference import InferRequest, InferResult, ParameterValue, RequestedOutput
from modelserve.protocol.parameters import parse_request_parameters
from modelserve.protocol.tensor_codec import (
    checked_datatype,
    checked_shape,
    tensor_from_json,
    tensor_from_raw,
    tensor_to_json_data,
    tensor_to_raw,
)

__all__ = [
    "DecodedRestRequest",
    "RestLimits",
    "decode_infer_request",
    "encode_infer_response",
    "parse_json_body",
]


@dataclass(frozen=True, slots=True)
class RestLimits:
    max_tensor_bytes: int
    max_json_depth: int
    max_requested_outputs: int


@dataclass(frozen=True, slots=True)
class DecodedRestRequest:
    request: InferRequest
    binary_data_output: bool


def parse_json_body(body: bytes | bytearray | memoryview, what: str = "request body") -> Any:
    """Parse JSON; accepts NaN/Infinity as tritonclient (python-rapidjson) writes them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            # orjson refuses NaN/Infinity literals; the standard library accepts them.
            return json.loads(bytes(body))
        except (ValueError, RecursionError):
            pass
        raise DecodeError(
            f"{what} is not valid JSON ({exc.msg} at byte {exc.pos}); send a JSON object, optionally followed "
            "by binary tensors with the Inference-Header-Content-Length header"
        ) from exc


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    return _object(value, f"{what} 'parameters'")


def decode_infer_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    model_name: str,
    model_version: str,
    limits: RestLimits,
) -> DecodedRestRequest:
    """Decode an infer request body. Raises :class:`DecodeError` naming the field and the fix."""
    view = memoryview(body)
    if header_length is None:
        header_bytes, blobs = view, view[len(view) :]
    else:
        if header_length == 0:
            raise DecodeError(
                "raw binary requests (Inference-Header-Content-Length: 0) are not supported; send a JSON header "
                "describing the inputs"
            )
        if header_length > len(view):
            raise DecodeError(
                f"Inference-Header-Content-Length is {header_length} but the body is only {len(view)} bytes; "
                "it must be the byte length of the JSON header that starts the body"
            )
        header_bytes, blobs = view[:header_length], view[header_length:]
    header = _object(parse_json_body(header_bytes, "the inference request header"), "the inference request")

    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise DecodeError(f"'id' must be a string, got {type(request_id).__name__}")
    params = parse_request_parameters(_parameters(header.get("parameters"), "request"))

    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise DecodeError('the request needs an \'inputs\' list: [{"name", "shape", "datatype", "data"}]')
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, Datatype] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor = _object(raw, f"inputs[{index}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise DecodeError(f"inputs[{index}] needs a 'name' string")
        what = f"input '{name[:64]}'"
        if name in inputs:
            raise DecodeError(f"{what} appears twice in 'inputs'")
        datatype = checked_datatype(tensor.get("datatype"), what)
        shape, count = checked_shape(tensor.get("shape"), datatype, limits.max_tensor_bytes, what)
        tensor_params = _parameters(tensor.get("parameters"), what)
        size = tensor_params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise DecodeError(f"{what}: 'binary_data_size' must be a non-negative integer")
            if "data" in tensor:
                raise DecodeError(f"{what} has both 'data' and 'binary_data_size'; send one or the other")
            if offset + size > len(blobs):
                raise DecodeError(
                    f"{what}: binary_data_size {size} runs past the end of the body ({len(blobs) - offset} bytes "
                    "left); the binary blobs must follow the JSON header in input order"
                )
            inputs[name] = tensor_from_raw(blobs[offset : offset + size], datatype, shape, count, what)
            offset += size
        elif "data" in tensor:
            inputs[name] = tensor_from_json(tensor["data"], datatype, shape, count, limits.max_json_depth, what)
        else:
            raise DecodeError(f"{what} has neither 'data' nor a 'binary_data_size' parameter")
        datatypes[name] = datatype
    if offset != len(blobs):
        raise DecodeError(
            f"the body has {len(blobs) - offset} bytes after the JSON header and the declared binary inputs; "
            "check Inference-Header-Content-Length and each input's binary_data_size"
        )

    requested: tuple[RequestedOutput, ...] | None = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise DecodeError("'outputs' must be a list of {\"name\": ...} objects")
        if len(raw_outputs) > limits.max_requested_outputs:
            raise DecodeError(
                f"the request asks for {len(raw_outputs)} outputs; at most {limits.max_requested_outputs} are allowed"
            )
        items = []
        for index, raw in enumerate(raw_outputs):
            output = _object(raw, f"outputs[{index}]")
            name = output.get("name")
            if not isinstance(name, str) or not name:
                raise DecodeError(f"outputs[{index}] needs a 'name' string")
            out_params = _parameters(output.get("parameters"), f"output '{name[:64]}'")
            items.append(RequestedOutput(name=name, parameters=_scalar_parameters(out_params, name)))
        requested = tuple(items)

    request = InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        input_datatypes=datatypes,
        id=request_id,
        requested_outputs=requested,
        parameters=params.custom,
        priority=params.priority,
        timeout_us=params.timeout_us,
    )
    return DecodedRestRequest(request=request, binary_data_output=params.binary_data_output)


def _scalar_parameters(raw: Mapping[str, Any], name: str) -> dict[str, ParameterValue]:
    for key, value in raw.items():
        if not isinstance(value, (str, int, float, bool)):
            raise DecodeError(f"output '{name[:64]}' parameter '{key[:64]}' must be a string, number or boolean")
    return dict(raw)


def _wants_binary(requested: RequestedOutput | None, default: bool) -> bool:
    if requested is not None:
        flag = requested.parameters.get("binary_data")
        if isinstance(flag, bool):
            return flag
    return default


def _has_non_finite(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 0 and not bool(np.isfinite(array).all())


def encode_infer_response(
    response: InferResult, request: InferRequest, binary_data_output: bool
) -> tuple[bytes, int | None]:
    """Encode a response body. Returns the body and, when binary blobs follow, the JSON header length."""
    requested = {o.name: o for o in request.requested_outputs} if request.requested_outputs else {}
    outputs_json: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, array in response.outputs.items():
        datatype = response.output_datatypes[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype.value, "shape": list(array.shape)}
        if _wants_binary(requested.get(name), binary_data_output) or datatype in (Datatype.BF16,):
            blob = tensor_to_raw(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            data = tensor_to_json_data(array, datatype, name)
            if isinstance(data, np.ndarray) and _has_non_finite(data):
                # orjson writes NaN as null; tritonclient reads the NaN/Infinity literals.
                data = orjson.Fragment(json.dumps(data.tolist()))
            entry["data"] = data
        outputs_json.append(entry)
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = outputs_json
    try:
        header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        raise DecodeError(f"cannot encode the response as JSON: {exc}", code=ErrorCode.INTERNAL) from exc
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
