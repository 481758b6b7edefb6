"""Triton's model-control and classification flows through the real server, with tritonclient HTTP and gRPC:
a load with a config override (the repository load API's ``config``), and classification labels
(``label_filename``) returned as ``value:index:label``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_process import ServerProcess, running_server
from tests.triton_repository import triton_example_repository

LABELS = [f"class-{index}" for index in range(15)]  # index 15 has no label: answered as value:index


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = triton_example_repository(tmp_path_factory.mktemp("triton-repo"))
    config = root / "simple" / "config.pbtxt"
    text = config.read_text().replace(
        '{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] }',
        '{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] label_filename: "simple_labels.txt" }',
    )
    config.write_text(text)
    (root / "simple" / "simple_labels.txt").write_text("\n".join(LABELS) + "\n")
    with running_server(root, ["--model-control-mode", "explicit", "--load-model", "simple"]) as server:
        yield server


def _client(module: ModuleType, server: ServerProcess) -> Any:
    url = server.http_address if module is httpclient else server.grpc_address
    return module.InferenceServerClient(url)


def _max_batch_size(module: ModuleType, client: Any) -> int:
    config = client.get_model_config("simple")
    return int(config["max_batch_size"]) if module is httpclient else int(config.config.max_batch_size)


def _simple_inputs(module: ModuleType, rows: int = 1) -> list[Any]:
    first = np.tile(np.arange(16, dtype=np.int32), (rows, 1))
    second = np.ones((rows, 16), dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [rows, 16], "INT32"), module.InferInput("INPUT1", [rows, 16], "INT32")]
    inputs[0].set_data_from_numpy(first)
    inputs[1].set_data_from_numpy(second)
    return inputs


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_classification_names_each_class_from_the_label_file(triton_server: ServerProcess, module: ModuleType) -> None:
    client = _client(module, triton_server)
    outputs = [module.InferRequestedOutput("OUTPUT0", class_count=3)]
    result = client.infer("simple", _simple_inputs(module, rows=2), outputs=outputs)
    top = [[item.decode() for item in row] for row in result.as_numpy("OUTPUT0")]
    # OUTPUT0 = arange(16) + 1: the largest is index 15 (no label), then 14 and 13 (labelled).
    assert top == [["16:15", "15:14:class-14", "14:13:class-13"]] * 2


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_load_with_a_config_override_is_used_for_that_load(triton_server: ServerProcess, module: ModuleType) -> None:
    client = _client(module, triton_server)
    try:
        client.load_model("simple", config='{"max_batch_size": "16"}')
        assert client.is_model_ready("simple")
        assert _max_batch_size(module, client) == 16
        # The override's batch bound is the one served: 12 rows pass (the folder's config allows 8).
        result = client.infer("simple", _simple_inputs(module, rows=12))
        assert result.as_numpy("OUTPUT1").shape == (12, 16)
    finally:
        client.load_model("simple")  # a load without config reads config.pbtxt again
    assert _max_batch_size(module, client) == 8


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ('"parameters": {"config": {{"max_batch_size": "16"}}}', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"max_batch_size": "many"}', "max_batch_size"),
        ('{"no_such_field": 1}', "no_such_field"),
        ('{"name": "other"}', "names the model 'other'"),
        ('{"max_batch_size": -1}', "max_batch_size must be >= 0"),
        ("[" * 5000 + "]" * 5000, "nests too deeply"),
    ],
    ids=["not-json", "not-object", "wrong-type", "unknown-field", "other-name", "negative-batch", "deep"],
)
def test_a_bad_config_override_is_refused_and_the_model_keeps_serving(
    triton_server: ServerProcess, module: ModuleType, config: str, expected: str
) -> None:
    client = _client(module, triton_server)
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("simple", config=config)
    assert "failed to load" in raised.value.message()
    assert expected in raised.value.message()
    status = str(raised.value.status())
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), status
    assert client.is_model_ready("simple")
    assert client.infer("simple", _simple_inputs(module)).as_numpy("OUTPUT0")[0, 0] == 1


def test_file_parameters_stay_refused_with_the_reason(triton_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_address)
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("simple", config="{}", files={"file:1/model.onnx": b"not a model"})
    assert "place the files in the model repository" in raised.value.message()
    assert "repository.allow_load_files" in raised.value.message()
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_model_ready("simple")


def test_label_file_outside_the_model_folder_fails_the_load(tmp_path: Path) -> None:
    root = triton_example_repository(tmp_path / "repo")
    (tmp_path / "outside.txt").write_text("a\nb\n")
    config = root / "simple" / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            '{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }',
            '{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] label_filename: "../../outside.txt" }',
        )
    )
    with running_server(root, ["--model-control-mode", "explicit"]) as server:
        client = httpclient.InferenceServerClient(server.http_address)
        with pytest.raises(InferenceServerException) as raised:
            client.load_model("simple")
        message = raised.value.message()
        assert "output 'OUTPUT1'" in message and "inside the model folder" in message
        assert str(tmp_path) not in message


# -- model files inside the load request (repository.allow_load_files) ----------------------------------

UPLOADED_CONFIG = '{"backend": "onnxruntime", "max_batch_size": 8}'


@pytest.fixture(scope="module")
def uploads_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = triton_example_repository(tmp_path_factory.mktemp("upload-repo"))
    settings = tmp_path_factory.mktemp("upload-settings") / "modelserve.yaml"
    settings.write_text("repository:\n  allow_load_files: true\n  control_mode: explicit\n")
    with running_server(root, [], config=settings) as server:
        yield server


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_a_model_sent_inside_the_load_request_serves_until_unloaded(
    uploads_server: ServerProcess, module: ModuleType
) -> None:
    onnx_bytes = (uploads_server.repository / "simple" / "1" / "model.onnx").read_bytes()
    client = _client(module, uploads_server)
    name = f"uploaded_{module.__name__.split('.')[-1]}"  # a model the repository does not have
    client.load_model(name, config=UPLOADED_CONFIG, files={"file:3/model.onnx": onnx_bytes})
    assert client.is_model_ready(name)
    result = client.infer(name, _simple_inputs(module, rows=2), model_version="3")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0")[0], np.arange(16) + 1)
    staged = list(Path(tempfile.gettempdir()).glob(f"modelserve-uploads-*/upload-*/{name}/3/model.onnx"))
    assert len(staged) == 1 and staged[0].stat().st_mode & 0o077 == 0
    client.unload_model(name)
    assert not client.is_model_ready(name)
    assert not staged[0].exists(), "the staged files outlived the unload"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"file:../escape/model.onnx": b"x"}, "'..' component"),
        ({"file:v1/model.onnx": b"x"}, "must start with a version folder number"),
        ({"file:1/../../escape": b"x"}, "'..' component"),
        ({"file:1/" + "A" * 256: b"x"}, "longer than 255 bytes"),
        ({"file:model.onnx": b"x"}, "must name '<version>/<file>'"),
        ({"file:1/a\\b": b"x"}, "backslash"),
    ],
    ids=["dot-dot-first", "not-a-version", "dot-dot-later", "name-too-long", "no-version", "backslash"],
)
def test_a_file_name_that_could_leave_the_model_folder_is_refused(
    uploads_server: ServerProcess, files: dict[str, bytes], expected: str
) -> None:
    client = grpcclient.InferenceServerClient(uploads_server.grpc_address)
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("escapee", config=UPLOADED_CONFIG, files=files)
    assert expected in raised.value.message() and "failed to load 'escapee'" in raised.value.message()
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert not (uploads_server.repository.parent / "escape").exists()
    assert client.is_server_live()


def test_files_without_a_config_are_refused(uploads_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(uploads_server.http_address)
    with pytest.raises(InferenceServerException, match="need its 'config' parameter too"):
        client.load_model("no_config", files={"file:1/model.onnx": b"x"})
