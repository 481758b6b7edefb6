"""Triton's system shared memory extension through the real server, with tritonclient HTTP and gRPC and
``tritonclient.utils.shared_memory``: register -> infer with inputs and outputs in regions -> status ->
unregister, BYTES tensors in regions, and every refusal a client can cause (each answered 400 /
INVALID_ARGUMENT naming the problem, the next good request still served, no key or path echoed)."""

from __future__ import annotations

import os
import queue
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor, serialized_byte_size

from tests.server_process import ServerProcess, running_server
from tests.triton_repository import triton_example_repository
from tests.waiting import wait_until

MODULES = pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
MAX_REGIONS = 6
BYTES_16 = 16 * 4  # 16 INT32


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("shm")
    root = triton_example_repository(folder / "models")
    config = folder / "modelserve.yaml"
    config.write_text(f"shared_memory:\n  max_regions: {MAX_REGIONS}\n")
    with running_server(root, config=config) as server:
        yield server


@pytest.fixture
def regions() -> Iterator[Callable[[int], tuple[str, Any]]]:
    """Creates uniquely named POSIX shm objects (key, handle) and destroys them after the test."""
    handles: list[Any] = []

    def create(size: int) -> tuple[str, Any]:
        key = f"/mstest_{uuid.uuid4().hex[:16]}"
        handle = shm.create_shared_memory_region(key.strip("/"), key, size)
        handles.append(handle)
        return key, handle

    yield create
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def client_for(module: ModuleType, server: ServerProcess) -> Any:
    client = module.InferenceServerClient(server.http_address if module is httpclient else server.grpc_address)
    client.unregister_system_shared_memory()  # each test starts with none
    return client


def holds(pid: int, key: str) -> bool:
    """Whether process ``pid`` has the shm object ``key`` open (a registered region holds a descriptor)."""
    target = "/dev/shm/" + key.lstrip("/")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def server_maps(server: ServerProcess, key: str) -> bool:
    assert server.process is not None
    return holds(server.process.pid, key)


def statuses(module: ModuleType, client: Any) -> dict[str, dict[str, Any]]:
    if module is httpclient:
        return {r["name"]: r for r in client.get_system_shared_memory_status()}
    # Read from the message itself: its JSON form leaves out fields that are 0 (an offset of 0).
    regions = client.get_system_shared_memory_status().regions
    return {
        name: {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
        for name, r in regions.items()
    }


def refusal(module: ModuleType, call: Callable[[], Any]) -> str:
    """The message of the 400 / INVALID_ARGUMENT that ``call`` must get."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == ("400" if module is httpclient else "StatusCode.INVALID_ARGUMENT")
    message = str(caught.value.message())
    assert "/dev/shm" not in message
    return message


def simple_inputs(module: ModuleType, region: str, offsets: tuple[int, int] = (0, BYTES_16)) -> list[Any]:
    inputs = [module.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor, offset in zip(inputs, offsets, strict=True):
        tensor.set_shared_memory(region, BYTES_16, offset=offset)
    return inputs


def assert_plain_infer_works(module: ModuleType, client: Any) -> None:
    inputs = [module.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.full((1, 16), 3, dtype=np.int32))
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 6, dtype=np.int32))


@MODULES
def test_simple_with_inputs_and_outputs_in_shared_memory(
    triton_server: ServerProcess, module: ModuleType, regions: Any
) -> None:
    client = client_for(module, triton_server)
    first = np.arange(16, dtype=np.int32).reshape(1, 16)
    second = np.full((1, 16), 5, dtype=np.int32)
    in_key, in_handle = regions(2 * BYTES_16)
    out_key, out_handle = regions(2 * BYTES_16 + 100)
    shm.set_shared_memory_region(in_handle, [first])
    shm.set_shared_memory_region(in_handle, [second], offset=BYTES_16)
    client.register_system_shared_memory("input_data", in_key, 2 * BYTES_16)
    client.register_system_shared_memory("output_data", out_key, 2 * BYTES_16, offset=100)
    assert server_maps(triton_server, in_key) and server_maps(triton_server, out_key)

    outputs = [module.InferRequestedOutput(name) for name in ("OUTPUT0", "OUTPUT1")]
    outputs[0].set_shared_memory("output_data", BYTES_16)
    outputs[1].set_shared_memory("output_data", BYTES_16, offset=BYTES_16)
    result = client.infer("simple", simple_inputs(module, "input_data"), outputs=outputs)

    total = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=100)
    difference = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=100 + BYTES_16)
    np.testing.assert_array_equal(total, first + second)
    np.testing.assert_array_equal(difference, first - second)
    output1 = result.get_output("OUTPUT1")
    if module is httpclient:
        assert "data" not in output1 and output1["shape"] == [1, 16]
        assert output1["parameters"] == {
            "shared_memory_region": "output_data",
            "shared_memory_byte_size": BYTES_16,
            "shared_memory_offset": BYTES_16,
        }
    else:
        assert output1.parameters["shared_memory_region"].string_param == "output_data"
        assert output1.parameters["shared_memory_byte_size"].int64_param == BYTES_16
        assert list(output1.shape) == [1, 16]

    assert statuses(module, client) == {
        "input_data": {"name": "input_data", "key": in_key, "offset": 0, "byte_size": 2 * BYTES_16},
        "output_data": {"name": "output_data", "key": out_key, "offset": 100, "byte_size": 2 * BYTES_16},
    }
    client.unregister_system_shared_memory("input_data")
    assert set(statuses(module, client)) == {"output_data"} and not server_maps(triton_server, in_key)
    client.unregister_system_shared_memory()
    assert statuses(module, client) == {} and not server_maps(triton_server, out_key)


@MODULES
def test_simple_string_with_bytes_tensors_in_shared_memory(
    triton_server: ServerProcess, module: ModuleType, regions: Any
) -> None:
    client = client_for(module, triton_server)
    first = np.array([str(i).encode() for i in range(16)], dtype=object).reshape(1, 16)
    second = np.array([b"1"] * 16, dtype=object).reshape(1, 16)
    expected_sum = np.array([str(i + 1).encode() for i in range(16)], dtype=object).reshape(1, 16)
    names = ("INPUT0", "INPUT1")
    inputs = []
    for name, data in zip(names, (first, second), strict=True):
        serialized = serialize_byte_tensor(data)
        size = serialized_byte_size(serialized)
        key, handle = regions(size)
        shm.set_shared_memory_region(handle, [serialized])
        client.register_system_shared_memory(name.lower(), key, size)
        tensor = module.InferInput(name, [1, 16], "BYTES")
        tensor.set_shared_memory(name.lower(), size)
        inputs.append(tensor)
    out_size = serialized_byte_size(serialize_byte_tensor(expected_sum))
    out_key, out_handle = regions(out_size)
    client.register_system_shared_memory("sum", out_key, out_size)
    output = module.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("sum", out_size)
    result = client.infer("simple_string", inputs, outputs=[output])
    assert result.get_output("OUTPUT0") is not None
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.object_, [1, 16]), expected_sum)


@MODULES
def test_bad_regions_are_refused_by_name_and_the_next_request_works(
    triton_server: ServerProcess, module: ModuleType, regions: Any
) -> None:
    client = client_for(module, triton_server)
    key, handle = regions(2 * BYTES_16)
    shm.set_shared_memory_region(handle, [np.ones((1, 16), np.int32), np.ones((1, 16), np.int32)])
    # Registration: past the object's end, sizes that overflow 64 bits, a name taken.
    message = refusal(module, lambda: client.register_system_shared_memory("far", key, 16, offset=2 * BYTES_16))
    assert "region 'far'" in message and "runs past the end" in message and key.strip("/") not in message
    message = refusal(module, lambda: client.register_system_shared_memory("huge", key, 2**64 - 1, offset=1))
    assert "region 'huge'" in message and "runs past the end" in message
    client.register_system_shared_memory("good", key, 2 * BYTES_16)
    message = refusal(module, lambda: client.register_system_shared_memory("good", key, 16))
    assert "'good' already in manager" in message
    # Use: an unknown region, a window past the region, a byte size that is not the shape's.
    message = refusal(module, lambda: client.infer("simple", simple_inputs(module, "nowhere")))
    assert "input 'INPUT0'" in message and "'nowhere' is not registered; register it first" in message
    message = refusal(module, lambda: client.infer("simple", simple_inputs(module, "good", (0, 2 * BYTES_16 - 4))))
    assert "input 'INPUT1'" in message and "runs past the end of shared memory region 'good'" in message
    wrong = simple_inputs(module, "good")
    wrong[0].set_shared_memory("good", BYTES_16 - 4)
    message = refusal(module, lambda: client.infer("simple", wrong))
    assert "shared_memory_byte_size is 60 but shape of 16 INT32 elements needs 64 bytes" in message
    output = module.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("good", 8)
    message = refusal(module, lambda: client.infer("simple", simple_inputs(module, "good"), outputs=[output]))
    assert "output 'OUTPUT0'" in message and "the output is 64 bytes but shared_memory_byte_size is 8" in message
    assert set(statuses(module, client)) == {"good"}
    assert_plain_infer_works(module, client)
    result = client.infer("simple", simple_inputs(module, "good"))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2, dtype=np.int32))


def test_an_offset_and_size_past_64_bits_in_an_infer_request_is_refused(
    triton_server: ServerProcess, regions: Any
) -> None:
    client = client_for(httpclient, triton_server)
    key, _ = regions(BYTES_16)
    client.register_system_shared_memory("r", key, BYTES_16)
    tensor = {
        "name": "INPUT0",
        "shape": [1, 16],
        "datatype": "BYTES",
        "parameters": {"shared_memory_region": "r", "shared_memory_offset": 2**64 - 1, "shared_memory_byte_size": 64},
    }
    other = {"name": "INPUT1", "shape": [1, 16], "datatype": "BYTES", "data": ["1"] * 16}
    response = httpx.post(
        f"{triton_server.http_url}/v2/models/simple_string/infer", json={"inputs": [tensor, other]}, timeout=10
    )
    assert response.status_code == 400
    assert "runs past the end of shared memory region 'r'" in response.json()["error"]
    assert_plain_infer_works(httpclient, client)


@MODULES
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("/modelserve_worker_0", "reserved for the server's own shared memory"),
        ("triton_python_backend_shm_region_1", "reserved for the server's own shared memory"),
        ("/psm_0a1b2c", "reserved for the server's own shared memory"),
        ("../../etc/passwd", "must be a POSIX shared memory object name"),
        ("/dev/shm/x", "must be a POSIX shared memory object name"),
        ("/mstest_does_not_exist_here", "create it first"),
    ],
)
def test_keys_the_server_owns_paths_and_unknown_keys_are_refused(
    triton_server: ServerProcess, module: ModuleType, key: str, expected: str
) -> None:
    client = client_for(module, triton_server)
    message = refusal(module, lambda: client.register_system_shared_memory("mine", key, 64))
    assert "region 'mine'" in message and expected in message
    assert key.strip("/").split("/")[-1] not in message
    assert statuses(module, client) == {}
    assert_plain_infer_works(module, client)


@MODULES
def test_registrations_are_bounded_in_count(triton_server: ServerProcess, module: ModuleType, regions: Any) -> None:
    client = client_for(module, triton_server)
    key, _ = regions(4096)
    for index in range(MAX_REGIONS):
        client.register_system_shared_memory(f"r{index}", key, 64, offset=64 * index)
    message = refusal(module, lambda: client.register_system_shared_memory("one-more", key, 64))
    assert f"{MAX_REGIONS} regions are registered" in message and "shared_memory.max_regions" in message
    client.unregister_system_shared_memory("r0")
    client.register_system_shared_memory("one-more", key, 64)
    client.unregister_system_shared_memory()
    assert not server_maps(triton_server, key)


@MODULES
def test_metadata_advertises_the_extension_and_cuda_is_refused_by_name(
    triton_server: ServerProcess, module: ModuleType
) -> None:
    client = client_for(module, triton_server)
    metadata = client.get_server_metadata()
    extensions = metadata["extensions"] if module is httpclient else list(metadata.extensions)
    assert "system_shared_memory" in extensions and "cuda_shared_memory" not in extensions
    client.unregister_cuda_shared_memory()  # what Triton's examples do first: there is nothing to unregister
    with pytest.raises(InferenceServerException) as caught:
        client.register_cuda_shared_memory("gpu", b"aGFuZGxl", 0, 64)
    assert caught.value.status() == ("501" if module is httpclient else "StatusCode.UNIMPLEMENTED")
    assert "CUDA shared memory" in str(caught.value.message()) and "no GPU support" in str(caught.value.message())


def test_with_the_extension_off_it_is_unsupported_and_not_advertised(tmp_path: Path) -> None:
    root = triton_example_repository(tmp_path / "models")
    config = tmp_path / "modelserve.yaml"
    config.write_text("shared_memory:\n  enabled: false\n")
    with running_server(root, config=config) as server:
        http = httpclient.InferenceServerClient(server.http_address)
        grpc = grpcclient.InferenceServerClient(server.grpc_address)
        assert "system_shared_memory" not in http.get_server_metadata()["extensions"]
        assert "system_shared_memory" not in grpc.get_server_metadata().extensions
        response = httpx.get(f"{server.http_url}/v2/systemsharedmemory/status", timeout=10)
        assert response.status_code == 501
        assert response.json() == {"error": "the 'systemsharedmemory' extension is not supported by this server"}
        with pytest.raises(InferenceServerException) as caught:
            grpc.register_system_shared_memory("r", "/r", 64)
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "shared_memory.enabled" in str(caught.value.message())
        inputs = simple_inputs(httpclient, "r")
        with pytest.raises(InferenceServerException) as caught:
            http.infer("simple", inputs)
        assert caught.value.status() == "501" and "system shared memory is disabled" in str(caught.value.message())
        assert_plain_infer_works(grpcclient, grpc)


def test_with_several_workers_a_registration_reaches_every_worker(tmp_path: Path, regions: Any) -> None:
    root = triton_example_repository(tmp_path / "models")
    with running_server(root, ["--workers", "2"]) as server:
        assert server.process is not None
        supervisor = psutil.Process(server.process.pid)

        def workers() -> list[psutil.Process]:
            return [c for c in supervisor.children() if "spawn_main" in " ".join(c.cmdline())]

        def listening(worker: psutil.Process) -> bool:
            ports = {c.laddr.port for c in worker.net_connections(kind="tcp") if c.status == "LISTEN"}
            return {server.http_port, server.grpc_port} <= ports

        wait_until(lambda: len(workers()) == 2 and all(listening(w) for w in workers()), timeout_s=60, what="2 workers")
        key, handle = regions(2 * BYTES_16)
        shm.set_shared_memory_region(handle, [np.ones((1, 16), np.int32), np.full((1, 16), 2, np.int32)])
        httpclient.InferenceServerClient(server.http_address).register_system_shared_memory("in", key, 2 * BYTES_16)
        assert all(holds(worker.pid, key) for worker in workers())
        for _ in range(12):  # a new connection each: the kernel spreads them over both workers
            client = httpclient.InferenceServerClient(server.http_address)
            result = client.infer("simple", simple_inputs(httpclient, "in"))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 3, np.int32))
            client.close()
        grpcclient.InferenceServerClient(server.grpc_address).unregister_system_shared_memory("in")
        assert not any(holds(worker.pid, key) for worker in workers())


def test_rest_shapes_methods_and_cuda_answers(triton_server: ServerProcess) -> None:
    url = triton_server.http_url
    with httpx.Client(base_url=url, timeout=10) as http:
        response = http.post("/v2/systemsharedmemory/status")
        assert (response.status_code, response.headers["allow"]) == (405, "GET")
        response = http.get("/v2/systemsharedmemory/region/r/register")
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        response = http.get("/v2/systemsharedmemory/regions")
        assert response.status_code == 501 and "POST /v2/systemsharedmemory/region/{name}/register" in response.text
        response = http.post("/v2/systemsharedmemory/region/r/register", json={"offset": 0, "byte_size": 64})
        assert (response.status_code, response.json()) == (
            400,
            {"error": "Shared memory register request has no 'key' field"},
        )
        response = http.get("/v2/systemsharedmemory/region/ghost/status")
        assert response.status_code == 404 and "Unable to find system shared memory region: 'ghost'" in response.text
        assert http.post("/v2/systemsharedmemory/region/ghost/unregister").status_code == 200  # as in Triton
        assert http.get("/v2/cudasharedmemory/status").json() == []
        assert http.post("/v2/cudasharedmemory/unregister").status_code == 200
        response = http.post("/v2/cudasharedmemory/region/g/register", json={"byte_size": 64})
        assert response.status_code == 501 and "no GPU support" in response.json()["error"]


@MODULES
def test_a_region_whose_object_the_client_shrinks_is_refused_and_the_server_lives(
    triton_server: ServerProcess, module: ModuleType, regions: Any
) -> None:
    client = client_for(module, triton_server)
    key, _ = regions(8192)
    client.register_system_shared_memory("big", key, 8192)
    fd = os.open("/dev/shm/" + key.lstrip("/"), os.O_RDWR)
    try:
        os.ftruncate(fd, 64)  # a mapping of the region would now raise SIGBUS past the first page
    finally:
        os.close(fd)
    message = refusal(module, lambda: client.infer("simple", simple_inputs(module, "big", (4096, 4096 + BYTES_16))))
    assert "region 'big' is shorter than when it was registered" in message
    assert_plain_infer_works(module, client)


def test_a_grpc_stream_reads_and_writes_regions_too(triton_server: ServerProcess, regions: Any) -> None:
    client = client_for(grpcclient, triton_server)
    in_key, in_handle = regions(2 * BYTES_16)
    out_key, out_handle = regions(BYTES_16)
    shm.set_shared_memory_region(in_handle, [np.full((1, 16), 4, np.int32), np.full((1, 16), 1, np.int32)])
    client.register_system_shared_memory("in", in_key, 2 * BYTES_16)
    client.register_system_shared_memory("out", out_key, BYTES_16)
    output = grpcclient.InferRequestedOutput("OUTPUT1")
    output.set_shared_memory("out", BYTES_16)
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("simple", simple_inputs(grpcclient, "in"), outputs=[output])
        result, error = answers.get(timeout=10)
    finally:
        client.stop_stream()
    assert error is None and result.get_output("OUTPUT1") is not None
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16]), np.full((1, 16), 3))
