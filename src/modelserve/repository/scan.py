"""Reading the repository folder: which models exist and which numeric version folders each has.

Non-numeric version folders are skipped (Triton does the same) and so are model folders whose name
is not a valid model name; both are logged once per scan.
"""

from __future__ import annotations

import logging
from pathlib import Path

from modelserve.core.errors import ValidationError
from modelserve.core.names import check_model_name

__all__ = ["list_models", "list_versions"]

log = logging.getLogger(__name__)


def list_models(root: Path) -> list[str]:
    """Model folder names under ``root``, sorted. Raises ``FileNotFoundError`` if ``root`` is missing."""
    names = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            names.append(check_model_name(entry.name))
        except ValidationError:
            log.warning("skipping folder %r in the model repository: not a valid model name", entry.name)
    return names


def list_versions(model_dir: Path) -> list[int]:
    """Numeric version folders of one model."""
    versions = []
    for entry in model_dir.iterdir():
        if entry.is_dir() and entry.name.isdigit():
            versions.append(int(entry.name))
        elif entry.is_dir() and not entry.name.startswith((".", "_")):
            log.warning("model %s: ignoring non-numeric version folder %r", model_dir.name, entry.name)
    return versions
