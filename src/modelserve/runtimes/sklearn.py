"""scikit-learn estimators saved with skops (``model.skops``); pickle and joblib are never loaded.

skops refuses to instantiate any type that is not on its trusted list. A model that needs more types
must list them in its config, so that trusting them is a decision written down next to the model::

    parameters { key: "skops_trusted_types" value: { string_value: "mypkg.MyTransformer,..." } }

Outputs map to estimator methods by name: ``label``/``predict`` -> ``predict``, ``probabilities``/
``predict_proba`` -> ``predict_proba``, ``decision_function``, ``transform``; or explicitly with a config
parameter ``method:<output name>`` whose value is the method name. scikit-learn releases the GIL in its
numeric kernels only partly; a model whose Python overhead dominates belongs in the python runtime.

Memory: an instance is counted as the pickled size of its estimator (protocol 5 with out-of-band
buffers, so numpy arrays are measured, not copied), or, if it does not pickle, the size of its
``.skops`` file; at least ``MEMORY_FLOOR_BYTES``. scikit-learn's own import (~100 MB of resident memory,
paid once by the first sklearn model) is the server's, not any one model's, and is not counted.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelserve.core.errors import ModelLoadError, RuntimeFailure
from modelserve.runtimes.base import LoadContext, MemoryFootprint, RuntimeMetadata

__all__ = ["MEMORY_FLOOR_BYTES", "SklearnRuntime"]

# The least one estimator is counted as. The iris LogisticRegression pickles to ~0.7 KB and 50 of them
# loaded grew the process by ~3 KiB each; 256 KiB keeps a repository of tiny estimators from counting
# as free under a memory budget.
MEMORY_FLOOR_BYTES = 256 << 10

_METHOD_BY_OUTPUT = {
    "label": "predict",
    "predict": "predict",
    "probabilities": "predict_proba",
    "predict_proba": "predict_proba",
    "decision_function": "decision_function",
    "transform": "transform",
}


class SklearnRuntime:
    # Runs in this process (no pipe to wait on): a scheduler may run a call that takes microseconds in place.
    runs_in_process = True

    def __init__(self, context: LoadContext) -> None:
        self._context = context
        self._estimator: Any = None
        self._methods: dict[str, str] = {}
        self._footprint: MemoryFootprint | None = None

    def load(self) -> RuntimeMetadata:
        import skops.io

        context = self._context
        path = context.version_dir / context.model_filename
        if path.suffix != ".skops":
            raise ModelLoadError(
                f"model '{context.model_name}': the sklearn runtime loads only .skops files (got "
                f"'{context.model_filename}'); pickle and joblib can run code when loaded. Save the "
                "estimator with skops.io.dump(estimator, 'model.skops')"
            )
        trusted = [t for t in context.parameters.get("skops_trusted_types", "").split(",") if t.strip()]
        try:
            untrusted = skops.io.get_untrusted_types(file=path)
            missing = sorted(set(untrusted) - {t.strip() for t in trusted})
            if missing:
                raise ModelLoadError(
                    f"model '{context.model_name}': '{context.model_filename}' needs types that are not "
                    f"trusted: {', '.join(missing)}. If you trust them, list them in config.pbtxt: "
                    'parameters { key: "skops_trusted_types" value: { string_value: "..." } }'
                )
            self._estimator = skops.io.load(path, trusted=trusted or None)
        except ModelLoadError:
            raise
        except Exception as exc:  # skops/zipfile raise many kinds for a corrupt file
            raise ModelLoadError(
                f"model '{context.model_name}' version {context.version}: cannot read "
                f"'{context.model_filename}' as a skops file: {type(exc).__name__}"
            ) from exc
        signature = context.signature
        outputs = signature.output_names if signature is not None else ()
        for output in outputs:
            method = context.parameters.get(f"method:{output}") or _METHOD_BY_OUTPUT.get(output)
            if method is None or not callable(getattr(self._estimator, method, None)):
                raise ModelLoadError(
                    f"model '{context.model_name}': output '{output}' maps to no method of "
                    f"{type(self._estimator).__name__}; name the output label/probabilities/"
                    f'decision_function/transform or add parameters {{ key: "method:{output}" '
                    'value: { string_value: "predict" } }'
                )
            self._methods[output] = method
        return RuntimeMetadata()

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        if len(inputs) != 1:
            raise RuntimeFailure(
                f"model '{self._context.model_name}': a scikit-learn estimator takes one input, got {len(inputs)}"
            )
        (features,) = inputs.values()
        results: dict[str, np.ndarray] = {}
        cache: dict[str, np.ndarray] = {}
        try:
            for name in output_names:
                method = self._methods[name]
                if method not in cache:
                    cache[method] = np.asarray(getattr(self._estimator, method)(features))
                results[name] = cache[method]
        except Exception as exc:
            raise RuntimeFailure(
                f"model '{self._context.model_name}' failed in {type(self._estimator).__name__}: "
                f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
            ) from exc
        return results

    def unload(self) -> None:
        self._estimator = None
        self._footprint = None

    @property
    def is_healthy(self) -> bool:
        return self._estimator is not None

    @property
    def failure_reason(self) -> str:
        return ""  # nothing fails for good in process: a failed load raises, a failed call fails alone

    def memory_bytes(self) -> MemoryFootprint:
        """The estimator's pickled size (see the module docstring), measured once per load."""
        if self._estimator is None:
            return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
        if self._footprint is None:
            self._footprint = self._measure()
        return self._footprint

    def _measure(self) -> MemoryFootprint:
        buffers: list[pickle.PickleBuffer] = []
        try:
            # The trusted estimator was loaded by skops; pickling it only measures it, nothing is loaded.
            inline = len(pickle.dumps(self._estimator, protocol=5, buffer_callback=buffers.append))
        except (pickle.PicklingError, TypeError, AttributeError):  # a lambda, a C handle: size the file instead
            path = self._context.version_dir / self._context.model_filename
            try:
                size = path.stat().st_size
            except OSError:
                return MemoryFootprint(MEMORY_FLOOR_BYTES, "floor")
            return MemoryFootprint.at_least(size, "file-size", floor_bytes=MEMORY_FLOOR_BYTES)
        measured = inline + sum(memoryview(buffer).nbytes for buffer in buffers)
        return MemoryFootprint.at_least(measured, "pickled-size", floor_bytes=MEMORY_FLOOR_BYTES)
