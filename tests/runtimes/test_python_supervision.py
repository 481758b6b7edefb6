"""Python workers are supervised: a worker that dies is noticed even while idle and replaced off the request
path; one that keeps dying is given up on, FAILED with the reason; nothing leaks however often they die.

In process, through ``modelserve.Engine``; the workers are this process's children, found and killed with
psutil. What a worker does next is steered by flag files in ``tmp_path`` that the model reads in ``load``
and ``infer``, so a test makes the *replacement* misbehave. Every wait is ``wait_until_async`` on a positive
event (a new worker, readiness, a state in the index), bounded by its timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from modelserve import Engine, ErrorCode, ModelServeError
from modelserve.repository.lifecycle import IndexEntry
from modelserve.repository.loaded import VersionState
from tests.model_builders import write_python_model
from tests.waiting import wait_until_async

WORKER_MODULE = "modelserve.runtimes.python.worker"

# Flags (files in the "folder" parameter): "die-at-load" and "die-in-infer" make the worker exit with code
# 3 there; while "hold-load" exists, load() waits (bounded) so a test can see the replacement in progress.
# An infer with seconds > 0 writes its pid to busy.pid, then sleeps long enough to be killed mid-request.
SUPERVISED_MODEL = """
    import os
    import time
    from pathlib import Path

    import numpy as np

    from modelserve import PythonModel


    class Model(PythonModel):
        def load(self, context):
            self.folder = Path(context.parameters["folder"])
            if (self.folder / "die-at-load").exists():
                os._exit(3)
            deadline = time.monotonic() + 20
            while (self.folder / "hold-load").exists() and time.monotonic() < deadline:
                time.sleep(0.005)

        def infer(self, inputs):
            if (self.folder / "die-in-infer").exists():
                os._exit(3)
            seconds = float(inputs["seconds"][0])
            if seconds > 0:
                (self.folder / "busy.pid").write_text(str(os.getpid()))
                time.sleep(seconds)
            return {"pid": np.array([os.getpid()], dtype=np.int64)}
"""


def repository(tmp_path: Path, *, max_deaths: str | None = None) -> Path:
    extra = (
        f'parameters {{ key: "max_consecutive_worker_deaths" value: {{ string_value: "{max_deaths}" }} }}'
        if max_deaths is not None
        else ""
    )
    config = f"""
        backend: "python"
        input [ {{ name: "seconds" data_type: TYPE_FP32 dims: [ 1 ] }} ]
        output [ {{ name: "pid" data_type: TYPE_INT64 dims: [ 1 ] }} ]
        instance_group [ {{ count: 1 kind: KIND_CPU }} ]
        parameters {{ key: "folder" value: {{ string_value: "{tmp_path}" }} }}
        {extra}
    """
    repo = tmp_path / "repo"
    write_python_model(repo / "flaky", SUPERVISED_MODEL, config)
    return repo


def worker_pids() -> set[int]:
    """This process's worker processes (the in-process engine's children), zombies included."""
    pids = set()
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE or WORKER_MODULE in child.cmdline():
                pids.add(child.pid)
        except psutil.NoSuchProcess:  # reaped between the listing and the look
            continue
    return pids


def zombies() -> list[int]:
    found = []
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def entry(engine: Engine) -> IndexEntry:
    (found,) = [e for e in engine.models() if e.name == "flaky" and e.version == "1"]
    return found


async def pid_of_call(engine: Engine, seconds: float = 0.0) -> int:
    result = await engine.infer("flaky", {"seconds": np.array([seconds], dtype=np.float32)})
    return int(result.outputs["pid"][0])


async def failing_call(engine: Engine, seconds: float = 0.0) -> ModelServeError:
    with pytest.raises(ModelServeError) as caught:
        await pid_of_call(engine, seconds)
    return caught.value


async def replaced(engine: Engine, victim: int) -> int:
    """Wait until ``victim`` is gone (reaped), its replacement runs and the engine is ready again; its pid."""

    def new_worker() -> int | None:
        pids = worker_pids()
        if victim in pids or len(pids) != 1 or not engine.ready():
            return None
        return pids.pop()

    return await wait_until_async(new_worker, what=f"worker {victim} to be replaced and the engine ready")


def run(scenario: object) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_an_idle_worker_that_dies_is_replaced_and_ready_returns_without_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    if not pidfd:  # what a kernel before 5.3 (or another OS) offers: the supervisor polls the process
        monkeypatch.delattr(os, "pidfd_open", raising=False)

    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*") as engine:
            victim = await pid_of_call(engine)
            assert engine.ready() and worker_pids() == {victim}
            (tmp_path / "hold-load").touch()
            os.kill(victim, signal.SIGKILL)
            # Noticed with no request in flight: the version is UNAVAILABLE and neither the server nor the
            # model is ready while the replacement's load is held...
            await wait_until_async(
                lambda: entry(engine).state is VersionState.UNAVAILABLE and not engine.ready(),
                what="the idle worker's death to show in the index",
            )
            assert not await engine.dataplane.is_model_ready("flaky", "")
            await wait_until_async(lambda: worker_pids() - {victim}, what="a replacement worker to start")
            # ...and ready again by itself once it has loaded.
            (tmp_path / "hold-load").unlink()
            replacement = await replaced(engine, victim)
            assert entry(engine).state is VersionState.READY and entry(engine).reason == ""
            assert await engine.dataplane.is_model_ready("flaky", "")
            assert await pid_of_call(engine) == replacement

    run(scenario())


def test_a_worker_killed_mid_request_fails_that_request_alone_and_the_next_succeeds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*") as engine:
            async with asyncio.TaskGroup() as group:
                doomed = group.create_task(failing_call(engine, seconds=20))
                busy = tmp_path / "busy.pid"
                victim = int(await wait_until_async(lambda: busy.exists() and busy.read_text(), what="busy.pid"))
                os.kill(victim, signal.SIGKILL)
            error = doomed.result()
            assert error.code is ErrorCode.UNAVAILABLE
            assert "its worker process died (killed by signal 9) while running this request" in error.message
            assert "retry" in error.message
            # The next request waits for the replacement and succeeds on it.
            assert await pid_of_call(engine) not in (victim, 0)
            await replaced(engine, victim)
            assert entry(engine).state is VersionState.READY

    run(scenario())


def test_a_replacement_that_always_dies_at_load_is_given_up_on_with_the_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*") as engine:
            victim = await pid_of_call(engine)
            (tmp_path / "die-at-load").touch()
            os.kill(victim, signal.SIGKILL)
            # The kill, then four replacements that exit in load(): five deaths in a row (the default).
            failed = await wait_until_async(
                lambda: entry(engine).state is VersionState.FAILED and entry(engine),
                timeout_s=30,
                what="the version to show FAILED",
            )
            reason = "worker process died 5 times in a row; last: exit code 3; fix the model or reload it"
            assert failed.reason == reason
            assert not engine.ready()
            assert not await engine.dataplane.is_model_ready("flaky", "")
            assert reason in engine.dataplane.readiness_detail("flaky")
            error = await failing_call(engine)
            assert error.code is ErrorCode.UNAVAILABLE and reason in error.message
            # It stopped replacing, and reaped every worker it started.
            assert worker_pids() == set() and zombies() == []
            # The fix the message names: fix the model, reload it; it serves again.
            (tmp_path / "die-at-load").unlink()
            await engine.load("flaky")
            assert engine.ready() and entry(engine).state is VersionState.READY
            assert await pid_of_call(engine) in worker_pids()

    run(scenario())


def test_a_model_that_kills_its_worker_on_every_request_fails_after_the_configured_deaths(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path, max_deaths="3"), load="*") as engine:
            (tmp_path / "die-in-infer").touch()
            for _ in range(3):  # each waits for the previous one's replacement, then kills it
                error = await failing_call(engine)
                assert error.code is ErrorCode.UNAVAILABLE
                assert "its worker process died (exit code 3) while running this request" in error.message
            failed = await wait_until_async(
                lambda: entry(engine).state is VersionState.FAILED and entry(engine), what="FAILED"
            )
            reason = "worker process died 3 times in a row; last: exit code 3; fix the model or reload it"
            assert failed.reason == reason
            assert not engine.ready()
            error = await failing_call(engine)
            assert error.code is ErrorCode.UNAVAILABLE and "died 3 times in a row" in error.message
            assert worker_pids() == set()

    run(scenario())


def test_a_bad_death_limit_fails_the_load_naming_the_parameter(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path, max_deaths="none"), load="*") as engine:
            failed = entry_of_model(engine)
            assert failed.state is VersionState.FAILED
            assert "parameters 'max_consecutive_worker_deaths' must be a whole number of at least 1" in failed.reason
            assert "'none'" in failed.reason
            assert worker_pids() == set()

    run(scenario())


def entry_of_model(engine: Engine) -> IndexEntry:
    (found,) = [e for e in engine.models() if e.name == "flaky"]
    return found


def test_twenty_kills_leave_no_zombies_and_no_leaked_file_descriptors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*") as engine:
            worker = await pid_of_call(engine)
            fds_before = open_fds()
            for _ in range(20):
                os.kill(worker, signal.SIGKILL)
                replacement = await replaced(engine, worker)
                # It serves, which also proves the model can run: the deaths in a row start again, so
                # twenty kills never reach the limit of five.
                assert await pid_of_call(engine) == replacement
                worker = replacement
            assert zombies() == []
            assert worker_pids() == {worker}
            assert entry(engine).state is VersionState.READY
            # Two of slack: the event loop or a thread pool may open a descriptor lazily meanwhile; one
            # leaked per kill would be twenty.
            assert open_fds() - fds_before <= 2
        assert worker_pids() == set() and zombies() == []

    run(scenario())


def test_unloading_while_a_replacement_loads_stops_the_supervisor_and_reaps_every_worker(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Engine.from_repository(repository(tmp_path), load="*") as engine:
            victim = await pid_of_call(engine)
            (tmp_path / "hold-load").touch()  # the replacement stays in load() until unload ends it
            os.kill(victim, signal.SIGKILL)
            held = await wait_until_async(
                lambda: (pids := worker_pids() - {victim}) and len(pids) == 1 and pids.pop(),
                what="the replacement worker to start",
            )
            await engine.unload("flaky")
            assert entry_of_model(engine).state is VersionState.UNLOADED
            assert not psutil.pid_exists(held) and worker_pids() == set() and zombies() == []
            threads = [t.name for t in threading.enumerate() if t.name.startswith("supervise-flaky-")]
            assert threads == [], "unload joins the supervisor thread"

    run(scenario())
