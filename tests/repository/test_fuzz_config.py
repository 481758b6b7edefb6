"""Fuzz tests: hostile ``config.pbtxt`` files against ``read_model_config`` and what reads its result.

A repository's files are untrusted input too. Random bytes, printable junk, valid configs cut short or
with tokens spliced in, huge dims, unknown fields, deep nesting and out-of-range enum numbers are written
to a temporary model folder; ``read_model_config`` and then ``signature_of``, ``ignored_fields``,
``select_versions`` and ``resolve_runtime`` (the rest of the config stage of a load) may only return or
raise :class:`ModelLoadError` (stage "config"). The bugs it found are explicit examples at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from modelserve.core.errors import ModelLoadError
from modelserve.repository.model_config import (
    CONFIG_FILENAME,
    ignored_fields,
    read_model_config,
    resolve_runtime,
    select_versions,
    signature_of,
)

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
EXPLICIT_ONLY = settings(FUZZ, phases=[Phase.explicit])
NAME = "m"

VALID = """name: "m"
backend: "onnxruntime"
max_batch_size: 8
version_policy { specific { versions: [1, 3] } }
input [
  { name: "x" data_type: TYPE_FP32 dims: [-1, 4] reshape { shape: [4] } },
  { name: "s" data_type: TYPE_STRING dims: [1] optional: true }
]
output [ { name: "y" data_type: TYPE_INT64 dims: [2] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { preferred_batch_size: [2, 4] max_queue_delay_microseconds: 100 }
parameters { key: "k" value { string_value: "v" } }
optimization { priority: PRIORITY_MAX }
model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [4] zero_data: true } } } ]
"""


def _load(text: bytes) -> None:
    """Write ``text`` as a model's config.pbtxt and run the config stage; only ModelLoadError may escape."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / NAME
        model_dir.mkdir()
        (model_dir / CONFIG_FILENAME).write_bytes(text)
        try:
            config = read_model_config(model_dir, NAME)
            assert config.name == NAME
            assert config.max_batch_size >= 0
            ignored_fields(config)
            signature = signature_of(config)
            assert all(d >= -1 for spec in (*signature.inputs, *signature.outputs) for d in spec.dims)
            versions = select_versions(config, [1, 2, 3])
            assert set(versions) <= {1, 2, 3}
            assert versions == sorted(versions, reverse=True)
            resolve_runtime(config, None)
        except ModelLoadError as exc:
            assert exc.stage == "config", exc.stage
            assert exc.message
            assert tmp not in exc.message  # no file system paths in messages


def test_the_seed_config_loads() -> None:
    # The seed the mutations start from is itself accepted, so the fuzzing starts from the happy path.
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / NAME
        model_dir.mkdir()
        (model_dir / CONFIG_FILENAME).write_text(VALID)
        config = read_model_config(model_dir, NAME)
        assert [spec.name for spec in signature_of(config).inputs] == ["x", "s"]
        assert select_versions(config, [1, 2, 3]) == [3, 1]


# Tokens of the text format, valid and hostile, spliced into the seed at random.
TOKENS = [
    "{", "}", "[", "]", ":", ",", ";", '"', "'", "#", "\n", " ", "<", ">", "-", "name", "input", "dims", "data_type",
    "TYPE_FP32", "TYPE_INVALID", "KIND_GPU", "999", "-1", "-99999999999999999999", "99999999999999999999",
    "9223372036854775808", "1e400", "nan", "inf", "0x7fffffffffffffff", '"\\xff"', '"\\ud800"', '"\\377"',
    "unknown_field: 1", "[type.googleapis.com/x] {}", "max_batch_size: -1", 'name: "other"', "\x00", "\ufeff",
]  # fmt: skip


@st.composite
def mutated_configs(draw: st.DrawFn) -> bytes:
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if action == "insert":
            text = text[:position] + draw(st.sampled_from(TOKENS)) + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 8)) :]
        else:
            text = text[:position]
    return text.encode("utf-8", "surrogatepass")


dim_values = st.one_of(st.integers(-3, 8), st.integers(-(2**64), 2**64), st.sampled_from([2**63 - 1, -(2**63), 2**63]))
# Valid enum names, and integers: proto3 enums are open, so the text format accepts unknown numbers.
KNOWN_DATA_TYPES = [
    f"TYPE_{t}" for t in ("BOOL", "UINT8", "INT32", "FP16", "FP32", "FP64", "STRING", "BF16", "INVALID")
]
data_types = st.one_of(
    st.sampled_from(KNOWN_DATA_TYPES), st.integers(0, 14), st.sampled_from(["TYPE_NOPE", "fp32", "1.5"])
)


@st.composite
def generated_configs(draw: st.DrawFn) -> bytes:
    """Configs built from the grammar: any dims (huge and negative), any datatype, duplicate names,
    batch sizes of any sign, version policies, platforms and backends that exist or not."""
    lines = []
    if draw(st.booleans()):
        lines.append(f'name: "{draw(st.sampled_from([NAME, "other", ""]))}"')
    if draw(st.booleans()):
        lines.append(
            f'{draw(st.sampled_from(["backend", "platform"]))}: "{draw(st.sampled_from(["onnxruntime", "onnxruntime_onnx", "python", "sklearn", "tensorrt_plan", "", "x"]))}"'
        )
    if draw(st.booleans()):
        lines.append(f"max_batch_size: {draw(dim_values)}")
    for kind in ("input", "output"):
        for _ in range(draw(st.integers(0, 3))):
            dims = ", ".join(str(d) for d in draw(st.lists(dim_values, max_size=4)))
            name = draw(st.sampled_from(["x", "y", ""]))
            entry = f'{kind} {{ name: "{name}" data_type: {draw(data_types)} dims: [{dims}]'
            if draw(st.booleans()):
                entry += f" reshape {{ shape: [{', '.join(str(d) for d in draw(st.lists(dim_values, max_size=3)))}] }}"
            lines.append(entry + " }")
    policy = draw(st.sampled_from(["", "all {}", "latest { num_versions: %d }", "specific { versions: [%d] }"]))
    if policy:
        lines.append(
            "version_policy { " + (policy % draw(st.integers(-(2**31), 2**31 - 1)) if "%d" in policy else policy) + " }"
        )
    return "\n".join(lines).encode()


@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff\xfe")
@example(b"\x00")
@example(b'\xef\xbb\xbfname: "m"')  # a UTF-8 byte order mark
def test_random_bytes_load_or_refuse(text: bytes) -> None:
    _load(text)


@FUZZ
@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_printable_junk_loads_or_refuses(text: str) -> None:
    _load(text.encode("utf-8"))


@FUZZ
@given(mutated_configs())
@example(VALID[: VALID.index("dims") + 6].encode())
@example(VALID.replace("-1, 4", "99999999999999999999").encode())
@example(VALID.replace("-1, 4", "-2").encode())
@example(VALID.replace("max_batch_size: 8", "max_batch_size: -1").encode())
@example(VALID.replace('name: "m"', 'name: "other"').encode())
@example((VALID + "unknown_field: 1").encode())
@example(VALID.replace('"s"', '"x"').encode())  # duplicate input names
@example(VALID.replace('backend: "onnxruntime"', 'backend: "tensorrt"').encode())
@example(('parameters { key: "k" value { string_value: "v" } }\n' + "optimization { " * 200).encode())
@example(("{" * 10_000).encode())
@example(('model_warmup { inputs { key: "x" value { ' * 500).encode())
def test_mutated_configs_load_or_refuse(text: bytes) -> None:
    _load(text)


@FUZZ
@given(generated_configs())
@example(b'input { name: "x" data_type: TYPE_FP32 dims: [9223372036854775807, 9223372036854775807] }')
@example(b'input { name: "x" data_type: TYPE_FP32 dims: [9223372036854775808] }')
@example(b"max_batch_size: 2147483648")
@example(b"version_policy { latest { num_versions: -5 } }")
@example(b"version_policy { specific { versions: [-1, 0] } }")
def test_generated_configs_load_or_refuse(text: bytes) -> None:
    _load(text)


# --------------------------------------------------------------------------- bugs found by fuzzing, fixed


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'input { name: "x" data_type: 999 dims: [1] }')
def test_unknown_data_type_number_is_refused(text: bytes) -> None:
    _load(text)


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'output { name: "x" data_type: -1 dims: [] }')
def test_negative_data_type_number_is_refused(text: bytes) -> None:
    _load(text)


@EXPLICIT_ONLY
@given(st.just(b""))
@example(b'input { name: "x" data_type:0x7fffffffffffffff dims: [1] }')  # found by CI's random run
def test_data_type_past_int32_is_refused(text: bytes) -> None:
    _load(text)
