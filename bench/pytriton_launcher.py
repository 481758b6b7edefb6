"""Serve the iris ONNX model with NVIDIA Triton through PyTriton: the benchmark's second peer.

What runs. PyTriton 0.7.0 (``nvidia-pytriton``, in its own venv ``.bench/pytriton-venv``, made by
``bench/setup.sh``) bundles a ``tritonserver`` binary and Triton's Python backend. This launcher binds one Python
inference function under the model name (``iris``) and calls :meth:`Triton.serve`; PyTriton writes the model
repository and the Triton model configuration itself and starts ``tritonserver`` as a child process. The
function runs ``examples/models/iris/1/model.onnx``, the very file modelserve serves, with onnxruntime, using the
same session options as modelserve's ONNX runtime (one intra-op and one inter-op thread, sequential execution,
all graph optimisations), so both servers do the same model work per request.

Request path, per inference: perf_analyzer -> tritonserver (C++ HTTP/gRPC front end and scheduler) -> the Python
backend's stub process (shared memory) -> this process (PyTriton's ZeroMQ proxy) -> onnxruntime, and back. That
is what "Triton via PyTriton" costs; it is not Triton's native onnxruntime backend, which PyTriton does not ship.

Same tensors as modelserve. Inputs and outputs are read from the ONNX graph (:func:`signature`) and declared
without the batch dimension, with ``max_batch_size`` 64, as in ``examples/models/iris/config.pbtxt``: ``input-0``
FP32 [4], ``label`` INT64 [1], ``probabilities`` FP32 [3] (digits_mlp works the same way). So perf_analyzer
(``-b 1``) reads the same kind of configuration from both servers and sends both the same requests, ``input-0``
of shape [1, 4], with no ``--shape`` flag; modelserve reshapes its label to [batch] (``reshape: { shape: [ ] }``), which PyTriton cannot express, so Triton returns it as
[batch, 1] (one INT64 per row either way, as MLServer's [-1, 1]).

Batching and the other settings. By default this launcher keeps PyTriton's default dynamic batcher
(``ModelConfig()`` writes ``dynamic_batching {}``: no queue delay, so it only merges requests that are already
waiting when the model instance becomes free, and never holds one back), with one model instance, PyTriton's
``@batch`` decorator, one onnxruntime thread and no tensor store: the fastest setting measured here. Every batch-1
request still arrives and is answered on its own; Triton hands the waiting ones to the function together, which
stacks them into one batch of rows. That is Triton's usual serving setup and what PyTriton does unless told
otherwise; modelserve's iris configuration has no dynamic batching, so the report compares each server at its
best, not the same scheduling. The other settings stay reachable: ``--no-dynamic-batching`` (``batcher=None``:
``max_batch_size`` stays 64, no ``dynamic_batching`` block, every request is one call of the function),
``--max-queue-delay-us N``, ``--instances N`` (PyTriton binds one function per Triton model instance, each with
its own onnxruntime session, backend stub and handler thread here), ``--no-batch-decorator`` (the function gets
the list of requests and runs each on its own), ``--ort-threads N`` (intra-op threads per session) and
``--tensor-store``.

Measured on this 2-core machine (``run_core.py --only mlserver --with-triton --protocols http,grpc --concurrency
32 --server-cpus '' --client-cpus ''``, iris, batch 1, Triton's rows; unpinned and noisy, so compare within a
sweep): infer/s and Triton's server CPU per request (µs), REST/gRPC; "batcher" is dynamic batching, delay 0.
Sweep 1 ran the eight settings one after the other (MLServer meanwhile: 1,040-1,510 infer/s REST, 920-1,150
gRPC); sweep 2, minutes later on a quieter machine, repeated the best three, interleaved:

| setting (flags)                         | sweep 1 /s | µs/request | sweep 2 /s           | µs/request       |
|-----------------------------------------|------------|------------|----------------------|------------------|
| batcher off (``--no-dynamic-batching``) | 535/606    | 1850/1678  |                      |                  |
| batcher, delay 0 (**the default**)      | 3758/3848  | 280/260    | 5504/4751, 5400/5214 | 215/222, 196/203 |
| batcher, ``--max-queue-delay-us 100``   | 3843/3088  | 262/319    |                      |                  |
| batcher off, ``--instances 2``          | 876/663    | 1310/1421  |                      |                  |
| batcher, ``--instances 2``              | 3800/3886  | 309/293    | 4770/4586            | 290/295          |
| batcher, ``--tensor-store``             | 1889/1745  | 565/581    |                      |                  |
| batcher, ``--no-batch-decorator``       | 4396/3007  | 234/315    | 3686/4289, 4554/4651 | 288/243, 234/225 |
| batcher, ``--ort-threads 2``            | 3530/2713  | 259/328    |                      |                  |

So without the batcher Triton via PyTriton takes one request at a time from tritonserver through the backend
stub to this process and back (1.3-1.9 ms of server CPU each), and a second instance barely helps on two cores;
with it, one such round trip serves all the requests waiting. A queue delay, more instances, more onnxruntime
threads or skipping ``@batch`` did not beat the default beyond the noise; the tensor store halves throughput.

Transport. Between the stub and this process PyTriton by default moves tensors through its "tensor store"
(shared-memory blocks handed over by a multiprocessing manager) and sends only references over ZeroMQ. For
tensors of a few bytes that bookkeeping dominates: with it, iris on this 2-core machine measured 290 infer/s over
REST and 276 over gRPC at concurrency 1 (about 3.5 ms each), and 1.5-1.7 ms and twice the throughput (661 and 576
infer/s) with ``PYTRITON_NO_TENSORSTORE=1``, which makes PyTriton send the tensors themselves, serialised, in
the ZeroMQ messages (an environment switch read in PyTriton's ``models/model.py`` and ``proxy/model.py``, not in
its user guide). The peer is measured at its fastest, as MLServer is (``parallel_workers: 0``), so this launcher
sets it unless ``--tensor-store`` is given. It must be set before ``tritonserver`` starts: the stub reads it
from the environment it inherits.

Access. PyTriton 0.7 protects some Triton APIs with a generated access token (header ``triton-access-token``),
among them ``statistics``, which perf_analyzer reads around every measurement: it then stops with "This API is
restricted, expecting header 'triton-access-token'". modelserve and MLServer leave statistics open, so this
launcher takes ``statistics`` off PyTriton's default list (shared-memory, model-repository, trace and logging stay
protected) rather than making perf_analyzer send a header with every request.

Ports and addresses come from the command line (``run_core.py`` picks free ones with ``common.free_ports``) and
go to :class:`TritonConfig`; everything binds to 127.0.0.1. Readiness: ``common.running`` polls
``/v2/health/ready`` and ``/v2/models/iris/ready`` on the HTTP port, with its bounded timeout.

Stopping. ``common.stop`` sends SIGTERM to the whole process group (this process, ``tritonserver``, the stub);
SIGTERM and SIGHUP are turned into KeyboardInterrupt here, which :meth:`Triton.serve` catches to stop Triton
and clean its workspace; ``common.stop`` SIGKILLs the group after its bounded wait if that hangs.

Running it on Debian 12 (glibc 2.36, no GPU). The wheel is manylinux_2_35, so it installs and its
``tritonserver`` runs without a GPU (it logs that CUDA, NVML and DCGM are unavailable, and carries on on the CPU).
The Python backend's stub (``triton_python_backend_stub`` for Python 3.11) embeds Python by linking
``libpython3.11.so.1.0`` dynamically, then imports the standard library of the venv's interpreter. The loader
finds that library by its soname in the system folders first, and there it may be another build than the venv's:
here the venv is made from pyenv's 3.11.7 while Debian's package ``libpython3.11`` is 3.11.2, and the stub then
dies in ``model.py initialize`` with ``AttributeError: '_thread.RLock' object has no attribute
'_recursion_count'`` (3.11.7's ``multiprocessing`` on 3.11.2's C core), so the model never loads. Hence
:func:`use_own_libpython`: it puts this interpreter's ``LIBDIR`` (``sysconfig``) first on ``LD_LIBRARY_PATH``
when the shared library is there; PyTriton passes its environment on to ``tritonserver`` and so to the stub. An
interpreter built without ``--enable-shared`` has no such library and the system's is used: it must then be the
same 3.11 release. If the stub still cannot start, Triton's log (this process's output, the run's
``*-server.log``) says why, the model never becomes ready and ``run_core.py`` reports the Triton rows as
missing.

Usage (in the PyTriton venv)::

    .bench/pytriton-venv/bin/python bench/pytriton_launcher.py examples/models/iris/1/model.onnx \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 [--model-name iris] [--no-dynamic-batching]
        [--max-queue-delay-us 0] [--instances 1] [--no-batch-decorator] [--ort-threads 1] [--tensor-store]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

MAX_BATCH_SIZE = 64  # as examples/models/iris/config.pbtxt (and digits_mlp's)
ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class Signature:
    """The model's tensors as PyTriton declares them: per-row shapes, the batch dimension left out."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    row_outputs: frozenset[str]  # ONNX outputs of shape [batch], declared [1] and reshaped to [batch, 1]


def session(model_path: Path, threads: int = 1) -> ort.InferenceSession:
    """The ONNX session, with modelserve's default options for the onnx runtime (threads: intra-op threads)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def signature(sess: ort.InferenceSession) -> Signature:
    """Declare the ONNX graph's inputs and outputs without their first (batch) dimension. For iris: input-0
    FP32 [4], label INT64 [1] (the graph's [batch]: PyTriton has no reshape), probabilities FP32 [3]."""

    def tensor(arg: Any) -> Tensor:
        if arg.type not in ONNX_DTYPES:
            raise SystemExit(f"{arg.name}: ONNX type {arg.type} is not supported by this launcher")
        dims = tuple(d if isinstance(d, int) else -1 for d in arg.shape[1:]) or (1,)
        return Tensor(name=arg.name, dtype=ONNX_DTYPES[arg.type], shape=dims)

    return Signature(
        inputs=[tensor(arg) for arg in sess.get_inputs()],
        outputs=[tensor(arg) for arg in sess.get_outputs()],
        row_outputs=frozenset(arg.name for arg in sess.get_outputs() if len(arg.shape) == 1),
    )


def make_infer(sess: ort.InferenceSession, sig: Signature, batched: bool = True) -> Any:
    """The inference function PyTriton binds. batched: with PyTriton's @batch, which stacks the requests Triton
    hands over at once into one batch of rows and splits the outputs again; without it, the function gets the
    list of requests and runs each on its own (batch-1 requests: one row each)."""
    names = [t.name for t in sig.outputs]

    def run(inputs: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        results = sess.run(names, inputs)
        return {
            name: value.reshape(-1, 1) if name in sig.row_outputs else value
            for name, value in zip(names, results, strict=True)
        }

    if batched:

        @batch  # type: ignore[untyped-decorator]
        def infer_batch(**inputs: NDArray[Any]) -> dict[str, NDArray[Any]]:
            return run(inputs)

        return infer_batch

    def infer_requests(requests: list[Any]) -> list[dict[str, NDArray[Any]]]:
        return [run({name: request[name] for name in request}) for request in requests]

    return infer_requests


def use_own_libpython() -> str | None:
    """Put this interpreter's shared libpython first on LD_LIBRARY_PATH (for the backend stub, see above).
    Returns the folder, or None when this interpreter has no shared library (then the system's is used)."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not (Path(libdir) / soname).is_file():
        return None
    current = os.environ.get("LD_LIBRARY_PATH", "")
    os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir
    return str(libdir)


def interrupt(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP: behave as Ctrl+C, which Triton.serve() handles by stopping Triton cleanly."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("model", type=Path, help="the ONNX file (examples/models/iris/1/model.onnx)")
    p.add_argument("--model-name", default="iris")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--no-dynamic-batching", action="store_true", help="turn off PyTriton's default dynamic batcher")
    p.add_argument("--max-queue-delay-us", type=int, default=0, help="dynamic batcher's queue delay (default 0)")
    p.add_argument("--instances", type=int, default=1, help="model instances, one function and session each")
    p.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads per session")
    p.add_argument("--no-batch-decorator", action="store_true", help="bind the function without PyTriton's @batch")
    p.add_argument("--tensor-store", action="store_true", help="keep PyTriton's default shared-memory tensor transport")
    args = p.parse_args(argv)
    if args.instances < 1 or args.ort_threads < 1 or args.max_queue_delay_us < 0:
        p.error("--instances and --ort-threads must be at least 1, --max-queue-delay-us at least 0")
    if not args.model.is_file():
        raise SystemExit(f"missing {args.model} (run .venv/bin/python examples/build_models.py)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)

    if args.tensor_store:
        os.environ.pop("PYTRITON_NO_TENSORSTORE", None)
    else:
        os.environ["PYTRITON_NO_TENSORSTORE"] = "1"  # before Triton starts: the stub inherits its environment
    libdir = use_own_libpython()
    logging.getLogger("pytriton_launcher").info(
        "libpython for the Python backend stub: %s; tensors %s",
        libdir or "the system's (this interpreter has no shared one)",
        "in PyTriton's shared-memory tensor store" if args.tensor_store else "serialised in the ZeroMQ messages",
    )
    logging.getLogger("pytriton_launcher").info(
        "dynamic batching %s, %d instance(s), %d onnxruntime thread(s) each, @batch %s",
        "off" if args.no_dynamic_batching else f"on (max queue delay {args.max_queue_delay_us} us)",
        args.instances,
        args.ort_threads,
        "off" if args.no_batch_decorator else "on",
    )
    sessions = [session(args.model, args.ort_threads) for _ in range(args.instances)]
    sig = signature(sessions[0])
    config = ModelConfig(max_batch_size=MAX_BATCH_SIZE)
    if args.no_dynamic_batching:
        config.batcher = None  # PyTriton writes a dynamic_batching block only for a DynamicBatcher
    else:
        config.batcher = DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)
    triton_config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        exit_timeout_secs=5,
    )
    # perf_analyzer reads the statistics API; every other endpoint PyTriton protects stays behind its token.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=triton_config, security_config=security) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=[make_infer(sess, sig, batched=not args.no_batch_decorator) for sess in sessions],
            inputs=sig.inputs,
            outputs=sig.outputs,
            config=config,
        )
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
