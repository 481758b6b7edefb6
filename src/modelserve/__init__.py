"""modelserve: an inference server that speaks Triton's protocol (KServe V2 / Open Inference Protocol).

The public API for users' python models is :class:`PythonModel` and :class:`ModelContext`; everything
else is run through the ``modelserve`` command.
"""

from __future__ import annotations

__version__ = "0.1.0"

from modelserve.runtimes.python.api import ModelContext, PythonModel

__all__ = ["ModelContext", "PythonModel", "__version__"]
