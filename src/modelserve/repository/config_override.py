"""A model config given with a load request (Triton's repository load API, parameter ``config``): a Triton
``ModelConfig`` in protobuf's JSON mapping, used for that load instead of the folder's config.pbtxt.

It is parsed into the same message and passes the same checks as a config.pbtxt (name, batch size, then
everything a load checks: runtime, tensors against the model file, scheduling). Fields it leaves out are
filled as for a config.pbtxt that leaves them out: the ONNX runtime completes ``input``/``output`` from the
model file (Triton's auto-complete), the python runtime cannot, so a python model's override lists them.
The repository's config.pbtxt is not changed; a later load without ``config`` reads it again.
"""

from __future__ import annotations

import json

from google.protobuf import json_format

from modelserve.core import triton_texts
from modelserve.core.errors import ModelLoadError
from modelserve.repository.model_config import ModelConfig, check_name_and_batch, new_model_config

__all__ = ["MAX_CONFIG_OVERRIDE_BYTES", "config_from_json"]

# A config.pbtxt of every field Triton has is a few KiB; this leaves room for long tensor lists.
MAX_CONFIG_OVERRIDE_BYTES = 1 * 2**20


def config_from_json(text: str, name: str) -> ModelConfig:
    """Parse the load request's ``config`` for model ``name``. Raises :class:`ModelLoadError` (stage
    "config", Triton's "failed to load" first) saying what is wrong with it: too large, not a JSON object,
    a field ModelConfig does not have or a value of the wrong type (protobuf's message names the field),
    another model's name."""
    try:
        return _parsed(text, name)
    except ModelLoadError as exc:
        raise ModelLoadError(triton_texts.failed_to_load(name, exc.message), stage="config") from None


def _parsed(text: str, name: str) -> ModelConfig:
    if len(text) > MAX_CONFIG_OVERRIDE_BYTES:
        raise ModelLoadError(
            f"the load request's 'config' holds {len(text)} characters, more than the "
            f"{MAX_CONFIG_OVERRIDE_BYTES} allowed",
            stage="config",
        )
    try:
        document = json.loads(text)
    except RecursionError:
        raise ModelLoadError(
            "the load request's 'config' nests too deeply to be a Triton ModelConfig",
            stage="config",
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"the load request's 'config' is not valid JSON ({exc.msg} at character "
            f'{exc.pos}); send a Triton ModelConfig as a JSON object, e.g. {{"max_batch_size": 16}}',
            stage="config",
        ) from None
    if not isinstance(document, dict):
        raise ModelLoadError(
            f"the load request's 'config' must be a JSON object (a Triton ModelConfig), got {type(document).__name__}",
            stage="config",
        )
    config = new_model_config()
    try:
        json_format.ParseDict(document, config)
    except (json_format.ParseError, RecursionError) as exc:
        raise ModelLoadError(
            f"the load request's 'config' is not a Triton ModelConfig: {_first_sentence(exc)}",
            stage="config",
        ) from None
    check_name_and_batch(config, name, source="load request's config")
    return config


def _first_sentence(exc: BaseException) -> str:
    """protobuf's message without the list of every ModelConfig field it appends to an unknown one."""
    return str(exc).split(" Available Fields", 1)[0][:300]
