"""REST bodies of the Open Inference Protocol: JSON, and Triton's binary tensor extension.

A request body is a JSON header, optionally followed by binary tensor blobs. The header's length comes
from ``Inference-Header-Content-Length`` (the only signal: Content-Type decides nothing, since
tritonclient sends JSON with no Content-Type or with ``application/octet-stream``). Blobs follow in the
order of the inputs that carry ``binary_data_size``. Every length is checked against the body before use.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError, ErrorCode
from modelserve.core.inference import (
    ARM_PARAMETER,
    FALLBACK_PARAMETER,
    InferRequest,
    InferResult,
    ParameterValue,
    RequestedOutput,
)
from modelserve.core.shared_memory import RegionAccess, SharedMemoryRef
from modelserve.protocol.json_arrays import MIN_SPAN_BYTES, JsonSyntaxError, decode_numeric_span
from modelserve.protocol.parameters import (
    MAX_PARAMETERS,
    RequestParameters,
    check_parameter_count,
    parse_request_parameters,
)
from modelserve.protocol.shared_memory_params import (
    check_input_size,
    regions_or_refuse,
    shared_memory_ref,
    window_elements,
)
from modelserve.protocol.tensor_codec import (
    PRECHECK_MIN_BYTES,
    check_json_datatype,
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
    "RestRequestHeader",
    "decode_infer_request",
    "decode_infer_tensors",
    "encode_infer_response",
    "parse_infer_header",
    "parse_json_body",
]


@dataclass(frozen=True, slots=True)
class RestLimits:
    max_tensor_bytes: int
    max_json_depth: int
    max_requested_outputs: int
    max_inputs: int = 1024


@dataclass(frozen=True, slots=True)
class DecodedRestRequest:
    request: InferRequest
    binary_data_output: bool


# Where the standard library reads JSON that orjson refuses: the NaN/Infinity literals, numbers past a double
# (1e400), lone surrogates (escaped, or UTF-8-encoded: json decodes with surrogatepass), and UTF-8 BOM, UTF-16
# and UTF-32 bodies (json.detect_encoding: a BOM or a NUL in the first 4 bytes).
_LAX_MARKS = (b"NaN", b"Infinity", b"\\u", b"\xed")
_LAX_FIRST_BYTES = frozenset(b"\x00\xef\xfe\xff")


def _may_read_laxly(body: bytes | bytearray | memoryview, exc: orjson.JSONDecodeError) -> bool:
    """Whether json.loads could read a body orjson refused: else retrying costs ~6x orjson's time and ~2x its
    memory for the same refusal (a 64 MiB body with a typo at its end: +2.9 s, +892 MiB)."""
    head = bytes(body[:4])
    if "infinity" in exc.msg or (head and (head[0] in _LAX_FIRST_BYTES or 0 in head)):
        return True
    if isinstance(body, (bytes, bytearray)):
        return any(mark in body for mark in _LAX_MARKS)
    overlap = max(len(mark) for mark in _LAX_MARKS) - 1  # windows of a view: no copy of the whole
    for start in range(0, len(body), _COUNT_WINDOW):
        window = bytes(body[start : start + _COUNT_WINDOW + overlap])
        if any(mark in window for mark in _LAX_MARKS):
            return True
    return False


def parse_json_body(body: bytes | bytearray | memoryview, what: str = "request body") -> Any:
    """Parse JSON; accepts NaN/Infinity as tritonclient (python-rapidjson) writes them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not _may_read_laxly(body, exc):
            raise _invalid_json(what, exc.msg, exc.pos) from exc
        try:
            # orjson refuses NaN/Infinity literals; the standard library accepts them. It also accepts lone
            # surrogate escapes ("\ud800"), which are not text: they must not travel on as str.
            document = json.loads(bytes(body))
            json.dumps(document, ensure_ascii=False).encode("utf-8")
            return document
        except UnicodeEncodeError:
            raise DecodeError(
                f"{what} holds a lone surrogate escape (such as \\ud800), which is not Unicode text; send valid "
                "UTF-8, or binary data for non-text bytes"
            ) from exc
        except (ValueError, RecursionError):
            pass
        raise _invalid_json(what, exc.msg, exc.pos) from exc


def _invalid_json(what: str, msg: str, pos: int) -> DecodeError:
    return DecodeError(
        f"{what} is not valid JSON ({msg} at byte {pos}); send a JSON object, optionally followed "
        "by binary tensors with the Inference-Header-Content-Length header"
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    return _object(value, f"{what} 'parameters'")


@dataclass(frozen=True, slots=True)
class _InputHeader:
    name: str
    what: str
    datatype: Datatype
    shape: tuple[int, ...]
    count: int
    blob: memoryview | None  # binary extension: this input's bytes
    data: Any  # JSON 'data' as parsed, unless data_span holds it still unparsed
    data_span: memoryview | None
    shared_memory: SharedMemoryRef | None = None  # the shared-memory extension: where its bytes are


@dataclass(frozen=True, slots=True)
class RestRequestHeader:
    """A request's JSON header, checked, with no tensor element decoded (:func:`parse_infer_header`)."""

    model_name: str
    model_version: str
    id: str | None
    parameters: RequestParameters
    inputs: tuple[_InputHeader, ...]
    requested_outputs: tuple[RequestedOutput, ...] | None

    @property
    def declared(self) -> dict[str, tuple[Datatype, tuple[int, ...]]]:
        """Input name -> (datatype, shape): what the service layer checks before the elements are decoded."""
        return {i.name: (i.datatype, i.shape) for i in self.inputs}

    @property
    def shared_memory_bytes(self) -> int:
        """Bytes the inputs in shared memory will copy in: with the body's length, what decoding costs."""
        return sum(i.shared_memory.byte_size for i in self.inputs if i.shared_memory is not None)


# A JSON 'data' array of numbers holds none of '"', '{', '}': found by byte search, parsed only if needed.
_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
# The same size above which the transports check a request against the model before decoding it: the
# cut-out arrays are then parsed only for a request that passed the check.
_SPLIT_MIN_BYTES = PRECHECK_MIN_BYTES


def _split_data(buffer: bytes | bytearray, end: int, max_spans: int) -> tuple[bytes, dict[str, memoryview]] | None:
    """The header ``buffer[:end]`` with every numeric ``"data": [...]`` array cut out and replaced by a
    unique placeholder string, and the arrays by placeholder. None when nothing was cut, or when more than
    ``max_spans`` arrays are found (more than a request may have inputs: the header is parsed whole and
    refused by its count, so cutting costs at most ``max_spans`` searches). The caller must
    check that each placeholder came back as an input's ``data`` (else the cut was not a data array)."""
    token = secrets.token_hex(8)
    pieces: list[bytes | bytearray] = []
    spans: dict[str, memoryview] = {}
    view = memoryview(buffer)
    start = pos = 0
    while (match := _DATA_KEY.search(buffer, pos, end)) is not None:
        begin = match.end() - 1
        close = buffer.find(b"}", begin, end)
        if close < 0:
            break
        for stop in (b'"', b"{"):
            hit = buffer.find(stop, begin, close)
            if hit >= 0:
                close = hit
        last = buffer.rfind(b"]", begin, close)
        if last < 0:  # strings or objects inside: left to the JSON parser
            pos = match.end()
            continue
        if len(spans) >= max_spans:
            return None
        key = f"modelserve-data:{token}:{len(spans)}"
        pieces += (buffer[start:begin], orjson.dumps(key))
        spans[key] = view[begin : last + 1]
        start = pos = last + 1
    if not spans:
        return None
    pieces.append(buffer[start:end])
    return b"".join(pieces), spans


# The caps on inputs, outputs and parameters are checked on the parsed header, but parsing a header of a
# million small objects costs seconds and ~12x its size (a 64 MiB body of 10^6 inputs: 4.1 s, +771 MiB). So
# the raw bytes are first counted for keys that no request within the caps has so many of: one count of quotes
# for most bodies (~0.02 s for 64 MiB), a few byte searches where quotes abound (~0.3 s). Each count is a lower
# bound of what the parse would find, never more:
#
# - '"name":' not preceded by a backslash. Its first quote is then not an escaped one (inside a string a quote
#   is always written \"), so it delimits a string; a closing quote is followed by , : ] } or whitespace, not
#   by 'n', so it opens one; that string is exactly `name` (its next quote follows 'e', so it closes it), and a
#   string followed by ':' is an object key. So every match is a distinct key written "name". (A "name" key
#   written with escapes or with space before its colon is not counted: a lower bound is all we need, and
#   `\\"name":` -- an escaped backslash, then a real key -- is left out the same way.)
# - 'w":' where w is a letter, digit or '_': that quote follows string content, not a structural character
#   or whitespace (what precedes an opening quote) nor a backslash, so it closes a string that a colon
#   follows: an object key, one per match.
#
# A request within the caps writes "name" once in each input and output object and at most once in each
# parameters object, its own included (and one more is let pass at the top). Its keys: a few per object (name,
# datatype, shape, parameters, data; id, inputs, outputs, model_name), plus MAX_PARAMETERS per parameters
# object. Counts over these bounds are refused before parsing. Only a document with duplicate keys or fields
# this server ignores could hold more.
# Headers under _COUNT_MIN_BYTES are not counted: their parse costs < ~0.3 s and ~50 MiB, and its refusal
# names the exact count ("the request asks for 100000 outputs").
_COUNT_MIN_BYTES = 4 * 1024 * 1024
_KEYS_PER_OBJECT = 8
_KEY_CHARS = bytes(ord("w") if chr(c).isascii() and (chr(c).isalnum() or chr(c) == "_") else c for c in range(256))
_COUNT_WINDOW = 1 << 18


def _name_key_bound(limits: RestLimits) -> int:
    return 2 * (limits.max_inputs + limits.max_requested_outputs) + 2


def _key_bound(limits: RestLimits) -> int:
    objects = limits.max_inputs + limits.max_requested_outputs
    return _KEYS_PER_OBJECT + MAX_PARAMETERS + objects * (_KEYS_PER_OBJECT + MAX_PARAMETERS)


def _count_word_keys(buffer: bytes | bytearray, end: int) -> int:
    """Occurrences of a word character, a quote and a colon in ``buffer[:end]``, a window at a time (each
    window reads 2 bytes past its end, so a match starting in it is counted there and only there)."""
    found = 0
    for start in range(0, end, _COUNT_WINDOW):
        found += buffer[start : min(start + _COUNT_WINDOW + 2, end)].translate(_KEY_CHARS).count(b'w":')
    return found


def _check_key_counts(buffer: bytes | bytearray, end: int, limits: RestLimits) -> None:
    """Refuse a header that holds more keys than a request within the caps can, before parsing it.
    Raises :class:`DecodeError` naming the caps."""
    # Every match of either count holds a quote and a '":': for most bodies there is nothing more to look for.
    if buffer.count(b'"', 0, end) <= _name_key_bound(limits):
        return
    colons = buffer.count(b'":', 0, end)
    bound = _name_key_bound(limits)
    if colons > bound and (names := buffer.count(b'"name":', 0, end) - buffer.count(b'\\"name":', 0, end)) > bound:
        raise DecodeError(
            f'the request has more inputs and outputs than allowed: its header holds {names} "name" keys, '
            f"more than the {bound} that {limits.max_inputs} inputs (limits.max_inputs) and "
            f"{limits.max_requested_outputs} outputs (limits.max_requested_outputs) can hold; send at most "
            f"{limits.max_inputs} inputs and {limits.max_requested_outputs} outputs per request"
        )
    bound = _key_bound(limits)
    if colons > bound and (keys := _count_word_keys(buffer, end)) > bound:
        raise DecodeError(
            f"the request header holds {keys} keys, more than the {bound} that {limits.max_inputs} inputs "
            f"(limits.max_inputs) and {limits.max_requested_outputs} outputs (limits.max_requested_outputs) "
            f"with at most {MAX_PARAMETERS} parameters each can hold; send fewer inputs, outputs or parameters"
        )


def _parse_header_json(
    view: memoryview, buffer: bytes | bytearray | memoryview, max_spans: int
) -> tuple[Any, dict[str, memoryview]]:
    """The JSON header, and the 'data' arrays left unparsed (a large header only). A mistyped request is
    then refused without parsing, let alone converting, its elements."""
    what = "the inference request header"
    if len(view) >= _SPLIT_MIN_BYTES and isinstance(buffer, (bytes, bytearray)):
        split = _split_data(buffer, len(view), max_spans)
        if split is not None:
            text, spans = split
            try:
                header = orjson.loads(text)
            except orjson.JSONDecodeError:
                header = None  # the cut was not where we thought, or the JSON is bad: parse it whole
            if _placeholders_in_inputs(header, spans):
                return header, spans
    return parse_json_body(view, what), {}


def _placeholders_in_inputs(header: Any, spans: dict[str, memoryview]) -> bool:
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        return False
    found = {
        raw["data"]
        for raw in header["inputs"]
        if isinstance(raw, dict) and isinstance(raw.get("data"), str) and raw["data"] in spans
    }
    return len(found) == len(spans)


def parse_infer_header(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    model_name: str,
    model_version: str,
    limits: RestLimits,
) -> RestRequestHeader:
    """Check a request's header (ids, parameters, names, datatypes, shapes, blob sizes, outputs) and decode
    no tensor element. Raises :class:`DecodeError` naming the field and the fix."""
    view = memoryview(body)
    if header_length is None:
        header_view, blobs = view, view[len(view) :]
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
        header_view, blobs = view[:header_length], view[header_length:]
    if len(header_view) >= _COUNT_MIN_BYTES:
        _check_key_counts(
            body if isinstance(body, (bytes, bytearray)) else bytes(header_view), len(header_view), limits
        )
    parsed, spans = _parse_header_json(header_view, body, limits.max_inputs)
    header = _object(parsed, "the inference request")

    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise DecodeError(f"'id' must be a string, got {type(request_id).__name__}")
    params = parse_request_parameters(_parameters(header.get("parameters"), "request"))

    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise DecodeError('the request needs an \'inputs\' list: [{"name", "shape", "datatype", "data"}]')
    if len(raw_inputs) > limits.max_inputs:
        raise DecodeError(
            f"the request has {len(raw_inputs)} inputs; at most {limits.max_inputs} are allowed (limits.max_inputs)"
        )
    requested = _requested_outputs(header.get("outputs"), limits)
    inputs: list[_InputHeader] = []
    seen: set[str] = set()
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor = _object(raw, f"inputs[{index}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise DecodeError(f"inputs[{index}] needs a 'name' string")
        what = f"input '{name[:64]}'"
        if name in seen:
            raise DecodeError(f"{what} appears twice in 'inputs'")
        seen.add(name)
        datatype = checked_datatype(tensor.get("datatype"), what)
        tensor_params = _parameters(tensor.get("parameters"), what)
        check_parameter_count(len(tensor_params), what)
        size = tensor_params.get("binary_data_size")
        blob: memoryview | None = None
        data: Any = None
        span: memoryview | None = None
        window = shared_memory_ref(tensor_params, what)
        shape, count = checked_shape(
            tensor.get("shape"),
            datatype,
            limits.max_tensor_bytes,
            what,
            **_sent(tensor, datatype, window, size, spans, header_view),
        )
        if window is not None:
            if size is not None or "data" in tensor:
                raise DecodeError(
                    f"{what} must set only one of 'data', 'binary_data_size' or 'shared_memory_region' in "
                    "'parameters'; it sets 'shared_memory_region' and "
                    f"{'binary_data_size' if size is not None else 'data'}"
                )
            check_input_size(window, datatype, count, limits.max_tensor_bytes, what)
        elif size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise DecodeError(f"{what}: 'binary_data_size' must be a non-negative integer")
            if "data" in tensor:
                raise DecodeError(f"{what} has both 'data' and 'binary_data_size'; send one or the other")
            if offset + size > len(blobs):
                raise DecodeError(
                    f"{what}: binary_data_size {size} runs past the end of the body ({len(blobs) - offset} bytes "
                    "left); the binary blobs must follow the JSON header in input order"
                )
            blob = blobs[offset : offset + size]
            offset += size
        elif "data" in tensor:
            check_json_datatype(datatype, what)
            data = tensor["data"]
            if isinstance(data, str):
                span = spans.get(data)
        else:
            raise DecodeError(f"{what} has neither 'data' nor a 'binary_data_size' parameter")
        inputs.append(_InputHeader(name, what, datatype, shape, count, blob, data, span, window))
    if offset != len(blobs):
        raise DecodeError(
            f"the body has {len(blobs) - offset} bytes after the JSON header and the declared binary inputs; "
            "check Inference-Header-Content-Length and each input's binary_data_size"
        )
    return RestRequestHeader(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        parameters=params,
        inputs=tuple(inputs),
        requested_outputs=requested,
    )


def _requested_outputs(raw_outputs: Any, limits: RestLimits) -> tuple[RequestedOutput, ...] | None:
    if raw_outputs is None:
        return None
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
        what = f"output '{name[:64]}'"
        out_params = _parameters(output.get("parameters"), what)
        window = shared_memory_ref(out_params, what)
        if window is not None and ("classification" in out_params or out_params.get("binary_data") is True):
            raise DecodeError(
                f"{what} can't set both 'shared_memory_region' and "
                f"'{'classification' if 'classification' in out_params else 'binary_data'}'"
            )
        items.append(RequestedOutput(name=name, parameters=_scalar_parameters(out_params, name), shared_memory=window))
    return tuple(items)


def decode_infer_tensors(
    header: RestRequestHeader, limits: RestLimits, regions: RegionAccess | None = None
) -> DecodedRestRequest:
    """Decode the elements of a checked header's inputs (after the service layer has seen
    :attr:`RestRequestHeader.declared`). Inputs in shared memory are copied out of ``regions`` (None: the
    extension is off), and outputs to be written there are checked against it. Raises
    :class:`DecodeError`, or what ``regions`` raises for a bad region."""
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, Datatype] = {}
    for output in header.requested_outputs or ():
        if output.shared_memory is not None:
            regions_or_refuse(regions, f"output '{output.name[:64]}'").check(
                output.shared_memory, f"output '{output.name[:64]}'"
            )
    for item in header.inputs:
        if item.shared_memory is not None:
            raw = regions_or_refuse(regions, item.what).read(item.shared_memory, item.what)
            inputs[item.name] = tensor_from_raw(raw, item.datatype, item.shape, item.count, item.what)
        elif item.blob is not None:
            inputs[item.name] = tensor_from_raw(item.blob, item.datatype, item.shape, item.count, item.what)
        else:
            inputs[item.name] = _tensor_from_json_header(item, limits.max_json_depth)
        datatypes[item.name] = item.datatype
    params = header.parameters
    request = InferRequest(
        model_name=header.model_name,
        model_version=header.model_version,
        inputs=inputs,
        input_datatypes=datatypes,
        id=header.id,
        requested_outputs=header.requested_outputs,
        parameters=params.custom,
        priority=params.priority,
        timeout_us=params.timeout_us,
    )
    return DecodedRestRequest(request=request, binary_data_output=params.binary_data_output)


def _sent(
    tensor: dict[str, Any],
    datatype: Datatype,
    window: SharedMemoryRef | None,
    size: Any,
    spans: dict[str, memoryview],
    header_view: memoryview,
) -> dict[str, int]:
    """What the client sent for one input, for :func:`checked_shape`: the binary size of a blob or a
    shared-memory window, or, for JSON ``data``, a bound on its elements (each takes a character and a
    comma: at most (length + 1) / 2 in its text, or in the whole header when it was parsed with it)."""
    if window is not None:  # its exact size is checked against the shape by check_input_size
        return {"max_sent_elements": window_elements(window, datatype)}
    if size is not None:
        return {"sent_bytes": size} if type(size) is int and size >= 0 else {}
    if "data" in tensor:
        data = tensor["data"]
        span = spans.get(data) if isinstance(data, str) else None
        return {"max_sent_elements": (len(span if span is not None else header_view) + 1) // 2}
    return {}


def _tensor_from_json_header(item: _InputHeader, max_depth: int) -> np.ndarray:
    """An input's JSON data as a tensor: a large numeric array straight from its bytes, the rest parsed."""
    span = item.data_span
    if span is not None and len(span) >= MIN_SPAN_BYTES:
        array = decode_numeric_span(span, item.datatype, item.shape, item.count, max_depth, item.what)
        if isinstance(array, JsonSyntaxError):
            raise _invalid_json(f"{item.what} 'data'", array.msg, array.pos)
        if array is not None:
            return array
    data = item.data if span is None else parse_json_body(span, f"{item.what} 'data'")
    return tensor_from_json(data, item.datatype, item.shape, item.count, max_depth, item.what)


def decode_infer_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    model_name: str,
    model_version: str,
    limits: RestLimits,
) -> DecodedRestRequest:
    """Decode an infer request body (:func:`parse_infer_header`, then :func:`decode_infer_tensors`)."""
    return decode_infer_tensors(parse_infer_header(body, header_length, model_name, model_version, limits), limits)


def _scalar_parameters(raw: Mapping[str, Any], name: str) -> dict[str, ParameterValue]:
    check_parameter_count(len(raw), f"output '{name[:64]}'")
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


def _write_to_region(
    window: SharedMemoryRef, array: np.ndarray, datatype: Datatype, name: str, regions: RegionAccess | None
) -> dict[str, Any]:
    """Write an output to its window; the output's parameters as the response reports them (the byte
    size is what was written: a BYTES output's serialized length)."""
    what = f"output '{name[:64]}'"
    raw = tensor_to_raw(array, datatype)
    regions_or_refuse(regions, what).write(window, raw, what)
    parameters: dict[str, Any] = {"shared_memory_region": window.region, "shared_memory_byte_size": len(raw)}
    if window.offset:
        parameters["shared_memory_offset"] = window.offset
    return parameters


def encode_infer_response(
    response: InferResult, request: InferRequest, binary_data_output: bool, regions: RegionAccess | None = None
) -> tuple[bytes, int | None]:
    """Encode a response body. Returns the body and, when binary blobs follow, the JSON header length.
    An output requested in shared memory is written to its region (``regions``) and answered with its
    parameters and no data, as Triton does."""
    requested = {o.name: o for o in request.requested_outputs} if request.requested_outputs else {}
    outputs_json: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, array in response.outputs.items():
        datatype = response.output_datatypes[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype.value, "shape": list(array.shape)}
        wanted = requested.get(name)
        if wanted is not None and wanted.shared_memory is not None:
            entry["parameters"] = _write_to_region(wanted.shared_memory, array, datatype, name, regions)
        elif _wants_binary(wanted, binary_data_output) or datatype in (Datatype.BF16,):
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
    if response.arm or response.fallback:
        tags = {ARM_PARAMETER: response.arm} if response.arm else {}
        if response.fallback:
            tags[FALLBACK_PARAMETER] = response.fallback
        body["parameters"] = {**response.parameters, **tags}
    elif response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = outputs_json
    try:
        header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        raise DecodeError(f"cannot encode the response as JSON: {exc}", code=ErrorCode.INTERNAL) from exc
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
