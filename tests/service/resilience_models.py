"""Python models for the resilience tests: each version raises while its flag file exists, logs every call
it runs, and (the shadow tests) one version waits for a gate file."""

from __future__ import annotations

from pathlib import Path

from tests.model_builders import write_python_model

FLAKY_MODEL = """
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            folder = Path(context.parameters["folder"])
            tag = f"{context.name}-{context.version}"
            self.flag = folder / f"fail-{tag}"
            self.calls = folder / f"calls-{tag}"
            gated = context.parameters.get("gated_version", "") == context.version
            self.gate = folder / "open-gate" if gated else None
            self.factor = float(context.parameters.get("factor") or context.version)

        def infer(self, inputs):
            with self.calls.open("a") as f:
                f.write("call\\n")
            if self.gate is not None:
                deadline = time.monotonic() + 20  # bounded: a test that never opens the gate still ends
                while not self.gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
            if self.flag.exists():
                raise RuntimeError(f"test flag {self.flag.name} is set")
            return {"y": (inputs["x"] * self.factor).astype(np.float32)}
"""

FLAKY_CONFIG = """
    backend: "python"
    max_batch_size: 8
    version_policy: {{ all {{ }} }}
    input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
    output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
    parameters {{ key: "folder" value: {{ string_value: "{folder}" }} }}
    parameters {{ key: "factor" value: {{ string_value: "{factor}" }} }}
    parameters {{ key: "gated_version" value: {{ string_value: "{gated_version}" }} }}
"""


def write_flaky(
    repo: Path, folder: Path, name: str, versions: int = 1, factor: str = "", gated_version: str = ""
) -> None:
    """Model ``name`` (versions 1..``versions``): y = x * factor (default: the version number); version
    ``gated_version`` waits (bounded) for the file ``open-gate`` before it answers."""
    for version in range(1, versions + 1):
        write_python_model(
            repo / name,
            FLAKY_MODEL,
            FLAKY_CONFIG.format(folder=folder, factor=factor, gated_version=gated_version),
            version,
        )


def calls(folder: Path, name: str, version: str) -> int:
    path = folder / f"calls-{name}-{version}"
    return len(path.read_text().splitlines()) if path.exists() else 0
