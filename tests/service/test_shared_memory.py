"""The system shared-memory registry (``service/shared_memory.py``) on real POSIX shared memory: what it opens,
what it refuses (CVE-2024-0088's offset arithmetic, CVE-2025-23319's server-owned keys, paths and links),
its limits, a client shrinking its object under it, and that nothing stays open after unregister or
close."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory

import pytest

from modelserve.core.errors import ErrorCode
from modelserve.core.shared_memory import SERVER_KEY_PREFIXES, SharedMemoryRef
from modelserve.service.shared_memory import SharedMemoryError, SharedMemoryRegistry

SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared memory


def descriptors(key: str) -> int:
    """How many descriptors this process has open on the shm object ``key``."""
    target = f"{SHM_DIR}/{key.lstrip('/')}"
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return held


# What the test's own handles hold open on each object (multiprocessing's SharedMemory holds two).
BASELINE: dict[str, int] = {}


def mapped(key: str) -> bool:
    """Whether the registry holds the shm object ``key`` open now."""
    return descriptors(key) > BASELINE[key.lstrip("/")]


@pytest.fixture
def objects() -> Iterator[list[shared_memory.SharedMemory]]:
    made: list[shared_memory.SharedMemory] = []
    yield made
    for obj in made:
        obj.close()
        obj.unlink()


@pytest.fixture
def make(objects: list[shared_memory.SharedMemory]):  # type: ignore[no-untyped-def]
    def create(size: int = 4096) -> tuple[str, shared_memory.SharedMemory]:
        key = f"mstest_{uuid.uuid4().hex}"
        obj = shared_memory.SharedMemory(key, create=True, size=size)
        objects.append(obj)
        BASELINE[key] = descriptors(key)
        return "/" + key, obj

    return create


def registry(max_regions: int = 8, max_total_bytes: int = 1 << 20) -> SharedMemoryRegistry:
    return SharedMemoryRegistry(max_regions=max_regions, max_total_bytes=max_total_bytes)


def assert_hygienic(error: SharedMemoryError, *secrets: str) -> None:
    assert SHM_DIR not in error.message
    for secret in secrets:
        assert secret.lstrip("/") not in error.message


def test_register_read_write_status_and_unregister(make) -> None:  # type: ignore[no-untyped-def]
    key, obj = make(8192)
    obj.buf[100:104] = b"abcd"
    regions = registry()
    regions.register("in", key, 100, 4000)  # an offset that is not page-aligned
    assert mapped(key)
    assert regions.read(SharedMemoryRef("in", 0, 4), "input 'x'") == b"abcd"
    regions.write(SharedMemoryRef("in", 10, 3), b"xyz", "output 'y'")
    assert bytes(obj.buf[110:113]) == b"xyz"
    (status,) = regions.status()
    assert (status.name, status.key, status.offset, status.byte_size) == ("in", key, 100, 4000)
    assert regions.status("in") == [status]
    regions.unregister("in")
    assert not mapped(key) and regions.status() == [] and regions.held_bytes == 0
    regions.unregister("in")  # not registered: no error, as in Triton


@pytest.mark.parametrize(
    ("offset", "byte_size"),
    [(0, 4097), (4096, 1), (4097, 0 + 1), (2**64 - 1, 1), (1, 2**64 - 1), (2**64 - 1, 2**64 - 1), (0, 2**200)],
)
def test_a_window_past_the_objects_end_is_refused(make, offset: int, byte_size: int) -> None:  # type: ignore[no-untyped-def]
    key, _ = make(4096)
    regions = registry(max_total_bytes=2**300)
    with pytest.raises(SharedMemoryError) as caught:
        regions.register("r", key, offset, byte_size)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "region 'r'" in caught.value.message and "runs past the end" in caught.value.message
    assert_hygienic(caught.value, key)
    assert not mapped(key)
    regions.register("r", key, 0, 4096)  # the next good registration works


def test_every_use_is_checked_against_the_region(make) -> None:  # type: ignore[no-untyped-def]
    key, _ = make(4096)
    regions = registry()
    regions.register("r", key, 0, 1024)
    for offset, size in [(1024, 1), (1, 1024), (2**64 - 1, 2), (2, 2**64 - 1), (2**63, 2**63)]:
        for use in (
            lambda: regions.read(SharedMemoryRef("r", offset, size), "input 'a'"),
            lambda: regions.check(SharedMemoryRef("r", offset, size), "output 'b'"),
            lambda: regions.write(SharedMemoryRef("r", offset, size), b"x", "output 'b'"),
        ):
            with pytest.raises(SharedMemoryError, match="runs past the end of shared memory region 'r'"):
                use()
    with pytest.raises(SharedMemoryError, match="region 'nope' is not registered; register it first"):
        regions.read(SharedMemoryRef("nope", 0, 1), "input 'a'")
    with pytest.raises(SharedMemoryError, match="the output is 5 bytes but shared_memory_byte_size is 4"):
        regions.write(SharedMemoryRef("r", 0, 4), b"12345", "output 'b'")
    assert regions.read(SharedMemoryRef("r", 1020, 4), "input 'a'") == b"\0" * 4


@pytest.mark.parametrize("prefix", SERVER_KEY_PREFIXES)
def test_the_servers_own_keys_are_refused_even_when_they_exist(make, objects, prefix: str) -> None:  # type: ignore[no-untyped-def]
    key = f"{prefix}mstest_{uuid.uuid4().hex}"
    objects.append(shared_memory.SharedMemory(key, create=True, size=4096))
    BASELINE[key] = descriptors(key)
    regions = registry()
    for spelling in (key, "/" + key):
        with pytest.raises(SharedMemoryError, match="reserved for the server's own shared memory") as caught:
            regions.register("mine", spelling, 0, 16)
        assert_hygienic(caught.value, key.removeprefix(prefix))
    assert not mapped(key) and regions.status() == []


@pytest.mark.parametrize(
    "key",
    ["", "/", "//x", "../etc/passwd", "/../x", "..", ".", "/.hidden", "a/b", "/dev/shm/x", "a\0b", "x" * 256, "é"],
)
def test_keys_that_are_not_plain_shm_names_are_refused(key: str) -> None:
    with pytest.raises(SharedMemoryError, match="its key must be a POSIX shared memory object name") as caught:
        registry().register("r", key, 0, 16)
    assert_hygienic(caught.value)


def test_a_link_planted_in_dev_shm_is_not_followed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "secret"
    target.write_bytes(b"s" * 4096)
    name = f"mstest_{uuid.uuid4().hex}"
    os.symlink(target, f"{SHM_DIR}/{name}")
    try:
        with pytest.raises(SharedMemoryError, match="no shared memory object with that key can be opened") as caught:
            registry().register("r", "/" + name, 0, 16)
        assert_hygienic(caught.value, name, str(tmp_path))
    finally:
        os.unlink(f"{SHM_DIR}/{name}")


def test_an_unknown_key_is_refused_without_echoing_it() -> None:
    key = f"/mstest_missing_{uuid.uuid4().hex}"
    with pytest.raises(SharedMemoryError, match="create it first") as caught:
        registry().register("r", key, 0, 16)
    assert_hygienic(caught.value, key)


def test_a_duplicate_name_is_refused_and_the_first_region_kept(make) -> None:  # type: ignore[no-untyped-def]
    key, obj = make()
    other, _ = make()
    obj.buf[0] = 7
    regions = registry()
    regions.register("r", key, 0, 16)
    with pytest.raises(SharedMemoryError, match="'r' already in manager"):
        regions.register("r", other, 0, 16)
    assert regions.read(SharedMemoryRef("r", 0, 1), "input 'a'") == b"\x07"
    assert not mapped(other)


def test_the_count_and_the_bytes_are_bounded(make) -> None:  # type: ignore[no-untyped-def]
    regions = registry(max_regions=2, max_total_bytes=6000)
    first, _ = make()
    regions.register("a", first, 0, 4096)
    second, _ = make()
    with pytest.raises(SharedMemoryError, match=r"shared_memory\.max_total_bytes"):
        regions.register("b", second, 0, 4096)
    assert not mapped(second)
    regions.register("b", second, 0, 1000)
    third, _ = make()
    with pytest.raises(SharedMemoryError, match=r"2 regions are registered.*shared_memory.max_regions"):
        regions.register("c", third, 0, 16)
    regions.unregister("a")
    regions.register("c", third, 0, 16)
    assert {s.name for s in regions.status()} == {"b", "c"}


def test_zero_bytes_and_negative_numbers_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    key, _ = make()
    regions = registry()
    with pytest.raises(SharedMemoryError, match="byte_size is 0"):
        regions.register("r", key, 0, 0)
    with pytest.raises(SharedMemoryError, match="'offset' must be a non-negative integer"):
        regions.register("r", key, -1, 16)
    with pytest.raises(SharedMemoryError, match="needs a name"):
        regions.register("", key, 0, 16)


def test_status_of_an_unknown_region_is_not_found() -> None:
    with pytest.raises(SharedMemoryError) as caught:
        registry().status("ghost")
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert "Unable to find system shared memory region: 'ghost'" in caught.value.message


class _UnregistersWhileCopied(bytearray):
    """Data whose length, asked for during the copy into the region, unregisters that region: an
    unregister racing a request, at the one moment the request holds the mapping."""

    def __init__(self, data: bytes, regions: SharedMemoryRegistry) -> None:
        super().__init__(data)
        self.regions = regions
        self.calls = 0

    def __len__(self) -> int:
        self.calls += 1
        if self.calls == 2:  # the first is the size check, the second the copy's
            self.regions.unregister()
        return super().__len__()


def test_an_unregister_during_a_copy_waits_for_it_to_end(make) -> None:  # type: ignore[no-untyped-def]
    key, obj = make()
    regions = registry()
    regions.register("r", key, 0, 4096)
    regions.write(SharedMemoryRef("r", 0, 4), _UnregistersWhileCopied(b"done", regions), "output 'o'")
    assert bytes(obj.buf[:4]) == b"done"
    assert regions.status() == [] and not mapped(key) and regions.held_bytes == 0


def test_close_unmaps_every_region(make) -> None:  # type: ignore[no-untyped-def]
    keys = [make()[0] for _ in range(3)]
    regions = registry()
    for index, key in enumerate(keys):
        regions.register(f"r{index}", key, 0, 4096)
    assert all(mapped(key) for key in keys)
    regions.close()
    regions.close()
    assert not any(mapped(key) for key in keys) and regions.held_bytes == 0


def test_an_object_the_client_shrinks_is_refused_not_read_past_its_end(make) -> None:  # type: ignore[no-untyped-def]
    key, obj = make(8192)
    regions = registry()
    regions.register("r", key, 0, 8192)
    os.ftruncate(obj._fd, 4096)  # what a client can do to its own object at any time
    for use in (
        lambda: regions.read(SharedMemoryRef("r", 4000, 200), "input 'a'"),
        lambda: regions.write(SharedMemoryRef("r", 4000, 200), b"x" * 200, "output 'b'"),
    ):
        with pytest.raises(SharedMemoryError, match="region 'r' is shorter than when it was registered"):
            use()
    assert os.fstat(obj._fd).st_size == 4096  # a write never grows the client's object
    assert regions.read(SharedMemoryRef("r", 0, 4), "input 'a'") == b"\0" * 4


def test_a_fifo_planted_in_dev_shm_is_refused_without_blocking() -> None:
    name = f"mstest_{uuid.uuid4().hex}"
    os.mkfifo(f"{SHM_DIR}/{name}")
    try:
        with pytest.raises(SharedMemoryError, match="its key does not name a shared memory object"):
            registry().register("r", "/" + name, 0, 16)
    finally:
        os.unlink(f"{SHM_DIR}/{name}")
