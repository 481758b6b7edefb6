"""Routing policies persisted beside the model, like its aliases: ``<repository>/<model>/routing.json``.

The file holds the policy document (``RoutingPolicy.document()``) and the bucket table as run-length
ranges, so a restart, another process or another worker gives every unit the arm it had::

    {"policy": {"split": [...], "key": {...}, ...},
     "buckets": {"control": [[0, 9000]], "treatment": [[9000, 10000]]}}

Written atomically (a temporary file renamed over it) by the routing API only; the file passes the
repository's jail check (``core/paths.py``) before it is read or written, so a ``routing.json`` that is a
symbolic link out of the repository is refused, never followed. Once the file exists it wins over the
settings file's ``routing.<model>`` block (which only seeds a model that has none); deleting the policy
through the API deletes the file, and the settings file's policy applies again at the next start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.routing.assignment import BucketTable
from modelserve.routing.model_files import model_file, write_json_atomically
from modelserve.routing.policy import RoutingPolicy

__all__ = ["ROUTING_FILENAME", "PolicyFiles", "StoredPolicy", "describe_errors"]

ROUTING_FILENAME = "routing.json"


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy: RoutingPolicy
    table: BucketTable | None


def describe_errors(exc: PydanticValidationError) -> str:
    """A pydantic error as one line per field: ``split.1.weight: Input should be ...``."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class PolicyFiles:
    """Blocking file I/O: call from a thread, never the event loop. ``allow_symlinks`` is
    ``repository.allow_symlinks``."""

    def __init__(self, root: Path, *, allow_symlinks: bool = False) -> None:
        self._root = root
        self._allow_symlinks = allow_symlinks

    def _path(self, model: str) -> Path:
        return model_file(self._root, model, ROUTING_FILENAME, allow_symlinks=self._allow_symlinks)

    def models(self) -> list[str]:
        """The models of the repository that have a ``routing.json``."""
        if not self._root.is_dir():
            return []
        return sorted(child.name for child in self._root.iterdir() if (child / ROUTING_FILENAME).exists())

    def read(self, model: str) -> StoredPolicy | None:
        """The persisted policy, or None when the model has none. Raises :class:`ModelServeError`
        (INTERNAL) naming the file and the field when it cannot be read or is not a valid policy."""
        path = self._path(model)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ModelServeError(
                f"model '{model}': {ROUTING_FILENAME} cannot be read ({type(exc).__name__}); fix or remove it",
                code=ErrorCode.INTERNAL,
            ) from exc
        try:
            if not isinstance(raw, dict):
                raise ValueError('the file must hold {"policy": {...}, "buckets": {...}}')
            policy = RoutingPolicy.model_validate(raw.get("policy", {}))
            buckets = raw.get("buckets")
            table = BucketTable.from_ranges(buckets) if isinstance(buckets, dict) and policy.split else None
            if table is not None and set(table.counts()) - {arm.arm for arm in policy.split}:
                table = None  # buckets of arms the policy no longer has: rebuilt from the weights
        except PydanticValidationError as exc:
            raise ModelServeError(
                f"model '{model}': {ROUTING_FILENAME} is not a valid routing policy: {describe_errors(exc)}",
                code=ErrorCode.INTERNAL,
            ) from exc
        except ValueError as exc:
            raise ModelServeError(
                f"model '{model}': {ROUTING_FILENAME}: {exc}; fix or remove it", code=ErrorCode.INTERNAL
            ) from exc
        return StoredPolicy(policy, table)

    def write(self, model: str, policy: RoutingPolicy, table: BucketTable | None) -> None:
        document = {"policy": policy.document(), "buckets": {} if table is None else table.ranges()}
        write_json_atomically(self._path(model), document)

    def delete(self, model: str) -> None:
        self._path(model).unlink(missing_ok=True)
