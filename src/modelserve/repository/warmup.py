"""Warm-up before a version becomes READY: Triton's ``model_warmup`` from config.pbtxt, or, when a
model has none, N requests generated from its input spec when asked with
``parameters { key: "warmup_requests" value: { string_value: "N" } }`` (zeros, one row, variable dims as 1).

Each ``model_warmup`` entry builds one request (``batch_size`` rows when the model batches, its inputs
from ``zero_data``, ``random_data`` or ``input_data_file``) and runs it ``count`` times (at least once)
on every instance, directly on the runtime. A failure keeps the version out of READY with the reason.
``input_data_file`` names a raw little-endian file in ``<model>/warmup/`` (Triton's place for them);
names that would leave that folder are refused, and so is a file that fails the repository's jail check
(``core/paths.py``: a symbolic link, unless ``repository.allow_symlinks``, and never one out of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from modelserve.core.datatypes import Datatype, datatype_from_config_enum
from modelserve.core.errors import ModelLoadError, ModelServeError
from modelserve.core.paths import inside
from modelserve.core.signature import ModelSignature
from modelserve.runtimes.base import Runtime
from modelserve.scheduling.shapes import to_model_shape

__all__ = ["run_warmup"]

_RNG_SEED = 0


@dataclass(frozen=True, slots=True)
class _Files:
    """Where warm-up files come from: ``<model_dir>/warmup/``, inside the repository ``root``."""

    model_dir: Path
    root: Path
    allow_symlinks: bool


def _tensor(owner: str, files: _Files, name: str, spec: Any, rows: int | None) -> np.ndarray:
    enum_name = mc.DataType.Name(spec.data_type)
    datatype = datatype_from_config_enum(enum_name)
    if datatype is None:
        raise ModelLoadError(f"{owner}: model_warmup input '{name}' has data_type {enum_name}", stage="warmup")
    dims = [int(d) for d in spec.dims]
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{owner}: model_warmup input '{name}' needs fixed dims, got {dims}", stage="warmup")
    shape = ([rows] if rows is not None else []) + dims
    count = math.prod(shape)
    source = spec.WhichOneof("input_data_type")
    if datatype is Datatype.BYTES:
        if source == "input_data_file":
            raise ModelLoadError(
                f"{owner}: model_warmup input '{name}': BYTES from a file is not supported", stage="warmup"
            )
        return np.full(shape, b"" if source == "zero_data" else b"warmup", dtype=object)
    dtype = datatype.numpy_dtype
    if source == "random_data":
        rng = np.random.default_rng(_RNG_SEED)
        if dtype.kind == "f":
            return rng.random(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(dtype)
        return rng.integers(0, 100, shape).astype(dtype)
    if source == "input_data_file":
        relative = Path(spec.input_data_file)
        if relative.is_absolute() or ".." in relative.parts:
            raise ModelLoadError(
                f"{owner}: model_warmup file '{spec.input_data_file}' is outside {files.model_dir.name}/warmup/",
                stage="warmup",
            )
        path = inside(
            files.root,
            files.model_dir / "warmup" / relative,
            what=f"{owner}: model_warmup file",
            allow_symlinks=files.allow_symlinks,
            must_exist=False,  # a missing file gets the "cannot read" message below
            stage="warmup",
        )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(
                f"{owner}: cannot read model_warmup file '{spec.input_data_file}'", stage="warmup"
            ) from exc
        needed = count * dtype.itemsize
        if len(raw) < needed:
            raise ModelLoadError(
                f"{owner}: model_warmup file '{spec.input_data_file}' has {len(raw)} bytes; "
                f"input '{name}' needs {needed}",
                stage="warmup",
            )
        return np.frombuffer(raw[:needed], dtype=dtype.newbyteorder("<")).reshape(shape)
    return np.zeros(shape, dtype=dtype)


def run_warmup(
    config: Any,
    signature: ModelSignature,
    runtimes: list[Runtime],
    model_dir: Path,
    owner: str,
    *,
    repository: Path,
    allow_symlinks: bool,
) -> int:
    """Run every ``model_warmup`` entry on every instance. Returns the number of calls made.
    ``repository`` is the root warm-up files must stay in; ``allow_symlinks`` is
    ``repository.allow_symlinks``. Raises :class:`ModelLoadError` with the reason when a warm-up file is
    refused or a warm-up call fails."""
    files = _Files(model_dir=model_dir, root=repository, allow_symlinks=allow_symlinks)
    calls = 0
    batching = signature.max_batch_size > 0
    generated = config.parameters.get("warmup_requests")
    if not config.model_warmup and generated is not None:
        return _run_generated(generated.string_value, signature, runtimes, owner)
    for warmup in config.model_warmup:
        rows = max(1, int(warmup.batch_size)) if batching else None
        inputs = {}
        for name, spec in warmup.inputs.items():
            tensor_spec = signature.inputs_by_name.get(name)
            if tensor_spec is None:
                raise ModelLoadError(
                    f"{owner}: model_warmup '{warmup.name}' names unknown input '{name}'", stage="warmup"
                )
            inputs[name] = to_model_shape(_tensor(owner, files, name, spec, rows), tensor_spec, batching)
        for runtime in runtimes:
            for _ in range(max(1, int(warmup.count))):
                try:
                    runtime.infer(inputs, list(signature.output_names))
                except Exception as exc:
                    detail = exc.message if isinstance(exc, ModelServeError) else f"{type(exc).__name__}: {exc}"
                    raise ModelLoadError(
                        f"{owner}: warm-up '{warmup.name}' failed: {detail[:300]}", stage="warmup"
                    ) from exc
                calls += 1
    return calls


def _run_generated(count_text: str, signature: ModelSignature, runtimes: list[Runtime], owner: str) -> int:
    try:
        count = int(count_text)
    except ValueError:
        raise ModelLoadError(
            f"{owner}: parameter warmup_requests must be an integer, got '{count_text}'", stage="warmup"
        ) from None
    batching = signature.max_batch_size > 0
    inputs = {}
    for spec in signature.inputs:
        shape = ([1] if batching else []) + [d if d >= 0 else 1 for d in spec.dims]
        array = (
            np.full(shape, b"", dtype=object)
            if spec.datatype is Datatype.BYTES
            else np.zeros(shape, dtype=spec.datatype.numpy_dtype)
        )
        inputs[spec.name] = to_model_shape(array, spec, batching)
    for runtime in runtimes:
        for _ in range(count):
            try:
                runtime.infer(inputs, list(signature.output_names))
            except Exception as exc:
                detail = exc.message if isinstance(exc, ModelServeError) else f"{type(exc).__name__}: {exc}"
                raise ModelLoadError(
                    f"{owner}: generated warm-up request failed: {detail[:300]}", stage="warmup"
                ) from exc
    return count * len(runtimes)
