"""The custom-model API: as plain as it can be.

``<repo>/<model>/<version>/model.py`` defines a class ``Model``; subclassing :class:`PythonModel` is
optional but documents the contract::

    import numpy as np
    from modelserve import PythonModel, ModelContext

    class Model(PythonModel):
        def load(self, context: ModelContext) -> None:        # once per worker process, optional
            self.scale = float(context.parameters.get("scale", "1"))

        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"y": inputs["x"] * self.scale}

Inputs arrive as numpy arrays shaped as the client sent them (BYTES as object arrays of ``bytes``);
``infer`` returns a dict with at least every output the config declares. Each worker process runs one
``infer`` at a time; ``instance_group { count: N }`` starts N workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ModelContext", "PythonModel"]


@dataclass(frozen=True, slots=True)
class ModelContext:
    """Facts a model may need in ``load``: its name, version, folder and config ``parameters``."""

    name: str
    version: str
    version_dir: Path
    parameters: Mapping[str, str] = field(default_factory=dict)


class PythonModel:
    """Base class for ``model.py`` models. Override ``infer``; ``load`` and ``unload`` are optional."""

    def load(self, context: ModelContext) -> None:
        """Prepare the model (read weights from ``context.version_dir``). Raise to fail the load."""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Compute outputs from inputs. Raise to fail this request only."""
        raise NotImplementedError("a python model must implement infer(self, inputs)")

    def unload(self) -> None:
        """Release resources; called before the worker exits."""
