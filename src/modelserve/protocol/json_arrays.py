"""A large JSON ``data`` array of numbers decoded from its bytes into numpy, without a Python list of it.

Parsing ``[[5.1, 3.5, 1.4, 0.2], ...]`` whole with orjson and flattening it builds a Python object per number
and per row: a 64 MiB body cost 4.9 s and +1.2 GiB (18x) before it became a 57 MiB FP32 array. Here:

1. The bracket skeleton is checked, a 256 KiB window at a time, on a compact copy (whitespace deleted,
   every byte but ``[ ] ,`` an atom's ``a``): no ``a[ ][ [, ]a ,] ,,``, brackets balanced and closed only
   at the end, and the depth. With those, the array is valid JSON exactly when the text with its brackets
   deleted is a valid list of scalars (a value is an atom or ``[`` values ``]``; deleting brackets leaves
   atoms between commas, and an empty array leaves an empty slot, removed before parsing), and its elements
   in row-major order are that list.
2. That text is parsed by orjson in pieces of a window cut at commas (outside strings: the span holds none),
   each checked by the same rules as :func:`~modelserve.protocol.tensor_codec.tensor_from_json` and
   converted into its slice of the result: the peak is the result plus a piece.

Where the array is not valid JSON, orjson is run from the last comma the checks reached, with ``[`` x depth
and a number standing in for what came before: the same error, message and byte, for the cost of the part
after it (:func:`_syntax_error`). It answers ``None`` (parse the span whole) only where it cannot promise
the whole path's outcome: one element of over 1 MiB (four windows), or an error orjson does not find where
expected. Every tensor it returns, and every error it reports, is the whole path's:
tests/protocol/test_json_arrays.py holds the two against each other, with windows of a few bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelserve.core.datatypes import Datatype
from modelserve.core.errors import DecodeError
from modelserve.protocol.tensor_codec import (
    JsonElementRule,
    bytes_element_error,
    element_rule,
    elements_to_array,
    json_count_error,
    json_depth_error,
    json_element_error,
)

__all__ = ["MIN_SPAN_BYTES", "JsonSyntaxError", "decode_numeric_span"]

# Below this, parsing the span whole costs less than the passes here (and the memory is small either way).
MIN_SPAN_BYTES = 16 * 1024
_WINDOW = 1 << 18  # span bytes copied, translated and parsed at a time (its Python floats: ~2 MiB)
# An element longer than this (a number of a million digits) is left to the whole parse.
_MAX_CARRY = 4 * _WINDOW
# orjson refuses deeper arrays ("depth limit exceeded"): left to the whole parse, which says where.
_ORJSON_MAX_DEPTH = 1024
_WHITESPACE = b" \t\n\r"
# The compact text as codes: an atom's byte 0, '[' 1, ']' 2, ',' 3; a pair of neighbours is 4 * left + right.
_CODES = bytes({ord("["): 1, ord("]"): 2, ord(","): 3}.get(c, 0) for c in range(256))
_EMPTY_ARRAY = 4 * 1 + 2
# a[  [,  ]a  ][  ,]  ,, : what may not follow a value, come before one, or stand in for one.
_BAD_PAIRS = np.uint16(sum(1 << pair for pair in (4 * 0 + 1, 4 * 1 + 3, 4 * 2 + 0, 4 * 2 + 1, 4 * 3 + 2, 4 * 3 + 3)))
_EMPTY_SLOTS = re.compile(rb",[ \t\n\r,]*,")
_DIGITS = bytes(ord("0") if chr(c).isdigit() and c < 128 else c for c in range(256))
# orjson reads an integer past 64 bits as a float: a long run of digits needs a look at the parsed types.
_LONG_INTEGER = b"0" * 19


@dataclass(slots=True)
class _Skeleton:
    """The checks on the compact text (whitespace deleted, as :data:`_CODES`), fed in windows: no forbidden
    pair, brackets balanced and closed only by the last one, and the deepest nesting."""

    head: bytes = b""  # the first two codes
    last: bytes = b""  # the last code so far
    depth: int = 0
    deepest: int = 0
    is_closed: bool = False
    has_empty_arrays: bool = False

    def feed(self, compact: bytes) -> bool:
        if not compact:
            return True
        if len(self.head) < 2:
            self.head = (self.head + compact[:2])[:2]
            if self.head[:1] != b"\x01":
                return False
        codes = np.frombuffer(self.last + compact, dtype=np.uint8)
        pairs = codes[:-1] * np.uint8(4) + codes[1:]  # uint8 throughout: bincount would widen them to 8 bytes
        if (np.right_shift(_BAD_PAIRS, pairs) & 1).any():
            return False
        self.has_empty_arrays = self.has_empty_arrays or bool((pairs == _EMPTY_ARRAY).any())
        self.last = compact[-1:]
        brackets = compact.translate(None, b"\x00\x03")
        if not brackets:
            return not self.is_closed
        if self.is_closed:
            return False
        running = np.cumsum(np.int8(3) - 2 * np.frombuffer(brackets, dtype=np.int8), dtype=np.int32)  # [ +1, ] -1
        running += self.depth
        if int(running[:-1].min(initial=1)) < 1 or int(running[-1]) < 0:
            return False
        self.depth = int(running[-1])
        self.is_closed = self.depth == 0
        if self.is_closed and self.last != b"\x02":  # something after the outer array, in this window
            return False
        self.deepest = max(self.deepest, int(running.max()))
        return self.deepest <= _ORJSON_MAX_DEPTH

    @property
    def is_complete(self) -> bool:
        return self.is_closed and self.last == b"\x02"

    @property
    def first_is_list(self) -> bool:
        return self.head == b"\x01\x01"


def _items(piece: bytes) -> tuple[list[Any], bool] | None:
    """The scalars of ``piece`` (text between commas, brackets deleted) and whether only json read them (the
    literals orjson refuses: NaN, Infinity, 1e400), or None if it is not valid JSON. Reads them as
    :func:`~modelserve.protocol.rest_codec.parse_json_body` does."""
    text = b"[" + piece + b"]"
    try:
        items = orjson.loads(text)
        is_lax = False
    except orjson.JSONDecodeError:
        # Empty slots left by empty arrays (", ,"), else the literals orjson refuses and json reads.
        text = b"[" + _EMPTY_SLOTS.sub(b",", piece).strip(b" \t\n\r,") + b"]"
        try:
            items = orjson.loads(text)
            is_lax = False
        except orjson.JSONDecodeError:
            try:
                items = json.loads(text)
                is_lax = True
            except (ValueError, RecursionError):
                return None
    return (items, is_lax) if isinstance(items, list) else None


def _piece_rule(piece: bytes, items: list[Any], datatype: Datatype) -> JsonElementRule:
    """:func:`element_rule` of ``items``, read from their text where that is exact (no string, list or
    object can be among them; true/false/null are the only words besides NaN and Infinity)."""
    if b"n" in piece and b"null" in piece:  # one byte is found at memchr speed, four at a third of it
        return JsonElementRule.NOT_A_NUMBER
    if datatype is Datatype.BOOL:
        is_all_bool = not piece.translate(None, b"truefals \t\n\r,")
        return JsonElementRule.OK if is_all_bool else JsonElementRule.NOT_A_BOOL
    if datatype.numpy_dtype.kind not in ("i", "u"):
        return JsonElementRule.OK
    if any(mark in piece for mark in (b".", b"E", b"N", b"I")):
        return JsonElementRule.A_FRACTION  # a fraction, an exponent, NaN or Infinity: orjson and json read floats
    has_words = b"t" in piece or b"f" in piece
    if (b"e" in piece and has_words) or _LONG_INTEGER in piece.translate(_DIGITS):
        return element_rule(items, datatype)  # 'e' of true/false, or an integer orjson may read as a float
    return JsonElementRule.A_FRACTION if b"e" in piece else JsonElementRule.OK


@dataclass(slots=True)
class _Elements:
    """The parsed pieces so far: how many elements, the first, the lowest rule broken, the first conversion
    error, and the result filled in order (None for BYTES, whose elements here are never strings)."""

    datatype: Datatype
    count: int
    what: str
    out: np.ndarray | None
    total: int = 0
    first: Any = None
    rule: JsonElementRule = JsonElementRule.OK
    conversion_error: DecodeError | None = field(default=None)
    is_lax: bool = False  # some piece held a literal that orjson refuses

    def feed(self, piece: bytes) -> bool:
        parsed = _items(piece)
        if parsed is None:
            return False
        items, is_lax = parsed
        self.is_lax = self.is_lax or is_lax
        if self.total == 0 and items:
            self.first = items[0]
        end = self.total + len(items)
        if self.out is not None and end <= self.count:
            rule = _piece_rule(piece, items, self.datatype)
            if rule is not JsonElementRule.OK:
                self.rule = rule if self.rule is JsonElementRule.OK else min(self.rule, rule)
            elif self.rule is JsonElementRule.OK and self.conversion_error is None:
                try:
                    self.out[self.total : end] = elements_to_array(items, self.datatype, self.what)
                except DecodeError as exc:
                    self.conversion_error = exc
        self.total = end
        return True


@dataclass(frozen=True, slots=True)
class JsonSyntaxError:
    """Where orjson, parsing the whole span, would stop: its message and byte offset."""

    msg: str
    pos: int


# A comma of the span that everything before is valid up to, and the depth there: (offset, depth).
_Point = tuple[int, int]


def decode_numeric_span(
    span: memoryview, datatype: Datatype, shape: tuple[int, ...], count: int, max_depth: int, what: str
) -> np.ndarray | JsonSyntaxError | None:
    """The tensor a JSON ``data`` array with no string or object in it (``span``: ``[`` to ``]``) holds, the
    :class:`DecodeError` the whole parse would raise, or where orjson would find it is not valid JSON;
    ``None`` where only the whole parse can say.

    Not for BF16 (refused before). Time linear in the span; memory about the result plus a few windows,
    whatever the span holds. Thread-safe (no shared state)."""
    skeleton = _Skeleton()
    elements = _Elements(
        datatype, count, what, None if datatype is Datatype.BYTES else np.empty(count, datatype.numpy_dtype)
    )
    carry = b""
    size = len(span)
    valid_to: _Point | None = None  # the last comma the pieces parsed reach
    # With a literal only json reads (NaN), orjson's first error is there: the last comma before it, and
    # the end of the window it was found in.
    strict_to: _Point | None = None
    lax_before = size

    def syntax_error(error_before: int) -> JsonSyntaxError | None:
        if elements.is_lax:
            return _syntax_error(span, strict_to, lax_before)
        return _syntax_error(span, valid_to, error_before)

    for start in range(0, size, _WINDOW):
        window = bytes(span[start : start + _WINDOW])
        window_end = min(start + _WINDOW, size)
        depth = skeleton.depth
        if not skeleton.feed(window.translate(_CODES, _WHITESPACE)):
            return syntax_error(window_end)
        text = carry + window.translate(None, b"[]")
        cut = text.rfind(b",") if start + _WINDOW < size else -1
        if cut < 0:
            carry = text
            if len(carry) > _MAX_CARRY:
                return None
            continue
        was_lax = elements.is_lax
        if not elements.feed(text[:cut]):
            return syntax_error(window_end)
        if elements.is_lax and not was_lax:
            lax_before = window_end
        comma = window.rfind(b",")  # the cut: deleting brackets kept the commas in order
        valid_to = (start + comma, depth + window.count(b"[", 0, comma) - window.count(b"]", 0, comma))
        if not elements.is_lax:
            strict_to = valid_to
        carry = text[cut + 1 :]
    if not skeleton.is_complete or not elements.feed(carry):
        return syntax_error(size)
    return _outcome(span, skeleton, elements, shape, max_depth)


def _syntax_error(span: memoryview, valid_to: _Point | None, error_before: int) -> JsonSyntaxError | None:
    """orjson's error for the whole span, found by parsing only from ``valid_to`` to just past
    ``error_before`` (the end of what the failed check looked at). Everything before that comma is valid
    JSON, so standing in ``[`` x depth and one number for it leaves orjson in the same state there, and its
    first error, message and byte, is the same. Parsing the span whole instead builds its elements up to the
    error: +354 MiB for a trailing comma at the end of 64 MiB (and orjson copies its input first).

    The part is cut just after a ``,``, ``[`` or ``]`` (no token holds one: the last is whole), so that
    where orjson runs out of input it says so only past ``error_before``. None (parse the span whole) if the
    error is not before ``error_before`` in a cut part, or is orjson running out of its value pool: yyjson
    sizes the pool by the input's length, so a short part dense with ``[`` can exhaust it where the span
    would not ("failed to allocate memory" for 500 bytes of ``[``). A cut part is padded with spaces
    against that (where it ends is no error of the span's), and valid JSON never holds more values than
    half its bytes, so a span of MIN_SPAN_BYTES or more exhausts its pool at the 1025th ``[`` at the
    earliest, after orjson's depth limit."""
    offset, prefix = (0, b"") if valid_to is None else (valid_to[0], b"[" * valid_to[1] + b"0")
    end, padding = len(span), b""
    if error_before < end:
        after = bytes(span[error_before : error_before + _WINDOW])
        marks = [at for at in (after.find(b","), after.find(b"["), after.find(b"]")) if at >= 0]
        if marks:
            end = error_before + min(marks) + 1
            padding = b" " * (len(prefix) + end - offset + 4096)
    try:
        orjson.loads(prefix + bytes(span[offset:end]) + padding)
    except orjson.JSONDecodeError as exc:
        is_cut = end < len(span)
        is_inside = exc.pos >= len(prefix) and (not is_cut or exc.pos < len(prefix) + error_before - offset)
        if is_inside and "allocate" not in exc.msg:
            return JsonSyntaxError(exc.msg, offset + exc.pos - len(prefix))
    return None


def _outcome(
    span: memoryview, skeleton: _Skeleton, elements: _Elements, shape: tuple[int, ...], max_depth: int
) -> np.ndarray:
    """What the whole path answers for a valid array, in its order: depth, element count, element rules."""
    datatype, count, what = elements.datatype, elements.count, elements.what
    if not skeleton.first_is_list and skeleton.deepest > 1:
        # The whole path takes a list that starts with a scalar as flat: its nested lists are elements.
        outer = _outer_count(span)
        if outer != count:
            raise json_count_error(outer, shape, count, what)
        if datatype is Datatype.BYTES:
            raise bytes_element_error(0, elements.first, what)
        raise json_element_error(JsonElementRule.NOT_A_NUMBER, datatype, what)
    if skeleton.first_is_list and skeleton.deepest > max_depth:
        raise json_depth_error(max_depth, what)
    if elements.total != count:
        raise json_count_error(elements.total, shape, count, what)
    if datatype is Datatype.BYTES:
        if count:
            raise bytes_element_error(0, elements.first, what)
        return np.empty(0, dtype=object).reshape(shape)
    if elements.rule is not JsonElementRule.OK:
        raise json_element_error(elements.rule, datatype, what)
    if elements.conversion_error is not None:
        raise elements.conversion_error
    assert elements.out is not None
    return elements.out.reshape(shape)


def _outer_count(span: memoryview) -> int:
    """Elements of the outer array of a valid span: its commas at depth 1, plus 1."""
    commas = depth = 0
    for start in range(0, len(span), _WINDOW):
        codes = np.frombuffer(bytes(span[start : start + _WINDOW]).translate(_CODES, _WHITESPACE), dtype=np.uint8)
        if not codes.size:
            continue
        running = np.cumsum((codes == 1).astype(np.int32) - (codes == 2), dtype=np.int32) + depth
        commas += int(np.count_nonzero((codes == 3) & (running == 1)))
        depth = int(running[-1])
    return commas + 1
