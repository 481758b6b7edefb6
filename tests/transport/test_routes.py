"""The REST route table and its matcher (pure, no server), the gRPC scope table against the generated
servicer, and a few checks through the real server that a miss lists the routes and that the routes
answer as they did before the table replaced the hand-written dispatcher."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelserve.core.scopes import Scope
from modelserve.transport.grpc.scopes import GRPC_METHOD_SCOPES, SERVICE, method_scope
from modelserve.transport.http import routes as routes_module
from modelserve.transport.http.routes import (
    ANY_METHOD,
    ROUTES,
    Match,
    MethodNotAllowed,
    NotFound,
    Route,
    Router,
    compile_pattern,
)
from tests.model_builders import iris_repository
from tests.server_process import ServerProcess, running_server

ROUTER = Router(ROUTES)
INFER_SHAPE = "POST /v2/models/{model}[/versions/{version}]/infer"
GOOD = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def matched(method: str, path: str) -> Match:
    found = ROUTER.match(method, path)
    assert isinstance(found, Match), f"{method} {path}: {found}"
    return found


# -- every route shape ---------------------------------------------------------------------------------

# (method, path, handler, params, scope): each route at least once, each optional part present and absent.
CASES = [
    ("GET", "/v2/health/live", "server_live", {}, Scope.HEALTH),
    ("GET", "/v2/health/ready", "server_ready", {}, Scope.HEALTH),
    ("GET", "/v2", "server_metadata", {}, Scope.METADATA),
    ("GET", "/v2/openapi.json", "openapi", {}, Scope.METADATA),
    ("POST", "/v2/models/iris/infer", "model_infer", {"model": "iris", "version": ""}, Scope.INFERENCE),
    ("POST", "/v2/models/iris/versions/2/infer", "model_infer", {"model": "iris", "version": "2"}, Scope.INFERENCE),
    ("GET", "/v2/models/iris/ready", "model_ready", {"model": "iris", "version": ""}, Scope.HEALTH),
    ("GET", "/v2/models/iris/versions/1/ready", "model_ready", {"model": "iris", "version": "1"}, Scope.HEALTH),
    ("GET", "/v2/models/stats", "model_statistics", {"model": "", "version": ""}, Scope.STATISTICS),
    ("GET", "/v2/models/iris/stats", "model_statistics", {"model": "iris", "version": ""}, Scope.STATISTICS),
    (
        "GET",
        "/v2/models/iris/versions/3/stats",
        "model_statistics",
        {"model": "iris", "version": "3"},
        Scope.STATISTICS,
    ),
    ("GET", "/v2/models/iris", "model_metadata", {"model": "iris", "version": ""}, Scope.METADATA),
    ("GET", "/v2/models/iris/versions/1", "model_metadata", {"model": "iris", "version": "1"}, Scope.METADATA),
    ("GET", "/v2/models/iris/config", "model_config", {"model": "iris", "version": ""}, Scope.MODEL_CONFIG),
    ("GET", "/v2/models/iris/versions/1/config", "model_config", {"model": "iris", "version": "1"}, Scope.MODEL_CONFIG),
    ("GET", "/v2/models/iris/aliases", "model_aliases", {"model": "iris"}, Scope.MODEL_REPOSITORY),
    ("POST", "/v2/models/iris/aliases/production", "set_alias", {"model": "iris", "alias": "production"}, Scope.ADMIN),
    ("POST", "/v2/models/iris/rollback", "rollback", {"model": "iris"}, Scope.ADMIN),
    ("GET", "/v2/models/iris/routing", "model_routing", {"model": "iris"}, Scope.MODEL_REPOSITORY),
    ("PUT", "/v2/models/iris/routing", "set_routing", {"model": "iris"}, Scope.ADMIN),
    ("DELETE", "/v2/models/iris/routing", "clear_routing", {"model": "iris"}, Scope.ADMIN),
    ("POST", "/v2/repository/index", "repository_index", {}, Scope.MODEL_REPOSITORY),
    ("POST", "/v2/repository/models/iris/load", "model_load", {"model": "iris"}, Scope.MODEL_REPOSITORY),
    ("POST", "/v2/repository/models/iris/unload", "model_unload", {"model": "iris"}, Scope.MODEL_REPOSITORY),
    ("GET", "/metrics", "metrics", {}, Scope.METRICS),
    ("GET", "/v2/alerts", "alerts", {}, Scope.METRICS),
    ("GET", "/v2/dashboard/summary", "dashboard_summary", {}, Scope.DASHBOARD),
    ("GET", "/dashboard", "dashboard_file", {"file": ""}, Scope.DASHBOARD),
    ("GET", "/dashboard/dashboard.js", "dashboard_file", {"file": "dashboard.js"}, Scope.DASHBOARD),
    ("GET", "/v2/systemsharedmemory/status", "system_shm_status", {"region": ""}, Scope.SHARED_MEMORY),
    ("GET", "/v2/systemsharedmemory/region/r/status", "system_shm_status", {"region": "r"}, Scope.SHARED_MEMORY),
    ("POST", "/v2/systemsharedmemory/region/r/register", "system_shm_register", {"region": "r"}, Scope.SHARED_MEMORY),
    ("POST", "/v2/systemsharedmemory/unregister", "system_shm_unregister", {"region": ""}, Scope.SHARED_MEMORY),
    (
        "POST",
        "/v2/systemsharedmemory/region/r/unregister",
        "system_shm_unregister",
        {"region": "r"},
        Scope.SHARED_MEMORY,
    ),
    ("GET", "/v2/cudasharedmemory/status", "cuda_shm_status", {"region": ""}, Scope.SHARED_MEMORY),
    ("POST", "/v2/cudasharedmemory/region/r/register", "cuda_shm_register", {"region": "r"}, Scope.SHARED_MEMORY),
    ("POST", "/v2/cudasharedmemory/unregister", "cuda_shm_unregister", {"region": ""}, Scope.SHARED_MEMORY),
    ("PUT", "/v2/systemsharedmemory/status", "unsupported", {"rest": "status"}, Scope.SHARED_MEMORY),
    (
        "GET",
        "/v2/cudasharedmemory/region/r/register",
        "unsupported",
        {"rest": "region/r/register"},
        Scope.SHARED_MEMORY,
    ),
    ("PUT", "/v2/trace/setting", "unsupported", {"rest": "setting"}, Scope.TRACE),
    ("DELETE", "/v2/logging", "unsupported", {"rest": ""}, Scope.LOGGING),
]


@pytest.mark.parametrize(("method", "path", "handler", "params", "scope"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_every_route_shape_matches_with_its_params_and_scope(
    method: str, path: str, handler: str, params: dict[str, str], scope: Scope
) -> None:
    found = matched(method, path)
    assert found.route.handler == handler
    assert found.params == params
    assert found.route.scope is scope


def test_the_cases_cover_every_route() -> None:
    covered = {matched(method, path).route for method, path, *_ in CASES}
    assert covered == set(ROUTES)


def test_every_route_has_a_scope_and_a_unique_shape() -> None:
    for route in ROUTES:
        assert isinstance(route.scope, Scope), route
    shapes = [route.shape for route in ROUTES]
    assert len(shapes) == len(set(shapes))


def test_the_module_docstring_documents_the_table_row_for_row() -> None:
    assert routes_module.__doc__ is not None
    lines = routes_module.__doc__.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=======")]
    rows = [line.split()[:3] for line in lines[rules[0] + 1 : rules[1]]]
    expected = [["ANY" if r.method == ANY_METHOD else r.method, r.pattern, r.scope.value] for r in ROUTES]
    assert rows == expected


# -- the old dispatcher's rules, kept ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "handler"),
    [
        ("/v2/", "server_metadata"),
        ("/v2//health//live/", "server_live"),
        ("/v2/models/iris/", "model_metadata"),
        ("/v2//models/iris//infer/", "model_infer"),
        ("/v2/dashboard/summary/", "dashboard_summary"),
    ],
)
def test_repeated_and_trailing_slashes_are_ignored(path: str, handler: str) -> None:
    method = "POST" if path.rstrip("/").endswith("infer") else "GET"
    assert matched(method, path).route.handler == handler


@pytest.mark.parametrize("path", ["//v2", "/v2models/iris/infer", "/v2trace", "/V2/health/live", "/v2/health/live\n"])
def test_near_misses_are_404(path: str) -> None:
    assert isinstance(ROUTER.match("GET", path), NotFound)


@pytest.mark.parametrize("name", ["..", ".hidden", "iris\x00", "a b", "%2e%2e", "iris;drop", "ü", "stats", "versions"])
def test_odd_model_names_reach_the_dataplane_verbatim(name: str) -> None:
    # The router is no validator: the dataplane's name check answers these (400 "invalid model").
    assert matched("POST", f"/v2/models/{name}/infer").params == {"model": name, "version": ""}
    assert matched("GET", f"/v2/models/{name}/ready").params["model"] == name
    assert matched("POST", f"/v2/repository/models/{name}/load").params == {"model": name}
    assert matched("GET", f"/v2/models/iris/versions/{name}/config").params["version"] == name


@settings(max_examples=200, deadline=None)
@given(
    model=st.text(st.characters(blacklist_characters="/", blacklist_categories=["Cs"]), min_size=1, max_size=40),
    version=st.text(st.characters(blacklist_characters="/", blacklist_categories=["Cs"]), min_size=1, max_size=10),
)
def test_any_segment_is_a_model_or_version(model: str, version: str) -> None:
    assert matched("POST", f"/v2/models/{model}/infer").params == {"model": model, "version": ""}
    found = matched("POST", f"/v2/models/{model}/versions/{version}/infer")
    assert found.params == {"model": model, "version": version}


def test_a_segment_never_holds_a_slash() -> None:
    # ASGI paths are percent-decoded: a%2Fb arrives as two segments, and no model route has room for both.
    assert isinstance(ROUTER.match("POST", "/v2/models/a/b/infer"), NotFound)
    assert isinstance(ROUTER.match("POST", "/v2/repository/models/a/b/load"), NotFound)


def test_versions_needs_a_version() -> None:
    assert isinstance(ROUTER.match("GET", "/v2/models/iris/versions"), NotFound)
    assert isinstance(ROUTER.match("POST", "/v2/models/iris/versions/infer"), MethodNotAllowed)  # metadata of 'infer'
    assert isinstance(ROUTER.match("POST", "/v2/models/iris/versions/1/versions/2/infer"), NotFound)


@pytest.mark.parametrize(
    ("path", "file"),
    [
        ("/dashboard/", ""),
        ("/dashboard/a/b", "a/b"),
        ("/dashboard//etc/passwd", "/etc/passwd"),
        ("/dashboard/dashboard.js/", "dashboard.js/"),
        ("/dashboard/../config.py", "../config.py"),
    ],
)
def test_the_dashboard_file_is_the_rest_of_the_path_verbatim(path: str, file: str) -> None:
    # The handler looks it up in an allow-list; every one of these but the first is an unknown name there.
    assert matched("GET", path).params == {"file": file}


# -- misses --------------------------------------------------------------------------------------------


def test_an_unknown_path_names_itself_and_lists_the_routes() -> None:
    found = ROUTER.match("GET", "/v2/modls/iris/infer")
    assert isinstance(found, NotFound)
    head, _, listing = found.message.partition("; routes: ")
    assert head == "no route for GET /v2/modls/iris/infer"
    assert listing.split(", GET /v2/health/ready")[0] == "GET /v2/health/live"
    assert INFER_SHAPE in listing.split(", ")
    assert "GET /v2/models[/{model}[/versions/{version}]]/stats" in listing
    assert "GET /dashboard[/{file}]" in listing  # {file:path} shown without its converter
    # The 501 families exist only to refuse, and the CUDA routes only to answer "none"; a list of what to
    # use leaves them out, and lists the system shared memory operations.
    assert "trace" not in listing and "cudasharedmemory" not in listing and "ANY" not in listing
    assert "POST /v2/systemsharedmemory/region/{region}/register" in listing.split(", ")


def test_the_404_message_is_bounded() -> None:
    found = ROUTER.match("POST", "/v2/" + "x" * 10_000)
    assert isinstance(found, NotFound)
    assert "/v2/" + "x" * 96 + "..." in found.message and "x" * 97 not in found.message
    assert len(found.message) <= len(ROUTER.not_found_message("POST", "")) + 103
    long_method = ROUTER.match("M" * 1000, "/nowhere")
    assert isinstance(long_method, NotFound) and "M" * 17 not in long_method.message


def test_a_lone_surrogate_in_the_path_is_escaped_not_raised() -> None:
    found = ROUTER.match("GET", "/v2/\udcff")
    assert isinstance(found, NotFound)
    assert "\\udcff" in found.message
    found.message.encode("utf-8")  # what the JSON encoder needs


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v2/models/iris/infer", ("POST",)),
        ("PUT", "/v2/models/iris/versions/1/infer", ("POST",)),
        ("POST", "/v2/health/live", ("GET",)),
        ("POST", "/v2/models/stats", ("GET",)),
        ("GET", "/v2/repository/index", ("POST",)),
        ("DELETE", "/v2/models/iris/aliases", ("GET",)),
        ("GET", "/v2/models/iris/aliases/production", ("POST",)),
        ("HEAD", "/metrics", ("GET",)),
        ("post", "/v2/models/iris/infer", ("POST",)),  # methods are case-sensitive (RFC 9110)
    ],
)
def test_a_wrong_method_is_405_with_the_allowed_ones(method: str, path: str, allowed: tuple[str, ...]) -> None:
    found = ROUTER.match(method, path)
    assert isinstance(found, MethodNotAllowed)
    assert found.allowed == allowed


def test_405_collects_every_method_the_path_has_in_table_order() -> None:
    router = Router(
        [
            Route("GET", "/things/{id}", "get_thing", Scope.METADATA),
            Route("DELETE", "/things/{id}", "delete_thing", Scope.ADMIN),
            Route("PUT", "/things/{id}", "put_thing", Scope.ADMIN),
        ]
    )
    found = router.match("POST", "/things/7")
    assert isinstance(found, MethodNotAllowed)
    assert found.allowed == ("GET", "DELETE", "PUT")
    assert matched_in(router, "DELETE", "/things/7").handler == "delete_thing"


def matched_in(router: Router, method: str, path: str) -> Route:
    found = router.match(method, path)
    assert isinstance(found, Match)
    return found.route


def test_the_first_route_in_table_order_wins() -> None:
    router = Router(
        [Route("GET", "/a/{x}", "first", Scope.METADATA), Route("GET", "/a/literal", "second", Scope.METADATA)]
    )
    assert matched_in(router, "GET", "/a/literal").handler == "first"


def test_a_router_without_a_route_lists_none() -> None:
    found = Router([]).match("GET", "/v2")
    assert isinstance(found, NotFound) and found.message == "no route for GET /v2; routes: "


# -- the pattern language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("v2/health", "must start with '/'"),
        ("/v2/models/{model", "stray brace"),
        ("/v2/models/{model}}", "stray brace"),
        ("/v2/{a}/{a}", "repeats the parameter {a}"),
        ("/v2[/x", "unclosed"),
        ("/v2]/x", "never opened"),
        ("/files/{rest:path}/tail", "must come last"),
        ("/files/{bad-name}", "stray brace"),
    ],
)
def test_a_bad_pattern_is_refused_with_the_reason(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="route pattern") as caught:
        compile_pattern(pattern)
    assert fragment in str(caught.value)


def test_a_lowercase_method_in_the_table_is_refused() -> None:
    with pytest.raises(ValueError, match="capitals"):
        Router([Route("get", "/x", "x", Scope.METADATA)])


def test_nested_optional_parts_name_their_params() -> None:
    source, names = compile_pattern("/v2/models[/{model}[/versions/{version}]]/stats")
    assert names == ("model", "version")
    assert source.startswith("/v2/+models(?:")


# -- the gRPC scope table ------------------------------------------------------------------------------


def servicer_methods() -> set[str]:
    """The RPCs of the generated base class: a new proto method appears here with no edit of ours."""
    base = service_pb2_grpc.GRPCInferenceServiceServicer
    return {name for name, value in vars(base).items() if callable(value) and not name.startswith("_")}


def test_every_grpc_method_has_a_scope() -> None:
    methods = servicer_methods()
    assert len(methods) >= 20  # the introspection found the RPCs, not an empty class
    missing = methods - GRPC_METHOD_SCOPES.keys()
    assert not missing, f"give these gRPC methods a scope in transport/grpc/scopes.py: {sorted(missing)}"
    assert GRPC_METHOD_SCOPES.keys() == methods, "the table names methods the service does not have"
    for scope in GRPC_METHOD_SCOPES.values():
        assert isinstance(scope, Scope)


def test_the_servicer_and_the_proto_descriptor_agree() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == SERVICE
    assert {method.name for method in service.methods} == servicer_methods()


@pytest.mark.parametrize(
    ("full_method", "scope"),
    [
        ("/inference.GRPCInferenceService/ModelInfer", Scope.INFERENCE),
        ("/inference.GRPCInferenceService/ModelStreamInfer", Scope.INFERENCE),
        ("/inference.GRPCInferenceService/ModelReady", Scope.HEALTH),
        ("/inference.GRPCInferenceService/RepositoryModelLoad", Scope.MODEL_REPOSITORY),
        ("/inference.GRPCInferenceService/CudaSharedMemoryRegister", Scope.SHARED_MEMORY),
        ("LogSettings", Scope.LOGGING),
        ("/inference.GRPCInferenceService/NoSuchMethod", None),
        ("/grpc.health.v1.Health/Check", None),
        ("/other.Service/ModelInfer", None),
    ],
)
def test_method_scope_reads_grpcio_method_names(full_method: str, scope: Scope | None) -> None:
    assert method_scope(full_method) is scope


# The same operation has the same scope on both ports, or a restriction would depend on the port.
SAME_OPERATION = {
    "ServerLive": "server_live",
    "ServerReady": "server_ready",
    "ModelReady": "model_ready",
    "ServerMetadata": "server_metadata",
    "ModelMetadata": "model_metadata",
    "ModelInfer": "model_infer",
    "ModelConfig": "model_config",
    "ModelStatistics": "model_statistics",
    "RepositoryIndex": "repository_index",
    "RepositoryModelLoad": "model_load",
    "RepositoryModelUnload": "model_unload",
    "SystemSharedMemoryStatus": "system_shm_status",
    "SystemSharedMemoryRegister": "system_shm_register",
    "SystemSharedMemoryUnregister": "system_shm_unregister",
    "CudaSharedMemoryStatus": "cuda_shm_status",
    "CudaSharedMemoryRegister": "cuda_shm_register",
    "CudaSharedMemoryUnregister": "cuda_shm_unregister",
}


@pytest.mark.parametrize(("grpc_method", "handler"), SAME_OPERATION.items())
def test_rest_and_grpc_agree_on_each_operations_scope(grpc_method: str, handler: str) -> None:
    (route,) = [route for route in ROUTES if route.handler == handler]
    assert GRPC_METHOD_SCOPES[grpc_method] is route.scope


def test_the_unsupported_extensions_share_their_scopes_across_ports() -> None:
    rest = {route.scope for route in ROUTES if route.handler == "unsupported"}
    grpc = {GRPC_METHOD_SCOPES[name] for name in ("SystemSharedMemoryStatus", "TraceSetting", "LogSettings")}
    assert rest == grpc == {Scope.SHARED_MEMORY, Scope.TRACE, Scope.LOGGING}


# -- through the real server ---------------------------------------------------------------------------


@pytest.fixture
def client(examples_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=examples_server.http_url, timeout=10.0) as c:
        yield c


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    document = json.loads(response.content)
    assert set(document) == {"error"}
    message = document["error"]
    assert isinstance(message, str)
    return message


def assert_infer_works(client: httpx.Client) -> None:
    response = client.post("/v2/models/iris/infer", json=GOOD)
    assert response.status_code == 200, response.text
    assert {o["name"]: o for o in response.json()["outputs"]}["label"]["data"] == [0]


def test_a_404_over_the_wire_names_the_path_and_lists_the_routes(client: httpx.Client) -> None:
    response = client.get("/v2/modls/iris/infer")
    assert response.status_code == 404
    message = error_of(response)
    assert message.startswith("no route for GET /v2/modls/iris/infer; routes: GET /v2/health/live, ")
    listed = message.partition("; routes: ")[2].split(", ")
    assert INFER_SHAPE in listed
    assert "GET /metrics" in listed and "GET /v2/alerts" in listed  # both on in the examples server
    assert_infer_works(client)


def test_a_long_unknown_path_gives_a_bounded_404(client: httpx.Client) -> None:
    response = client.get("/v2/" + "y" * 4000)
    assert response.status_code == 404
    message = error_of(response)
    assert "y" * 96 + "..." in message and "y" * 97 not in message
    assert len(response.content) < 2000


def test_a_405_over_the_wire_names_the_method_and_sets_allow(client: httpx.Client) -> None:
    response = client.get("/v2/models/iris/infer")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_of(response) == "Method Not Allowed: use POST"
    response = client.post("/v2/health/ready")
    assert (response.status_code, response.headers["allow"]) == (405, "GET")
    assert_infer_works(client)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
@pytest.mark.parametrize(
    ("path", "extension"),
    [
        ("/v2/trace/setting", "trace"),
        ("/v2//logging", "logging"),
    ],
)
def test_unsupported_extensions_are_501_whatever_the_method(
    client: httpx.Client, method: str, path: str, extension: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 501
    assert error_of(response) == f"the '{extension}' extension is not supported by this server"


def test_the_routes_answer_as_before(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/").json()["name"]
    assert client.get("/v2/models/iris/").json()["name"] == "iris"
    assert client.get("/v2/models/iris/versions/1/ready").status_code == 200
    assert client.get("/v2/models/iris/config").json()["name"] == "iris"
    every = client.get("/v2/models/stats").json()["model_stats"]
    assert "iris" in {entry["name"] for entry in every}
    one = client.get("/v2/models/iris/versions/1/stats").json()["model_stats"]
    assert {(entry["name"], entry["version"]) for entry in one} == {("iris", "1")}
    index = client.post("/v2/repository/index", json={"ready": True}).json()
    assert "iris" in {entry["name"] for entry in index}
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.post("/v2/models/iris/versions/1/infer", json=GOOD).status_code == 200


def test_odd_names_still_reach_the_dataplanes_validator(client: httpx.Client) -> None:
    response = client.get("/v2/models/%2e%2e/config")
    assert response.status_code == 400
    assert "invalid model" in error_of(response)
    response = client.get("/v2/models/no_such_model/ready")
    assert response.status_code == 400
    assert "no_such_model" in error_of(response)
    assert_infer_works(client)


@pytest.fixture(scope="module")
def features_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("features_off")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"metrics": {"enabled": False}, "dashboard": {"enabled": False}}))
    with running_server(iris_repository(root), config=config) as server:
        yield server


def test_features_that_are_off_are_absent_or_say_how_to_turn_them_on(features_off: ServerProcess) -> None:
    with httpx.Client(base_url=features_off.http_url, timeout=10.0) as c:
        response = c.get("/metrics")
        assert response.status_code == 404
        message = error_of(response)
        assert message.startswith("no route for GET /metrics; ")
        assert "GET /metrics" not in message.partition("; routes: ")[2].split(", ")
        # The dashboard's routes say how to turn it on, even for a wrong method (before the 405, as before).
        for method, path in [("GET", "/dashboard"), ("POST", "/dashboard"), ("GET", "/v2/dashboard/summary")]:
            response = c.request(method, path)
            assert response.status_code == 404, (method, path)
            assert "set dashboard.enabled: true" in error_of(response)
        assert_infer_works(c)
