"""The public API is deliberate: what ``modelserve`` exports is pinned here."""

from __future__ import annotations

import modelserve


def test_exported_members() -> None:
    assert sorted(modelserve.__all__) == ["ModelContext", "PythonModel", "__version__"]
    for name in modelserve.__all__:
        assert hasattr(modelserve, name)


def test_importing_the_package_does_not_import_heavy_runtimes() -> None:
    import subprocess
    import sys

    code = "import sys, modelserve; print(sorted(m for m in ('onnxruntime','sklearn','skops','torch','grpc') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
