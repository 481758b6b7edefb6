"""The registered system shared-memory regions (Triton's ``systemsharedmemory`` extension).

A client creates a POSIX shared-memory object (``shm_open``; tritonclient's
``utils.shared_memory.create_shared_memory_region``), registers a window of it under a region name, and
then names the region in a tensor's ``shared_memory_region`` parameter. :class:`SharedMemoryRegistry` holds
each registered object open and is the :class:`~modelserve.core.shared_memory.RegionAccess` the codecs read
inputs from and write outputs to.

Why a descriptor and ``pread``/``pwrite``, not ``mmap``: the object belongs to the client, who may shrink
it (``ftruncate``) at any time, and touching a mapped page past the end of a shrunk object raises SIGBUS,
which kills the server (tried: a Python process that reads such a mapping dies with "Bus error"). A
``pread`` past the end returns fewer bytes instead, which is refused as an error, and a ``pwrite`` is checked
against the object's size first, so a client can never grow it through us. Every use copies anyway
(below), so the mapping would have saved nothing.

The rules, each because a peer got it wrong (CVE-2024-0088; CVE-2025-23319/23320/23334):

- A key is a plain POSIX shm name (one optional leading ``/``, then letters, digits, ``.``, ``_``, ``-``,
  not starting with ``.``): no path, no ``..``. It is opened under ``/dev/shm`` with ``O_NOFOLLOW`` and
  must be a regular file, so a link planted there cannot point the server at another file.
- Keys with a prefix the server's own processes use (:data:`~modelserve.core.shared_memory.SERVER_KEY_PREFIXES`)
  are refused before anything is opened.
- ``offset + byte_size`` must lie inside the object's real size (fstat) at registration, and every use's
  ``offset + byte_size`` inside the region (and, for a write, inside the object as it is then). Python
  integers do not overflow, and each comparison is written so that no intermediate sum can exceed what is
  compared (``offset > size or byte_size > size - offset``), which is how a fixed-width rewrite would have
  to write it too.
- At most ``shared_memory.max_regions`` regions (each holds one descriptor) and
  ``shared_memory.max_total_bytes`` bytes registered.
- A name registered twice is refused (Triton: "already in manager"); unregistering a name that is not
  registered succeeds, as in Triton.
- Messages name the region, never the key nor a path nor an OS error text.

Lifetime: inputs are copied out of a region (copy-in), outputs copied in, each under a lease (a count of
users of the region). Unregistering removes the name at once; the descriptor is closed when its last lease
ends, so an unregister racing a request never closes it under the copy (nor lets its number be reused for
another file meanwhile). :meth:`close` (engine shutdown) unregisters everything.

Thread-safety: every method may be called from any thread (REST on the event loop, gRPC on its threads);
one lock guards the table, and the copies run outside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from modelserve.core.errors import ErrorCode, ModelServeError
from modelserve.core.shared_memory import SERVER_KEY_PREFIXES, SharedMemoryRef

__all__ = ["RegionStatus", "SharedMemoryError", "SharedMemoryRegistry", "check_key"]

log = logging.getLogger(__name__)

# Where Linux keeps POSIX shared memory (what shm_open opens); not a temporary folder of ours.
_SHM_DIR = "/dev/shm"  # noqa: S108
# NAME_MAX is 255 on Linux; the first character may not be '.', so '.' and '..' (and hidden names) are out.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
_MAX_NAME_CHARS = 256


class SharedMemoryError(ModelServeError):
    """A region request the client can fix: unknown region, out-of-bounds window, refused key, limits."""

    code = ErrorCode.INVALID_ARGUMENT


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """One registered region as the status call reports it (Triton's fields)."""

    name: str
    key: str
    offset: int
    byte_size: int


class _Region:
    """A registered window [offset, offset + byte_size) of the object open as ``fd``; ``users`` counts
    leases; ``is_retired`` means unregistered, to be closed when ``users`` drops to 0."""

    __slots__ = ("byte_size", "fd", "is_retired", "key", "name", "offset", "users")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int) -> None:
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        self.fd = fd
        self.users = 0
        self.is_retired = False

    def close(self) -> None:
        os.close(self.fd)


def _region_name(name: str) -> str:
    if not name:
        raise SharedMemoryError(
            "a system shared memory region needs a name: POST /v2/systemsharedmemory/region/{name}/register"
        )
    if len(name) > _MAX_NAME_CHARS:
        raise SharedMemoryError(f"a region name has at most {_MAX_NAME_CHARS} characters, got {len(name)}")
    return name


def _shown(name: str) -> str:
    """A client's region name for a message: bounded, and printable whatever it holds."""
    return name[:64].encode("utf-8", "backslashreplace").decode("utf-8")


def check_key(name: str, key: str) -> str:
    """The object name under ``/dev/shm`` for ``key`` (its leading ``/`` removed). Raises
    :class:`SharedMemoryError` naming region ``name`` for a key that is not a plain POSIX shm name or that
    has one of the server's own prefixes; the key itself is never echoed. Pure."""
    plain = key[1:] if key.startswith("/") else key
    if not _KEY.fullmatch(plain):
        raise SharedMemoryError(
            f"cannot register system shared memory region '{_shown(name)}': its key must be a POSIX shared "
            "memory object name such as '/my_region' (one optional leading '/', then up to 255 letters, digits, "
            "'.', '_' or '-', not starting with '.'); paths, '..' and other '/' are refused"
        )
    if plain.startswith(SERVER_KEY_PREFIXES):
        raise SharedMemoryError(
            f"cannot register system shared memory region '{_shown(name)}': its key starts with a prefix "
            f"reserved for the server's own shared memory ({', '.join(repr(p) for p in SERVER_KEY_PREFIXES)}); "
            "create your region under another name"
        )
    return plain


def _non_negative(value: int, field: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SharedMemoryError(
            f"system shared memory region '{_shown(name)}': '{field}' must be a non-negative integer"
        )
    return value


class SharedMemoryRegistry:
    """See the module docstring. The constructor only stores its limits; objects are opened by
    :meth:`register`. Use :meth:`close` at shutdown."""

    def __init__(self, *, max_regions: int, max_total_bytes: int) -> None:
        self._max_regions = max_regions
        self._max_total_bytes = max_total_bytes
        self._lock = threading.Lock()
        self._regions: dict[str, _Region] = {}
        self._held_bytes = 0  # of registered and of retired-but-leased regions: what is really held open

    # -- the control API --------------------------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register ``byte_size`` bytes of the POSIX shm object ``key`` from ``offset`` as region ``name``.
        Raises :class:`SharedMemoryError` (INVALID_ARGUMENT) for a bad name, key, window or limit, or a
        name already registered. Blocking (an open and an fstat: microseconds)."""
        _region_name(name)
        shown = _shown(name)
        _non_negative(offset, "offset", name)
        _non_negative(byte_size, "byte_size", name)
        plain = check_key(name, key)
        if byte_size == 0:
            raise SharedMemoryError(
                f"cannot register system shared memory region '{shown}': byte_size is 0; register the number of "
                "bytes the region holds"
            )
        with self._lock:
            self._check_room(name, 0)  # the name and the count, before anything is opened
        try:
            # O_NONBLOCK: a FIFO or device node planted under that name must not hang the open (then fstat
            # refuses it); it changes nothing for a regular file.
            flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(os.path.join(_SHM_DIR, plain), flags)
        except OSError as exc:
            # One message for "no such object" and "not allowed": which one would tell a client what exists.
            log.info("shared memory region %r: cannot open its object: %s", name[:64], exc.strerror)
            raise SharedMemoryError(
                f"cannot register system shared memory region '{shown}': no shared memory object with that key "
                "can be opened for reading and writing by the server; create it first (shm_open, or tritonclient's "
                "utils.shared_memory.create_shared_memory_region) as the user the server runs as"
            ) from None
        region = _Region(name, key, offset, byte_size, fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SharedMemoryError(
                    f"cannot register system shared memory region '{shown}': its key does not name a shared "
                    "memory object"
                )
            size = info.st_size
            # offset + byte_size <= size, written so that no sum can pass what it is compared with.
            if offset > size or byte_size > size - offset:
                raise SharedMemoryError(
                    f"cannot register system shared memory region '{shown}': offset {offset} + byte_size "
                    f"{byte_size} runs past the end of its shared memory object ({size} bytes); register a "
                    "window inside the object"
                )
            with self._lock:
                self._check_room(name, byte_size)  # again, and the bytes: another registration may have raced
                self._regions[name] = region
                self._held_bytes += byte_size
        except BaseException:
            region.close()
            raise

    def _check_room(self, name: str, byte_size: int) -> None:
        """Under the lock: the name is free and the limits leave room for ``byte_size`` more bytes."""
        shown = _shown(name)
        if name in self._regions:
            raise SharedMemoryError(
                f"shared memory region '{shown}' already in manager: a region of that name is registered; "
                "unregister it first or choose another name"
            )
        if len(self._regions) >= self._max_regions:
            raise SharedMemoryError(
                f"cannot register system shared memory region '{shown}': {len(self._regions)} regions are "
                f"registered, the most this server allows (shared_memory.max_regions); unregister one first"
            )
        if byte_size > self._max_total_bytes - self._held_bytes:
            raise SharedMemoryError(
                f"cannot register system shared memory region '{shown}': its {byte_size} bytes would take the "
                f"registered total past {self._max_total_bytes} bytes (shared_memory.max_total_bytes; "
                f"{self._held_bytes} registered now); unregister regions or register a smaller window"
            )

    def status(self, name: str = "") -> list[RegionStatus]:
        """Every region (``name`` empty), or the one named. Raises :class:`SharedMemoryError` with
        NOT_FOUND for a name that is not registered (Triton's answer)."""
        with self._lock:
            if not name:
                regions = list(self._regions.values())
            elif name in self._regions:
                regions = [self._regions[name]]
            else:
                raise SharedMemoryError(
                    f"Unable to find system shared memory region: '{_shown(name)}'; register it first "
                    "(POST /v2/systemsharedmemory/region/{name}/register)",
                    code=ErrorCode.NOT_FOUND,
                )
            return [RegionStatus(r.name, r.key, r.offset, r.byte_size) for r in regions]

    def unregister(self, name: str = "") -> None:
        """Unregister region ``name``, or every region when ``name`` is empty. A name that is not
        registered is no error (Triton's behaviour). A region in use by a request is closed when that
        request is done with it."""
        with self._lock:
            names = list(self._regions) if not name else [name] if name in self._regions else []
            for each in names:
                region = self._regions.pop(each)
                region.is_retired = True
                if region.users == 0:
                    self._close(region)

    def close(self) -> None:
        """Unregister every region (shutdown). Idempotent."""
        self.unregister()

    @property
    def held_bytes(self) -> int:
        """Bytes held now (registered regions, and unregistered ones a request still copies)."""
        with self._lock:
            return self._held_bytes

    def _close(self, region: _Region) -> None:
        """Under the lock, once no lease holds ``region``."""
        region.close()
        self._held_bytes -= region.byte_size

    # -- RegionAccess: what the codecs call -------------------------------------------------------

    @contextlib.contextmanager
    def _lease(self, ref: SharedMemoryRef, what: str) -> Iterator[tuple[int, int]]:
        """``(fd, position in the object)`` of ``ref``'s first byte; the descriptor stays open until the
        block ends."""
        with self._lock:
            region = self._window(ref, what)
            region.users += 1
        try:
            yield region.fd, region.offset + ref.offset
        finally:
            with self._lock:
                region.users -= 1
                if region.is_retired and region.users == 0:
                    self._close(region)

    def _window(self, ref: SharedMemoryRef, what: str) -> _Region:
        """Under the lock: the region ``ref`` names, once ``ref`` is checked to lie inside it."""
        region = self._regions.get(ref.region)
        shown = _shown(ref.region)
        if region is None:
            raise SharedMemoryError(
                f"{what}: shared memory region '{shown}' is not registered; register it first "
                "(POST /v2/systemsharedmemory/region/{name}/register, or the client's "
                "register_system_shared_memory) and name it exactly"
            )
        size = region.byte_size
        if ref.offset > size or ref.byte_size > size - ref.offset:
            raise SharedMemoryError(
                f"{what}: shared_memory_offset {ref.offset} + shared_memory_byte_size {ref.byte_size} runs past "
                f"the end of shared memory region '{shown}' ({size} bytes registered); use a window inside the "
                "region"
            )
        return region

    def check(self, ref: SharedMemoryRef, what: str) -> None:
        with self._lock:
            self._window(ref, what)

    def read(self, ref: SharedMemoryRef, what: str) -> bytes:
        with self._lease(ref, what) as (fd, position):
            parts: list[bytes] = []
            done = 0
            while done < ref.byte_size:  # one pread returns at most ~2 GiB on Linux
                part = os.pread(fd, ref.byte_size - done, position + done)
                if not part:
                    raise _shrunk(ref, what)
                parts.append(part)
                done += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, ref: SharedMemoryRef, data: bytes | memoryview, what: str) -> None:
        if len(data) > ref.byte_size:
            raise SharedMemoryError(
                f"{what}: the output is {len(data)} bytes but shared_memory_byte_size is {ref.byte_size}; give "
                f"the output a window of at least {len(data)} bytes in region '{_shown(ref.region)}'"
            )
        with self._lease(ref, what) as (fd, position):
            if os.fstat(fd).st_size - position < len(data):  # never grow the client's object
                raise _shrunk(ref, what)
            view = memoryview(data).cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], position + done)


def _shrunk(ref: SharedMemoryRef, what: str) -> SharedMemoryError:
    return SharedMemoryError(
        f"{what}: shared memory region '{_shown(ref.region)}' is shorter than when it was registered (its object "
        "was truncated); unregister it and register it again with its new size"
    )
