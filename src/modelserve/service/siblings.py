"""The other worker processes of this server (``server.workers``), as the dataplane reaches them.

A lifecycle call (load, unload, an alias move) changes one worker's state; :class:`Siblings` carries it
to the others, so every worker serves the same models under the same aliases. The app provides the
implementation (``app/siblings.py``, over Unix sockets); with one worker there is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Siblings"]


class Siblings(Protocol):
    """Each call waits for every reachable sibling. The lifecycle calls raise ``ModelServeError``
    (UNAVAILABLE) naming the workers where the change failed; the readers skip a sibling that does not
    answer (one being restarted) and return what the others said."""

    @property
    def worker_index(self) -> int:
        """This worker's index (0 .. workers - 1)."""
        ...

    async def load_model(self, name: str, parameters: Mapping[str, Any]) -> None: ...

    async def unload_model(self, name: str, parameters: Mapping[str, Any]) -> None: ...

    async def reload_aliases(self, name: str) -> None: ...

    async def reload_routing(self, name: str) -> None:
        """Every sibling reads ``name``'s routing policy file again; returns when all have."""
        ...

    async def register_shared_memory(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register the system shared-memory region on every sibling (each opens the object itself)."""
        ...

    async def unregister_shared_memory(self, name: str, *, strict: bool = True) -> None:
        """Unregister it (every region when ``name`` is empty); ``strict=False`` logs a failure instead of
        raising it (undoing a registration a sibling refused)."""
        ...

    async def statistics_documents(self, name: str, version: str) -> list[dict[str, Any]]:
        """Each sibling's statistics document for ``name``/``version`` (both may be empty: every model)."""
        ...

    async def metrics_texts(self) -> dict[int, str]:
        """Each sibling's ``/metrics`` text, by worker index."""
        ...

    async def loaded_models(self) -> dict[str, dict[str, Any]]:
        """The models a sibling has loaded now, each with the load parameters it was loaded with (empty
        when none answers): what a restarted worker loads."""
        ...
