"""Start MLServer 1.7 as the benchmark's peer, with the model-configuration endpoint perf_analyzer needs.

Why this exists. perf_analyzer asks the server for each model's Triton configuration before it sends any
load (REST ``GET /v2/models/{model}/config``, gRPC ``inference.GRPCInferenceService/ModelConfig``) and stops
with "failed to get model config" without it. That endpoint is a Triton extension, not part of the KServe V2
protocol, and MLServer 1.7 has neither form. So this launcher adds both, then runs ``mlserver start REPO``.

What changes in MLServer, and nothing else:

1. The configuration endpoint, read-only, in REST (with and without a version) and gRPC. Each model's
   configuration is derived once at start-up from its ``model-settings.json``: the declared inputs and
   outputs with their shapes, and ``max_batch_size: 0`` because MLServer declares the batch dimension in the
   shapes (``[-1, 4]``) rather than apart from them. perf_analyzer reads it once, before the first timed
   window, so it costs nothing in the measurement.
2. REST inference replies lose each output's ``parameters``. MLServer puts ``{"content_type": "np"}`` there;
   Triton's C++ HTTP client inside perf_analyzer then reads ``parameters.binary_data_size`` without checking
   that it exists, and every request fails with "attempt to access non-existing object member
   'binary_data_size'". Dropping a field from the reply object is cheaper than serialising it, so this does
   not slow MLServer down. gRPC replies are untouched.

How. MLServer offers no seam for a server-wide route: its custom handlers belong to one model's runtime and
are REST only. So three MLServer functions are wrapped before it starts (the app factory, the gRPC servicer
registration and the REST infer endpoint), each calling the original first. The peer's inference path is
otherwise MLServer's own. A reverse proxy in front of MLServer was rejected: it would add a network hop to
every request measured for the peer, and the comparison would no longer be fair.

Usage (in the peer's venv, made by ``bench/setup.sh``: mlserver, mlserver-sklearn, tritonclient[grpc])::

    .bench/mlserver-venv/bin/python bench/mlserver_launcher.py .bench/mlserver-models

The pure parts (:func:`read_configs`, :func:`requested_model`) import nothing from MLServer, so they can be
used and checked from any venv.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# MLServer's tensor datatypes (KServe V2 names) to Triton's model-configuration enum names.
TRITON_DATA_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}
# Encoding the gRPC replies runs in a child process (see encode_grpc_configs); it imports protobuf only.
ENCODE_TIMEOUT_S = 60.0


def _tensors(settings_path: Path, model: str, kind: str, tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tensor in tensors:
        datatype = tensor.get("datatype")
        if datatype not in TRITON_DATA_TYPES:
            raise SystemExit(
                f"{settings_path}: model {model!r} {kind} {tensor.get('name')!r} has datatype {datatype!r}; "
                f"perf_analyzer's model config needs one of {', '.join(TRITON_DATA_TYPES)}"
            )
        if "shape" not in tensor:
            raise SystemExit(f"{settings_path}: model {model!r} {kind} {tensor.get('name')!r} declares no shape")
        out.append({"name": tensor["name"], "data_type": TRITON_DATA_TYPES[datatype], "dims": tensor["shape"]})
    return out


def read_configs(repo: Path) -> dict[str, dict[str, Any]]:
    """Triton model configurations (as JSON objects) for every ``*/model-settings.json`` in repo, by model name.

    Raises SystemExit naming the file and the fix when repo holds no model or a model cannot be described.
    """
    configs: dict[str, dict[str, Any]] = {}
    for settings_path in sorted(repo.glob("*/model-settings.json")):
        settings = json.loads(settings_path.read_text())
        # MLServer names a model after its folder when the settings give no name.
        name = settings.get("name") or settings_path.parent.name
        for kind in ("inputs", "outputs"):
            if not settings.get(kind):
                raise SystemExit(
                    f"{settings_path}: model {name!r} declares no {kind}; perf_analyzer builds its requests "
                    f"from them, so list each tensor with name, datatype and shape"
                )
        configs[name] = {
            "name": name,
            "platform": "mlserver",
            "backend": "mlserver",
            "max_batch_size": 0,
            "input": _tensors(settings_path, name, "input", settings["inputs"]),
            "output": _tensors(settings_path, name, "output", settings["outputs"]),
        }
    if not configs:
        raise SystemExit(f"no */model-settings.json under {repo}: run `.venv/bin/python bench/mlserver_repo.py` first")
    return configs


def encode_grpc_configs(configs: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """Serialized ``inference.ModelConfigResponse`` messages, by model name.

    They are built in a child process from tritonclient's own protobuf classes, so the field numbers come
    from Triton's schema rather than from us. Not in this process: tritonclient's and MLServer's generated
    modules both register the protobuf package "inference", and importing both into one process fails.
    """
    code = (
        "import json, sys\n"
        "from google.protobuf import json_format\n"
        "from tritonclient.grpc import service_pb2\n"
        "configs = json.load(sys.stdin)\n"
        "print(json.dumps({name: json_format.ParseDict({'config': config}, service_pb2.ModelConfigResponse())"
        ".SerializeToString().hex() for name, config in configs.items()}))\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(configs), capture_output=True, text=True,
            timeout=ENCODE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"encoding the gRPC model configs took over {ENCODE_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        raise SystemExit(
            f"cannot encode the gRPC model configs with {sys.executable} (needs tritonclient[grpc]; "
            f"rerun `bash bench/setup.sh`):\n{result.stderr[-2000:]}"
        )
    return {name: bytes.fromhex(blob) for name, blob in json.loads(result.stdout).items()}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def requested_model(request: bytes) -> str:
    """The model name in a serialized ``inference.ModelConfigRequest`` (field 1; the version, field 2, is
    ignored: MLServer serves one version here). "" when the request names none; ValueError when malformed.

    Decoded by hand because the protobuf classes for it cannot be imported next to MLServer's (see
    :func:`encode_grpc_configs`); the message is two strings, so a minimal wire-format reader suffices.
    """
    pos = 0
    while pos < len(request):
        key, pos = _varint(request, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:  # varint
            _, pos = _varint(request, pos)
        elif wire_type == 1:  # 64-bit
            pos += 8
        elif wire_type == 2:  # length-delimited
            length, pos = _varint(request, pos)
            if pos + length > len(request):
                raise ValueError("truncated string field")
            if field == 1:
                return request[pos : pos + length].decode()
            pos += length
        elif wire_type == 5:  # 32-bit
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
    return ""


def install_hooks(configs: dict[str, dict[str, Any]], grpc_replies: dict[str, bytes]) -> None:
    """Wrap MLServer's app factory, gRPC registration and REST infer endpoint (see the module docstring).

    Call before MLServer starts: it builds its servers from these functions at start-up.
    """
    import grpc
    import mlserver.grpc.server as grpc_server
    import mlserver.rest.server as rest_server
    from fastapi.responses import JSONResponse
    from mlserver.rest.endpoints import Endpoints

    async def rest_config(model_name: str, model_version: str = "") -> JSONResponse:
        config = configs.get(model_name)
        if config is None:
            return JSONResponse({"error": f"unknown model '{model_name}'; known: {sorted(configs)}"}, status_code=404)
        return JSONResponse(config)

    create_app = rest_server.create_app

    @functools.wraps(create_app)
    def create_app_with_config(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_api_route("/v2/models/{model_name}/config", rest_config, methods=["GET"])
        app.add_api_route("/v2/models/{model_name}/versions/{model_version}/config", rest_config, methods=["GET"])
        return app

    # mlserver.rest.server imported create_app by name, so that module's reference is the one to replace.
    rest_server.create_app = create_app_with_config

    async def grpc_config(request: bytes, context: Any) -> bytes:
        try:
            name = requested_model(request)
        except (ValueError, UnicodeDecodeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ModelConfigRequest: {exc}")
        if name not in grpc_replies:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{name}'; known: {sorted(grpc_replies)}")
        return grpc_replies[name]

    # No (de)serializers: the handler takes and returns raw bytes, so no protobuf class is needed here.
    config_handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelConfig": grpc.unary_unary_rpc_method_handler(grpc_config)}
    )
    add_servicer = grpc_server.add_GRPCInferenceServiceServicer_to_server

    @functools.wraps(add_servicer)
    def add_servicer_with_config(servicer: Any, server: Any) -> None:
        add_servicer(servicer, server)
        # MLServer's own handler knows no "ModelConfig" method, so gRPC falls through to this one for it.
        server.add_generic_rpc_handlers((config_handler,))

    grpc_server.add_GRPCInferenceServiceServicer_to_server = add_servicer_with_config

    infer = Endpoints.infer

    @functools.wraps(infer)
    async def infer_without_output_parameters(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = await infer(self, *args, **kwargs)
        for output in response.outputs:
            # MLServer's routes exclude None fields, so the key disappears from the JSON reply.
            output.parameters = None
        return response

    Endpoints.infer = infer_without_output_parameters  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("repo", type=Path, help="MLServer model repository (settings.json, */model-settings.json)")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    configs = read_configs(repo)
    install_hooks(configs, encode_grpc_configs(configs))
    print(f"mlserver_launcher: model config endpoint added for {', '.join(sorted(configs))}", flush=True)

    from mlserver.cli.main import main as mlserver_main

    # MLServer's CLI reads sys.argv; this process becomes `mlserver start REPO` with the hooks in place.
    sys.argv = ["mlserver", "start", str(repo)]
    mlserver_main()


if __name__ == "__main__":
    main()
