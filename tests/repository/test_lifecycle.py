"""The model lifecycle through the real server: checksums, warm-up, hot swap under load, racing
load/unload. (Triton #5757, #3583 are the peers' bugs these guard against.)"""

from __future__ import annotations

import concurrent.futures
import hashlib
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.model_builders import write_onnx_scale, write_python_model
from tests.server_process import running_server
from tests.waiting import wait_until

SCALED_CONFIG = """
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def sha256sums(version_dir: Path) -> None:
    digest = hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest()
    (version_dir / "SHA256SUMS").write_text(f"{digest}  model.onnx\n")


def scaled_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write_onnx_scale(repo / "scaled" / "1" / "model.onnx", 1.0)
    (repo / "scaled" / "config.pbtxt").write_text(textwrap.dedent(SCALED_CONFIG))
    return repo


def factor_of(client: grpcclient.InferenceServerClient) -> float:
    inp = grpcclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.ones((1, 3), np.float32))
    return float(client.infer("scaled", [inp]).as_numpy("y")[0, 0])


def index_of(url: str) -> list[dict]:  # type: ignore[type-arg]
    return httpx.post(f"{url}/v2/repository/index").json()  # type: ignore[no-any-return]


def test_a_corrupted_version_is_refused_and_the_serving_one_keeps_serving(tmp_path: Path) -> None:
    repo = scaled_repo(tmp_path)
    sha256sums(repo / "scaled" / "1")
    with running_server(repo, ["--model-control-mode", "explicit", "--load-model", "scaled"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert factor_of(client) == 1.0
        version_2 = repo / "scaled" / "2"
        write_onnx_scale(version_2 / "model.onnx", 2.0)
        sha256sums(version_2)
        data = bytearray((version_2 / "model.onnx").read_bytes())
        data[-5] ^= 0xFF  # one flipped byte after the manifest was made
        (version_2 / "model.onnx").write_bytes(bytes(data))
        with pytest.raises(InferenceServerException) as failure:
            client.load_model("scaled")
        message = failure.value.message()
        assert "checksum mismatch for 'model.onnx'" in message
        assert hashlib.sha256(bytes(data)).hexdigest() in message
        assert (version_2 / "SHA256SUMS").read_text().split()[0] in message
        assert factor_of(client) == 1.0, "the serving version was disturbed by a failed load"
        states = {(m["version"], m["state"]) for m in index_of(server.http_url)}
        assert states == {("1", "READY"), ("2", "FAILED")}
        assert any("checksum mismatch" in m.get("reason", "") for m in index_of(server.http_url))
        metrics = httpx.get(f"{server.http_url}/metrics").text
        assert 'modelserve_model_load_failures_total{model="scaled",stage="checksum"} 1.0' in metrics
        # Fix the file: the next load takes version 2.
        write_onnx_scale(version_2 / "model.onnx", 2.0)
        client.load_model("scaled")
        assert factor_of(client) == 2.0
        assert {(m["version"], m["state"]) for m in index_of(server.http_url)} == {("2", "READY")}


def test_a_manifest_cannot_point_outside_the_version_folder(tmp_path: Path) -> None:
    repo = scaled_repo(tmp_path)
    (tmp_path / "secret").write_text("outside")
    digest = hashlib.sha256(b"outside").hexdigest()
    (repo / "scaled" / "1" / "SHA256SUMS").write_text(f"{digest}  ../../../secret\n")
    with running_server(repo, ["--model-control-mode", "explicit"]) as server:
        response = httpx.post(f"{server.http_url}/v2/repository/models/scaled/load")
        assert response.status_code == 400
        assert "outside the version folder" in response.json()["error"]
        assert "/" not in response.json()["error"].split("names '")[0]


WARMUP_MODEL = """
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.log = Path(context.parameters["log"])
            self.refuse_zeros = context.parameters.get("refuse_zeros") == "yes"

        def infer(self, inputs):
            x = inputs["x"]
            with self.log.open("a") as f:
                f.write(f"{x.shape[0]}\\n")
            if self.refuse_zeros and not x.any():
                raise ValueError("all-zero input")
            return {"y": x + 1}
"""


def warmup_config(tmp_path: Path, refuse_zeros: bool) -> str:
    return f"""
        backend: "python"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        instance_group [ {{ count: 2 }} ]
        model_warmup [ {{
            name: "zeros" batch_size: 3 count: 2
            inputs {{ key: "x" value: {{ data_type: TYPE_FP32 dims: [ 2 ] zero_data: true }} }}
        }} ]
        parameters {{ key: "log" value: {{ string_value: "{tmp_path / "warm.log"}" }} }}
        parameters {{ key: "refuse_zeros" value: {{ string_value: "{"yes" if refuse_zeros else "no"}" }} }}
    """


def test_warm_up_runs_on_every_instance_before_ready(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "warm", WARMUP_MODEL, warmup_config(tmp_path, refuse_zeros=False))
    with running_server(repo) as server:
        # 2 instances x count 2, each a batch of 3 rows, all before the server said ready.
        assert (tmp_path / "warm.log").read_text().split() == ["3"] * 4
        assert httpclient.InferenceServerClient(server.http_address).is_model_ready("warm")


def test_a_failed_warm_up_keeps_the_version_out_of_ready(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo / "warm", WARMUP_MODEL, warmup_config(tmp_path, refuse_zeros=True))
    with running_server(repo, ["--model-control-mode", "explicit"]) as server:
        response = httpx.post(f"{server.http_url}/v2/repository/models/warm/load")
        assert response.status_code == 400
        assert "warm-up 'zeros' failed" in response.json()["error"]
        assert "all-zero input" in response.json()["error"]
        [entry] = index_of(server.http_url)
        assert entry["state"] == "FAILED" and "warm-up 'zeros' failed" in entry["reason"]
        assert not httpclient.InferenceServerClient(server.http_address).is_model_ready("warm")


def test_hot_swap_under_load_fails_no_request(tmp_path: Path) -> None:
    """Triton #5757: reloading a model in explicit mode caused downtime. Here version 2 loads beside
    version 1 while a client keeps sending; the switch is atomic and version 1 drains."""
    repo = scaled_repo(tmp_path)
    with running_server(repo, ["--model-control-mode", "explicit", "--load-model", "scaled"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        switched = threading.Event()
        swap_window: list[float] = []  # monotonic start and end of the load call
        outcomes: list[tuple[float, bool, float, float]] = []  # (factor, sent after the switch, latency s, end)
        failures: list[str] = []

        def keep_sending() -> None:
            sender = grpcclient.InferenceServerClient(server.grpc_address)
            after = 0
            for _ in range(5000):  # bounded; stops 200 requests after the switch
                is_after = switched.is_set()
                started = time.monotonic()
                try:
                    factor = factor_of(sender)
                except InferenceServerException as exc:
                    failures.append(str(exc))
                    continue
                ended = time.monotonic()
                outcomes.append((factor, is_after, ended - started, ended))
                after += is_after
                if after >= 200:
                    return

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            senders = [pool.submit(keep_sending) for _ in range(2)]
            wait_until(lambda: len(outcomes) >= 200, timeout_s=10, interval_s=0.01, what="200 answers before the swap")
            write_onnx_scale(repo / "scaled" / "2" / "model.onnx", 2.0)
            swap_window.append(time.monotonic())
            client.load_model("scaled")
            swap_window.append(time.monotonic())
            switched.set()
            for sender in senders:
                sender.result(timeout=60)
        assert failures == []
        assert {o[0] for o in outcomes} <= {1.0, 2.0}
        assert {o[0] for o in outcomes if o[1]} == {2.0}
        assert any(o[0] == 1.0 for o in outcomes)

        def p99_ms(latencies: list[float]) -> float:
            ordered = sorted(latencies)
            return ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3

        before = [o[2] for o in outcomes if o[3] < swap_window[0]]
        during = [o[2] for o in outcomes if swap_window[0] <= o[3] <= swap_window[1] + 0.05]
        print(
            f"hot swap under load: {len(outcomes)} requests, {len(failures)} failed; p99 before "
            f"{p99_ms(before):.2f} ms ({len(before)} requests), during the swap {p99_ms(during):.2f} ms "
            f"({len(during)} requests)"
        )


def test_racing_load_and_unload_never_leave_a_half_state(tmp_path: Path) -> None:
    """Triton #3583: clients racing load and unload saw half-loaded models."""
    repo = scaled_repo(tmp_path)
    with running_server(repo, ["--model-control-mode", "explicit"]) as server:

        def act(i: int) -> int:
            action = "load" if i % 2 == 0 else "unload"
            return httpx.post(f"{server.http_url}/v2/repository/models/scaled/{action}", timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(act, range(24)))
        assert set(codes) == {200}
        entries = index_of(server.http_url)
        assert len(entries) == 1 and entries[0]["state"] in ("READY", "UNLOADED")
        ready = httpclient.InferenceServerClient(server.http_address).is_model_ready("scaled")
        assert ready == (entries[0]["state"] == "READY")
        httpx.post(f"{server.http_url}/v2/repository/models/scaled/load", timeout=60)
        assert factor_of(grpcclient.InferenceServerClient(server.grpc_address)) == 1.0


def test_load_unload_cycles_give_memory_back(tmp_path: Path) -> None:
    """Triton #4966: unloading did not return memory, and load/unload cycles grew until OOM."""
    import psutil

    from tests.server_process import EXAMPLES

    with running_server(EXAMPLES, ["--model-control-mode", "explicit"]) as server:
        process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        client = httpclient.InferenceServerClient(server.http_address)
        rss: list[int] = []
        for _ in range(30):
            client.load_model("digits_mlp")
            inp = httpclient.InferInput("input-0", [4, 64], "FP32")
            inp.set_data_from_numpy(np.ones((4, 64), np.float32))
            client.infer("digits_mlp", [inp])
            client.unload_model("digits_mlp")
            rss.append(process.memory_info().rss)
        # Resident memory moves in ~4 MiB steps from cycle to cycle (allocator pages, onnxruntime's buffers);
        # the median of the last five cycles is what "ends at" means here, without the step noise.
        end = sorted(rss[-5:])[2]
        growth = (end - rss[0]) / rss[0]
        print(
            f"RSS after cycle 1: {rss[0] / 2**20:.1f} MiB, at cycle 30 (median of the last 5): {end / 2**20:.1f} MiB "
            f"({growth:+.1%}); all: {[round(r / 2**20) for r in rss]}"
        )
        assert growth < 0.10, f"RSS grew {growth:.1%} over 30 load/unload cycles"


def test_polling_picks_up_a_new_a_removed_and_a_broken_version_in_process(tmp_path: Path) -> None:
    """The poller's decisions, one poll at a time through the engine: no poll period, no waiting."""
    import shutil

    from modelserve import Engine
    from modelserve.repository.poller import RepositoryPoller

    repo = scaled_repo(tmp_path)
    ones = {"x": np.ones((1, 3), np.float32)}

    async def scenario() -> None:
        async with Engine.from_repository(repo) as engine:
            poller = RepositoryPoller(engine.manager, repo)
            await poller.remember_current()

            async def factor() -> float:
                return float((await engine.infer("scaled", ones)).outputs["y"][0, 0])

            assert await factor() == 1.0
            await poller.poll_once()
            assert await factor() == 1.0  # nothing changed: nothing reloaded
            write_onnx_scale(repo / "scaled" / "2" / "model.onnx", 2.0)
            await poller.poll_once()
            assert await factor() == 2.0
            assert [v.version for v in engine.manager.loaded_versions("scaled")] == ["2"]
            shutil.rmtree(repo / "scaled" / "2")
            await poller.poll_once()
            assert await factor() == 1.0
            (repo / "scaled" / "3").mkdir()
            (repo / "scaled" / "3" / "model.onnx").write_bytes(b"not an onnx file")
            await poller.poll_once()  # a broken change keeps the serving version
            assert any(e.state.value == "FAILED" and e.version == "3" for e in engine.models())
            assert await factor() == 1.0

    import asyncio

    asyncio.run(scenario())


def test_poll_mode_applies_changes_on_its_own_and_refuses_the_load_api(tmp_path: Path) -> None:
    """The wiring through the real server: the engine's poll task runs every period."""
    repo = scaled_repo(tmp_path)
    with running_server(repo, ["--model-control-mode", "poll", "--repository-poll-secs", "0.2"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert factor_of(client) == 1.0
        write_onnx_scale(repo / "scaled" / "2" / "model.onnx", 2.0)
        wait_until(lambda: factor_of(client) == 2.0, timeout_s=15, what="poll mode to load version 2")
        assert httpclient.InferenceServerClient(server.http_address).get_model_metadata("scaled")["versions"] == ["2"]
        refused = httpx.post(f"{server.http_url}/v2/repository/models/scaled/load")
        assert refused.status_code == 403 and "--model-control-mode poll" in refused.json()["error"]


def test_generated_warm_up_requests_from_the_input_spec(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = warmup_config(tmp_path, refuse_zeros=False)
    config = config[: config.index("model_warmup")] + config[config.index("parameters") :]
    config += '\n parameters { key: "warmup_requests" value: { string_value: "3" } }\n'
    write_python_model(repo / "warm", WARMUP_MODEL, config)
    with running_server(repo) as server:
        assert (tmp_path / "warm.log").read_text().split() == ["1"] * 6  # 3 requests x 2 instances, 1 row each
        [entry] = index_of(server.http_url)
        assert entry["state"] == "READY" and entry["warmup_ms"] > 0 and entry["load_ms"] > 0


def test_a_manifest_must_list_every_file_and_a_same_version_reload_swaps_in_place(tmp_path: Path) -> None:
    repo = scaled_repo(tmp_path)
    version_1 = repo / "scaled" / "1"
    sha256sums(version_1)
    with running_server(repo, ["--model-control-mode", "explicit", "--load-model", "scaled"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert factor_of(client) == 1.0
        (version_1 / "extra.bin").write_bytes(b"planted")
        refused = httpx.post(f"{server.http_url}/v2/repository/models/scaled/load")
        assert refused.status_code == 400 and "files not listed in SHA256SUMS: extra.bin" in refused.json()["error"]
        assert factor_of(client) == 1.0
        (version_1 / "extra.bin").unlink()
        # The same version with a changed file (and manifest): reloaded beside the old one, then swapped.
        write_onnx_scale(version_1 / "model.onnx", 5.0)
        sha256sums(version_1)
        client.load_model("scaled")
        assert factor_of(client) == 5.0
        ready = httpx.get(f"{server.http_url}/v2/models/scaled/ready")
        assert ready.status_code == 200
        client.unload_model("scaled")
        not_ready = httpx.get(f"{server.http_url}/v2/models/scaled/ready")
        assert not_ready.status_code == 400 and "UNLOADED" in not_ready.json()["error"]
