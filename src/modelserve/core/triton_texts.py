"""Triton's wording for the errors its clients match on, in one table, each followed by our hint.

Triton's own example clients and many users' scripts test an error's message, not only its status:
``simple_http_infer_client.py`` checks that an unknown model's error starts with "Request for unknown
model", the model-control examples look for "failed to load" in a refused load. So wherever Triton has
a text for an error we raise, the message starts with Triton's exact words (its first sentence), and our
own sentence on how to fix it follows. Where Triton has no text (aliases, our limits), the raising module
writes its own message.

The sources, in ``triton-inference-server/core`` (read at 73aad7c, June 2026):

- ``src/model_repository_manager/model_repository_manager.cc``: ``GetModel`` prefixes every lookup
  failure with "Request for unknown model: ", and ``FindModelIdentifier`` says "'m' is not found";
  ``LoadModel`` answers "failed to load 'm', failed to poll from model repository" for a name the
  repository does not have.
- ``src/model_repository_manager/model_lifecycle.cc`` (``GetModel``): "'m' version 3 is not found",
  "'m' has no available versions", "'m' version 3 is not at ready state".
- ``src/model.cc``: "unexpected inference input 'x' for model 'm'" (and the same for outputs).
- ``src/infer_request.cc`` (``Normalize``, ``ValidateRequestInputs``): the data-type, shape, batch-size
  and input-count texts below. Triton writes shapes as ``[-1,16]``: no spaces (``DimsListToString``).
- ``triton-inference-server/server: src/http_server.cc`` (``HandleModelReady``): "Model version not ready".

Every function returns a whole message, safe to send to a client: the names it is given are the ones the
request or the repository used (already checked by ``core/names.py``), never a path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "MODEL_VERSION_NOT_READY",
    "batch_size_mismatch",
    "batch_size_too_large",
    "datatype_mismatch",
    "dims",
    "failed_to_load",
    "model_not_ready",
    "no_available_versions",
    "unexpected_input",
    "unexpected_output",
    "unexpected_shape",
    "unknown_model",
    "unknown_model_load",
    "unknown_version",
    "version_not_ready",
    "wrong_input_count",
]

# What Triton's REST front end answers (400) for a model or version that exists but is not ready.
MODEL_VERSION_NOT_READY = "Model version not ready"


def _then(triton: str, hint: str) -> str:
    """Triton's sentence, then ours (capitalised: it starts a sentence)."""
    if not hint:
        return triton
    return f"{triton}. {hint[:1].upper()}{hint[1:]}"


def dims(shape: Iterable[int]) -> str:
    """A shape as Triton writes it in messages: ``[-1,16]``."""
    return "[" + ",".join(str(d) for d in shape) + "]"


# -- which model and version serve (routing and the repository) ---------------------------------------


def unknown_model(name: str, hint: str) -> str:
    """The repository has no model ``name`` (Triton: INVALID_ARG from ``FindModelIdentifier``)."""
    return _then(f"Request for unknown model: '{name}' is not found", hint)


def unknown_version(name: str, version: str, hint: str) -> str:
    """The model is known but has no version ``version`` (Triton: NOT_FOUND)."""
    return _then(f"Request for unknown model: '{name}' version {version} is not found", hint)


def no_available_versions(name: str, hint: str) -> str:
    """The model is known but no version of it serves: not loaded, unloaded, loading or failed (Triton:
    NOT_FOUND, for a request that names no version)."""
    return _then(f"Request for unknown model: '{name}' has no available versions", hint)


def version_not_ready(name: str, version: str, hint: str) -> str:
    """The version exists but is not READY (Triton: UNAVAILABLE)."""
    return _then(f"Request for unknown model: '{name}' version {version} is not at ready state", hint)


def model_not_ready(detail: str) -> str:
    """The REST answer (400) to ``GET /v2/models/{m}[/versions/{v}]/ready`` for a model that is not ready;
    ``detail`` says which state each version is in."""
    return _then(MODEL_VERSION_NOT_READY, detail)


# -- loading (the repository extension) --------------------------------------------------------------


def unknown_model_load(name: str, hint: str) -> str:
    """A load of a name the repository has no folder for (Triton: INTERNAL)."""
    return _then(f"failed to load '{name}', failed to poll from model repository", hint)


def failed_to_load(name: str, reason: str) -> str:
    """A load that stopped: ``reason`` is the stage's own message, which names the setting or file.

    Triton's message for a load its backend refused starts "load failed for model 'm'", and for one its
    repository poll refused "failed to load 'm', ..."; its model-control examples look for "failed to
    load", so that is the prefix every load failure gets here."""
    return f"failed to load '{name}': {reason}"


# -- the request against the model's signature (service/validation.py) -------------------------------


def unexpected_input(input_name: str, model: str, hint: str) -> str:
    return _then(f"unexpected inference input '{input_name}' for model '{model}'", hint)


def unexpected_output(output_name: str, model: str, hint: str) -> str:
    return _then(f"unexpected inference output '{output_name}' for model '{model}'", hint)


def datatype_mismatch(input_name: str, model: str, got: str, expected: str, hint: str) -> str:
    return _then(f"inference input '{input_name}' data-type is '{got}', but model '{model}' expects '{expected}'", hint)


def unexpected_shape(input_name: str, model: str, expected: Sequence[int], got: Sequence[int], hint: str) -> str:
    """``expected`` is the full shape, with ``-1`` for the batch dimension of a batching model."""
    return _then(
        f"unexpected shape for input '{input_name}' for model '{model}'. Expected {dims(expected)}, got {dims(got)}",
        hint,
    )


def batch_size_too_large(model: str, max_batch_size: int, hint: str) -> str:
    return _then(f"inference request batch-size must be <= {max_batch_size} for '{model}'", hint)


def batch_size_mismatch(input_name: str, model: str, hint: str) -> str:
    return _then(f"input '{input_name}' batch size does not match other inputs for '{model}'", hint)


def wrong_input_count(
    model: str, *, required: int, total: int, got: Sequence[str], missing: Sequence[str], hint: str
) -> str:
    """Required inputs are missing: the model has ``total`` inputs, ``required`` of them not optional."""
    got_list = "[" + ",".join(f"'{n}'" for n in got) + "]"
    missing_list = "[" + ",".join(f"'{n}'" for n in missing) + "]"
    expected = f"{total} inputs" if required == total else f"number of inputs between {required} and {total}"
    return _then(
        f"expected {expected} but got {len(got)} inputs for model '{model}'. Got input(s) {got_list}, "
        f"but missing required input(s) {missing_list}. Please provide all required input(s)",
        hint,
    )
