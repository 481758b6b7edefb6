"""Tensors that live in a client's shared memory (Triton's system shared memory extension), as the layers
see them: a reference to bytes in a registered region, never a file or a mapping.

The protocol layer reads a tensor's ``shared_memory_region`` / ``shared_memory_offset`` /
``shared_memory_byte_size`` parameters into a :class:`SharedMemoryRef`; the service layer owns the
registered regions (``service/shared_memory.py``) and offers them through :class:`RegionAccess`, which the
codecs call to copy an input out of a region or an output into one. So no codec opens a file or touches the
file system, and every bounds check lives in one place.

Keys the server's own processes use for shared memory carry one of :data:`SERVER_KEY_PREFIXES`; the
registry refuses to register any key that does (CVE-2025-23319/23320/23334: a client registered Triton's
Python backend's own IPC key and gained read/write on the server's memory). Whatever creates a shared
memory object inside this server must name it with :data:`SERVER_KEY_PREFIX`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["SERVER_KEY_PREFIX", "SERVER_KEY_PREFIXES", "RegionAccess", "SharedMemoryRef"]

SERVER_KEY_PREFIX = "modelserve_"
"""The prefix of every shared-memory object this server creates itself (none today: the python runtime
talks to its workers over a socket pair). Reserved, so a future IPC buffer can never be registered by a
client."""

SERVER_KEY_PREFIXES: tuple[str, ...] = (
    SERVER_KEY_PREFIX,
    # Triton's Python backend's IPC regions (the object of the CVEs above): reserved for the Triton
    # Python-backend API this server is to offer, which may keep Triton's names.
    "triton_python_backend_shm_region_",
    # Python's multiprocessing.shared_memory names its objects psm_<random>, and POSIX named semaphores
    # (multiprocessing's locks among them) live in /dev/shm as sem.<name>: what a runtime written with the
    # standard library would create.
    "psm_",
    "sem.",
)
"""Key prefixes a client may never register (compared after the optional leading ``/``)."""


@dataclass(frozen=True, slots=True)
class SharedMemoryRef:
    """A tensor's bytes in a registered region: ``byte_size`` bytes from ``offset`` (relative to the start
    of the region as registered, not of the underlying object). Both are plain non-negative ints, checked
    by the protocol layer against the tensor and by :class:`RegionAccess` against the region."""

    region: str
    offset: int
    byte_size: int


class RegionAccess(Protocol):
    """The registered regions, as a codec uses them. Every method raises a ``ModelServeError``
    (INVALID_ARGUMENT) naming the region and the fix when it is unknown or ``ref`` does not lie inside it;
    ``what`` names the tensor in that message (``input 'INPUT0'``). Thread-safe: called from the event
    loop (REST) and from gRPC's threads at once."""

    def read(self, ref: SharedMemoryRef, what: str) -> bytes:
        """A copy of the referenced bytes: the request keeps what was checked even if the client writes to
        the region meanwhile, and an unregister never waits for a model."""
        ...

    def check(self, ref: SharedMemoryRef, what: str) -> None:
        """That ``ref`` lies inside a registered region now (a requested output, before the model runs)."""
        ...

    def write(self, ref: SharedMemoryRef, data: bytes | memoryview, what: str) -> None:
        """Copy ``data`` to the start of ``ref``; it must fit in ``ref.byte_size``."""
        ...
