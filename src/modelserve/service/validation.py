"""Check a decoded request against the model's signature, before it is queued.

:func:`check_declared_inputs` applies the same rules to what a request *declares* (names, datatypes,
shapes), so a transport can refuse a mistyped request before decoding its elements; :func:`validate_inputs`
runs them again on the decoded request.

Each message starts with Triton's own text for the error (``core/triton_texts.py``: clients match on it),
then says what the model expects and how to fix the request.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelserve.core import triton_texts
from modelserve.core.datatypes import Datatype
from modelserve.core.errors import ValidationError
from modelserve.core.inference import InferRequest
from modelserve.core.signature import ModelSignature, TensorSpec

__all__ = ["DeclaredInputs", "check_declared_inputs", "output_names_for", "validate_inputs"]

# Input name -> (datatype, shape), as a request declares them (before or after its data is decoded).
DeclaredInputs = Mapping[str, tuple[Datatype, tuple[int, ...]]]


def _shape_matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _expected(spec: TensorSpec, max_batch_size: int) -> str:
    return str(spec.client_shape(max_batch_size))


def validate_inputs(request: InferRequest, signature: ModelSignature) -> None:
    """Raise :class:`ValidationError` unless every input is known, present, typed and shaped as declared."""
    datatypes = request.input_datatypes
    check_declared_inputs(
        {name: (datatypes[name], tuple(array.shape)) for name, array in request.inputs.items()}, signature
    )


def check_declared_inputs(declared: DeclaredInputs, signature: ModelSignature) -> None:
    """Raise :class:`ValidationError` unless every declared input is known, present, typed and shaped as
    the model expects. Looks at no tensor data: the cost is per input, whatever the request's size."""
    model = signature.name
    max_batch = signature.max_batch_size
    batch_sizes: set[int] = set()
    for name, (datatype, shape) in declared.items():
        spec = signature.input(name)
        if spec is None:
            raise ValidationError(
                triton_texts.unexpected_input(name, model, f"its inputs are {[s.name for s in signature.inputs]}")
            )
        if datatype is not spec.datatype:
            raise ValidationError(
                triton_texts.datatype_mismatch(
                    name,
                    model,
                    datatype.value,
                    spec.datatype.value,
                    f"send input '{name}' as {spec.datatype.value} (it was sent as {datatype.value})",
                )
            )
        if max_batch > 0:
            if len(shape) != len(spec.dims) + 1 or not _shape_matches(shape[1:], spec.dims):
                raise ValidationError(
                    triton_texts.unexpected_shape(
                        name,
                        model,
                        spec.client_shape(max_batch),
                        shape,
                        f"input '{name}' has shape {list(shape)} but the model expects {_expected(spec, max_batch)}"
                        f" (first dimension = batch size, 1..{max_batch})",
                    )
                )
            if shape[0] < 1:  # Triton has no text for an empty batch: it never checks for one
                raise ValidationError(
                    f"input '{name}' of model '{model}' has batch size {shape[0]}; it must be 1..{max_batch} "
                    "(max_batch_size)"
                )
            if shape[0] > max_batch:
                raise ValidationError(
                    triton_texts.batch_size_too_large(
                        model,
                        max_batch,
                        f"input '{name}' has batch size {shape[0]}; it must be 1..{max_batch} (max_batch_size); "
                        "split the request",
                    )
                )
            batch_sizes.add(shape[0])
        elif not _shape_matches(shape, spec.dims):
            raise ValidationError(
                triton_texts.unexpected_shape(
                    name,
                    model,
                    spec.client_shape(max_batch),
                    shape,
                    f"input '{name}' has shape {list(shape)} but the model expects {_expected(spec, max_batch)}",
                )
            )
    if len(batch_sizes) > 1:
        rows = [(input_name, shape[0]) for input_name, (_, shape) in declared.items()]
        first = next(input_name for input_name, size in rows if size != rows[0][1])
        raise ValidationError(
            triton_texts.batch_size_mismatch(
                first,
                model,
                f"the inputs disagree on the batch size (first dimension): {sorted(batch_sizes)}; send the same "
                "number of rows in every input",
            )
        )
    missing = [s.name for s in signature.inputs if not s.optional and s.name not in declared]
    if missing:
        raise ValidationError(
            triton_texts.wrong_input_count(
                model,
                required=sum(not s.optional for s in signature.inputs),
                total=len(signature.inputs),
                got=list(declared),
                missing=missing,
                hint=f"model '{model}' expects input(s) {missing} that the request does not carry; "
                f"send every input of {[s.name for s in signature.inputs]}",
            )
        )


def output_names_for(request: InferRequest, signature: ModelSignature, max_requested: int) -> list[str]:
    """The outputs to compute, in response order: the requested ones, else all the model's."""
    if request.requested_outputs is None:
        return list(signature.output_names)
    if len(request.requested_outputs) > max_requested:
        raise ValidationError(
            f"the request asks for {len(request.requested_outputs)} outputs; at most {max_requested} are allowed"
        )
    names: list[str] = []
    for output in request.requested_outputs:
        if signature.output(output.name) is None:
            raise ValidationError(
                triton_texts.unexpected_output(
                    output.name, signature.name, f"its outputs are {list(signature.output_names)}"
                )
            )
        if output.name in names:
            raise ValidationError(f"output '{output.name}' is requested twice")
        top_n = output.parameters.get("classification")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise ValidationError(f"output '{output.name}': 'classification' must be a positive integer, got {top_n!r}")
        names.append(output.name)
    return names
