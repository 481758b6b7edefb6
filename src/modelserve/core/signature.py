"""A model's signature: its inputs and outputs as clients see them, derived once from its config.

``dims`` never include the batch dimension; when ``max_batch_size > 0`` a leading batch dimension of
1..max_batch_size is implied (Triton's rule). ``-1`` is a variable dimension. ``model_shape`` is the
shape the model itself uses when the config has a ``reshape`` (Triton: the client sends ``dims``, the
model sees ``reshape``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelserve.core.datatypes import Datatype

__all__ = ["ModelSignature", "TensorSpec"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: Datatype
    dims: tuple[int, ...]
    model_shape: tuple[int, ...] | None = None
    optional: bool = False

    def client_shape(self, max_batch_size: int) -> list[int]:
        """The shape shown in model metadata: ``[-1] + dims`` for batching models (Triton's rule)."""
        return ([-1] if max_batch_size > 0 else []) + list(self.dims)


@dataclass(frozen=True, slots=True)
class ModelSignature:
    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    inputs_by_name: dict[str, TensorSpec] = field(init=False, compare=False, repr=False)
    outputs_by_name: dict[str, TensorSpec] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Lookups on the request path are dict lookups; the tuples keep the declared order.
        object.__setattr__(self, "inputs_by_name", {s.name: s for s in self.inputs})
        object.__setattr__(self, "outputs_by_name", {s.name: s for s in self.outputs})

    def input(self, name: str) -> TensorSpec | None:
        return self.inputs_by_name.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self.outputs_by_name.get(name)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)
