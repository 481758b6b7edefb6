"""The public API is deliberate: what ``modelserve`` exports is pinned here."""

from __future__ import annotations

import modelserve


def test_exported_members() -> None:
    assert sorted(modelserve.__all__) == [
        "Engine",
        "ErrorCode",
        "InferResult",
        "ModelContext",
        "ModelServeError",
        "PythonModel",
        "__version__",
    ]
    for name in modelserve.__all__:
        assert hasattr(modelserve, name)


def test_importing_the_package_does_not_import_heavy_runtimes() -> None:
    import subprocess
    import sys

    # A python model's worker imports PythonModel from here: the engine and the runtimes load only on use.
    code = "import sys, modelserve; print(sorted(m for m in ('onnxruntime','sklearn','skops','torch','grpc','modelserve.app.engine') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_the_engine_is_exported_lazily() -> None:
    from modelserve.app.engine import Engine

    assert modelserve.Engine is Engine
