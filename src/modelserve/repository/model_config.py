"""Triton's ``config.pbtxt``: parse it into Triton's own ``ModelConfig`` message, complete it from the
model file, check that the two agree, and derive the :class:`ModelSignature` the server validates against.

The message class is the generated ``model_config_pb2`` that ships with tritonclient, so every field
Triton knows parses here, and fields we do not act on are reported once at load (see
:func:`ignored_fields`) rather than rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelserve.core.datatypes import Datatype, datatype_from_config_enum
from modelserve.core.errors import ModelLoadError
from modelserve.core.paths import inside
from modelserve.core.signature import ModelSignature, TensorSpec
from modelserve.repository.scan import folder_contents
from modelserve.runtimes.base import RuntimeMetadata
from modelserve.runtimes.registry import SUPPORTED, RuntimeKind, runtime_kind_for, runtime_kind_for_file

__all__ = [
    "CONFIG_FILENAME",
    "ModelConfig",
    "check_name_and_batch",
    "complete_and_check",
    "ignored_fields",
    "new_model_config",
    "read_model_config",
    "refuse_unsupported_features",
    "resolve_runtime",
    "select_versions",
    "signature_of",
]

CONFIG_FILENAME = "config.pbtxt"
# tritonclient ships no type information for its generated messages, so the alias is ``Any`` to mypy.
ModelConfig: TypeAlias = Any


def new_model_config() -> ModelConfig:
    return mc.ModelConfig()


# Default batch cap for models whose config we complete ourselves (Triton's default-max-batch-size).
AUTOCOMPLETE_MAX_BATCH_SIZE = 4

# Fields we parse but do not act on (yet), where serving without them gives the same answers (tuning,
# caching, GPU file names, metric labels); reported once at load so nobody thinks they are in force.
_IGNORED_FIELDS = (
    "optimization",
    "cc_model_filenames",
    "metric_tags",
    "model_operations",
    "response_cache",
    "model_metrics",
    "runtime",
)

# Fields that change what a model computes or how it is called: serving as if they were absent would give
# wrong answers (a stateful model fed no state) or a misleading error later ("model.onnx needs inputs
# ['START', 'READY']"), so a config that sets one is refused at load, naming it. Each says what it is.
_REFUSED_FIELDS = {
    "sequence_batching": "Triton's sequence batcher for stateful models (control inputs START/END/READY/CORRID)",
    "ensemble_scheduling": "ensembles: a pipeline of models run as one",
    "batch_input": "ragged batching's batch inputs, which the server computes for the model",
    "batch_output": "ragged batching's batch outputs, which the server scatters back per request",
    "model_repository_agents": "repository agents, which change the model files before loading (e.g. decryption)",
}


def read_model_config(
    model_dir: Path, name: str, *, root: Path | None = None, allow_symlinks: bool = False
) -> ModelConfig:
    """Parse ``<model_dir>/config.pbtxt``; a model without one gets an empty config named after its folder.

    ``root`` is the repository (default: ``model_dir``'s parent, where a model folder lives) and
    ``allow_symlinks`` is ``repository.allow_symlinks``: the file must stay inside ``root``
    (``core/paths.py``). Raises :class:`ModelLoadError` (stage "config") naming the file and the parser's
    line/column on a syntax error, or the link when the file is a refused symbolic link.
    """
    config = mc.ModelConfig()
    path = model_dir / CONFIG_FILENAME
    if path.is_file() or path.is_symlink():  # a dangling link is refused, not read as "no config"
        path = inside(
            model_dir.parent if root is None else root,
            path,
            what=f"model '{name}': {CONFIG_FILENAME}",
            allow_symlinks=allow_symlinks,
            stage="config",
        )
        try:
            text_format.Parse(path.read_text(encoding="utf-8"), config)
        except text_format.ParseError as exc:
            raise ModelLoadError(
                f"model '{name}': {CONFIG_FILENAME} does not parse as a Triton ModelConfig: {exc}", stage="config"
            ) from exc
        except ValueError as exc:  # protobuf's own range checks ("Value out of range: ..." for an enum)
            raise ModelLoadError(
                f"model '{name}': {CONFIG_FILENAME} holds a value out of range: {str(exc)[:200]}", stage="config"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(
                f"model '{name}': cannot read {CONFIG_FILENAME}: {type(exc).__name__}", stage="config"
            ) from exc
    check_name_and_batch(config, name, source=CONFIG_FILENAME)
    return config


def check_name_and_batch(config: ModelConfig, name: str, *, source: str) -> None:
    """Fill in a missing name; refuse a name that is not the folder's, or a negative ``max_batch_size``.
    ``source`` names where the config came from, for the message (config.pbtxt, the load API's config)."""
    if not config.name:
        config.name = name
    elif config.name != name:
        raise ModelLoadError(
            f"the {source} of model folder '{name}' names the model '{config.name}'; the name must match the folder",
            stage="config",
        )
    if config.max_batch_size < 0:
        raise ModelLoadError(
            f"model '{name}': max_batch_size must be >= 0, got {config.max_batch_size}", stage="config"
        )


def resolve_runtime(config: ModelConfig, version_dir: Path | None) -> RuntimeKind:
    """Pick the runtime from ``backend``/``platform``, else from the model file in ``version_dir``.

    Fills ``platform`` and ``backend`` in the config (what model metadata and ``/config`` report).
    """
    kind = runtime_kind_for(config.platform, config.backend)
    if kind is None and (config.platform or config.backend):
        raise ModelLoadError(
            f"model '{config.name}': platform '{config.platform}' / backend '{config.backend}' is not "
            f"supported; use one of {', '.join(SUPPORTED)}",
            stage="config",
        )
    if kind is None and version_dir is not None:
        filename = config.default_model_filename
        candidates = [filename] if filename else sorted(p.name for p in version_dir.iterdir())
        for candidate in candidates:
            kind = runtime_kind_for_file(candidate)
            if kind is not None:
                break
    if kind is None:
        raise ModelLoadError(
            f"model '{config.name}': no platform or backend in config.pbtxt and no model.onnx, model.skops "
            f"or model.py in its version folder"
            + (f" (it holds: {folder_contents(version_dir)})" if version_dir is not None else "")
            + '; set backend: "onnxruntime", "sklearn" or "python"',
            stage="config",
        )
    if not config.platform:
        config.platform = kind.platform
    if not config.backend:
        config.backend = kind.backend
    return kind


def refuse_unsupported_features(config: ModelConfig, *, source: str = CONFIG_FILENAME) -> None:
    """Refuse a config that uses a Triton feature whose absence would change answers (``_REFUSED_FIELDS``,
    and ``model_transaction_policy { decoupled: true }``: a model that answers a request with any number of
    responses, which this server's one-response calls cannot carry). ``source`` names where the config came
    from. Raises :class:`ModelLoadError` (stage "config") naming the field and that it is not supported yet."""
    used = [(name, what) for name, what in _REFUSED_FIELDS.items() if _is_set(config, name)]
    if config.model_transaction_policy.decoupled:
        used.append(
            ("model_transaction_policy { decoupled: true }", "decoupled models: any number of responses a request")
        )
    if used:
        name, what = used[0]
        raise ModelLoadError(
            f"model '{config.name}': {source} sets {name} ({what}), which modelserve does not support yet; "
            "remove it, or serve this model with Triton (README: Model repository lists what is refused)",
            stage="config",
        )


def ignored_fields(config: ModelConfig) -> list[str]:
    """Config fields that are set but that this server does not act on."""
    return [name for name in _IGNORED_FIELDS if _is_set(config, name)]


def _is_set(config: ModelConfig, name: str) -> bool:
    field = config.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:  # protobuf 6 deprecates field.label
        return len(getattr(config, name)) > 0
    if field.message_type is not None:
        return bool(config.HasField(name))
    return bool(getattr(config, name))


def _datatype(config: ModelConfig, kind: str, tensor: mc.ModelInput | mc.ModelOutput) -> Datatype:
    try:
        enum_name = mc.DataType.Name(tensor.data_type)
    except ValueError:  # proto3 enums are open: the text format accepts any number
        raise ModelLoadError(
            f"model '{config.name}': {kind} '{tensor.name}' has data_type {tensor.data_type}, which is no TYPE_* "
            "value; set a TYPE_* such as TYPE_FP32",
            stage="config",
        ) from None
    datatype = datatype_from_config_enum(enum_name)
    if datatype is None:
        raise ModelLoadError(
            f"model '{config.name}': {kind} '{tensor.name}' has data_type {enum_name}; set a TYPE_* such as TYPE_FP32",
            stage="config",
        )
    return datatype


def _spec(config: ModelConfig, kind: str, tensor: mc.ModelInput | mc.ModelOutput) -> TensorSpec:
    if not tensor.name:
        raise ModelLoadError(f"model '{config.name}': an {kind} in config.pbtxt has no name", stage="config")
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < -1 for d in dims):
        raise ModelLoadError(
            f"model '{config.name}': {kind} '{tensor.name}' has dims {list(dims)}; use -1 or >= 0", stage="config"
        )
    reshape = tuple(int(d) for d in tensor.reshape.shape) if tensor.HasField("reshape") else None
    optional = bool(getattr(tensor, "optional", False))
    return TensorSpec(
        name=tensor.name,
        datatype=_datatype(config, kind, tensor),
        dims=dims,
        model_shape=reshape,
        optional=optional,
    )


def signature_of(config: ModelConfig) -> ModelSignature:
    """The signature clients see. Raises :class:`ModelLoadError` for bad tensors or duplicate names."""
    inputs = tuple(_spec(config, "input", t) for t in config.input)
    outputs = tuple(_spec(config, "output", t) for t in config.output)
    for kind, specs in (("input", inputs), ("output", outputs)):
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ModelLoadError(
                f"model '{config.name}': {kind} names repeat in config.pbtxt: {duplicates}", stage="config"
            )
    return ModelSignature(
        name=config.name,
        platform=config.platform or config.backend,
        max_batch_size=int(config.max_batch_size),
        inputs=inputs,
        outputs=outputs,
    )


def _fill(config: ModelConfig, declared: Sequence[TensorSpec], kind: str) -> None:
    batching = config.max_batch_size > 0
    target = config.input if kind == "input" else config.output
    for spec in declared:
        tensor = target.add()
        tensor.name = spec.name
        tensor.data_type = mc.DataType.Value(spec.datatype.config_enum)
        tensor.dims.extend(spec.dims[1:] if batching else spec.dims)


def complete_and_check(config: ModelConfig, metadata: RuntimeMetadata, model_filename: str) -> None:
    """Fill missing inputs/outputs from what the model file declares, then check the two agree.

    Triton's auto-complete rule for batching: a model whose every tensor has a variable first dimension
    gets ``max_batch_size`` = 4 when the config gave none. Raises :class:`ModelLoadError` naming both
    the config's and the file's view on any disagreement.
    """
    if not metadata.inputs and not metadata.outputs:
        if not config.input or not config.output:
            raise ModelLoadError(
                f"model '{config.name}': config.pbtxt must list its input and output tensors; "
                f"{model_filename} does not declare them",
                stage="verify",
            )
        return
    if not config.input and not config.output and config.max_batch_size == 0:
        tensors = [*metadata.inputs, *metadata.outputs]
        if tensors and all(t.dims and t.dims[0] == -1 for t in tensors):
            config.max_batch_size = AUTOCOMPLETE_MAX_BATCH_SIZE
    if not config.input:
        _fill(config, metadata.inputs, "input")
    if not config.output:
        _fill(config, metadata.outputs, "output")
    _check(config, metadata, model_filename)


def _check(config: ModelConfig, metadata: RuntimeMetadata, model_filename: str) -> None:
    batching = config.max_batch_size > 0
    for kind, configured, declared in (
        ("input", config.input, metadata.inputs),
        ("output", config.output, metadata.outputs),
    ):
        by_name = {t.name: t for t in declared}
        for tensor in configured:
            spec = _spec(config, kind, tensor)
            model_tensor = by_name.get(spec.name)
            where = f"model '{config.name}': config.pbtxt {kind} '{spec.name}'"
            if model_tensor is None:
                raise ModelLoadError(
                    f"{where} is not in {model_filename}, which declares {kind}s {sorted(by_name)}", stage="verify"
                )
            if model_tensor.datatype is not spec.datatype:
                raise ModelLoadError(
                    f"{where} has data_type {spec.datatype.config_enum} but {model_filename} declares "
                    f"{model_tensor.datatype.value}",
                    stage="verify",
                )
            expected = ((-1,) if batching else ()) + (spec.model_shape if spec.model_shape is not None else spec.dims)
            if not _shapes_agree(expected, model_tensor.dims):
                raise ModelLoadError(
                    f"{where} has shape {list(expected)} (batch dim included) but {model_filename} declares "
                    f"{list(model_tensor.dims)}"
                    + ("; with max_batch_size > 0 the model's first dimension must be variable" if batching else ""),
                    stage="verify",
                )
        if kind == "input":
            named = {t.name for t in configured}
            missing = [t.name for t in declared if t.name not in named]
            if missing:
                raise ModelLoadError(
                    f"model '{config.name}': {model_filename} needs inputs {missing} that config.pbtxt does not list",
                    stage="verify",
                )


def _shapes_agree(config_shape: Sequence[int], model_shape: Sequence[int]) -> bool:
    if len(config_shape) != len(model_shape):
        return False
    return all(c == m or c == -1 or m == -1 for c, m in zip(config_shape, model_shape, strict=True))


def select_versions(config: ModelConfig, available: Sequence[int]) -> list[int]:
    """The versions to serve under ``version_policy`` (default: the latest one), highest first."""
    ordered = sorted(set(available), reverse=True)
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return ordered
    if which == "specific":
        wanted = {int(v) for v in policy.specific.versions}
        return [v for v in ordered if v in wanted]
    count = policy.latest.num_versions if which == "latest" and policy.latest.num_versions > 0 else 1
    return ordered[:count]
