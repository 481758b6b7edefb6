"""A load generator cheap enough to drive a server far past its capacity from one core.

Used by the overload benchmark (``bench/run_overload.py``, which imports it from the repository root) and
by its short version in the tests (``tests/transport/test_overload.py``); it imports nothing from either.

Two load shapes, each over REST or gRPC:

* **closed loop** (:meth:`Shape.closed`): ``concurrency`` callers, each sending its next request the
  moment the last one is answered, refused or failed (no back-off: the worst client a server meets);
* **paced** (:meth:`Shape.paced`): ``rate_per_s`` requests a second on a fixed schedule, at most
  ``max_in_flight`` at once (a tick that finds none free waits and is counted as ``late``). The light
  client beside a storm is ``paced(100, max_in_flight=1)``: one request every 10 ms on its own connection.

Why it is cheap. REST: one ``asyncio.Protocol`` per keep-alive HTTP/1.1 connection (uvloop), one prebuilt
request byte string written as it is, and a reply parsed only for its status line, ``Content-Length``,
``Retry-After`` and ``Connection: close``; the closed loop re-sends from the protocol's callback, so a
request costs no task, future or coroutine (against a stub, one core answers 60-90k requests/s; the
benchmark measures and prints it). httpx was rejected: building and parsing each request as Python
objects costs the client more than a refusal should cost the server, so it would measure itself. gRPC: ``grpc.aio`` with raw bytes in and out (no protobuf
encoding or decoding) and one channel per :data:`CALLERS_PER_CHANNEL` callers; each channel gets its
own subchannel pool, or grpcio would multiplex every channel to one target over one HTTP/2 connection.

Counting. An answer counts if it arrives in ``[measure_from, end_at]`` of its :class:`Schedule` (earlier
ones are warm-up). Rejections are 503/429 over REST and UNAVAILABLE/RESOURCE_EXHAUSTED over gRPC, each
noting whether the server sent its retry hint (``Retry-After`` / ``grpc-retry-pushback-ms``); a request
unanswered after ``timeout_s`` is a timeout (its connection is dropped; gRPC: DEADLINE_EXCEEDED); every
other outcome is an error, by its status. At ``end_at`` the load stops at once: in-flight requests are
abandoned (connections aborted, calls cancelled), as clients that go away would.

Time is ``time.monotonic()`` throughout: one clock for every process on the machine, so a schedule made
in one process holds in another. The ``asyncio.sleep`` calls here are the load's own schedule (the next
paced send, the timeout sweep), never a wait for the server to reach some state.

One module on purpose (~700 lines): the REST and gRPC loads share the shapes, the schedule, the tally and
its recorder, and both users import one name. If it grows, the two transports' drivers are the seam.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import grpc.aio
import numpy as np
from tritonclient.grpc import service_pb2 as pb

__all__ = [
    "CALLERS_PER_CHANNEL",
    "ConnectedLoad",
    "Schedule",
    "Shape",
    "Tally",
    "Target",
    "connect",
    "health_target",
    "iris_target",
    "run",
]

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
LIVE_METHOD = "/inference.GRPCInferenceService/ServerLive"
PUSHBACK_KEY = "grpc-retry-pushback-ms"
REJECTED_HTTP = frozenset({503, 429})
REJECTED_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# grpcio multiplexes a channel's calls over one HTTP/2 connection; 64 callers a connection is what keeps
# its flow-control window and the server's per-connection stream limit out of the measurement.
CALLERS_PER_CHANNEL = 64
CONNECT_BATCH = 128  # connections opened at once: below the servers' listen backlog
CONNECT_TIMEOUT_S = 30.0
SWEEP_INTERVAL_S = 0.25  # how often the closed loop looks for requests past their timeout
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


@dataclass(frozen=True)
class Target:
    """Where the load goes and the one request it repeats.

    ``payload`` is, over REST, the whole HTTP/1.1 request (head and body) and, over gRPC, the serialized
    request message of ``grpc_method``.
    """

    transport: str  # "http" | "grpc"
    host: str
    port: int
    payload: bytes
    grpc_method: str = INFER_METHOD


def iris_target(
    transport: str, port: int, host: str = "127.0.0.1", model: str = "iris", outputs: Sequence[str] = ()
) -> Target:
    """One iris row, shape [1, 4] FP32: what both modelserve and MLServer (input ``[-1, 4]``) accept.

    REST sends a JSON tensor (MLServer has no binary tensor extension); gRPC sends raw_input_contents.
    ``outputs``: the outputs to ask for by name (none: the server's default), so that two servers whose
    outputs are named differently can be asked for the same work.
    """
    if transport == "http":
        document: dict[str, Any] = {
            "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]
        }
        if outputs:
            document["outputs"] = [{"name": name} for name in outputs]
        body = json.dumps(document, separators=(",", ":")).encode()
        head = (
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return Target("http", host, port, head.encode() + body)
    if transport == "grpc":
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.array([IRIS_ROW], np.float32).tobytes())
        for name in outputs:
            request.outputs.add(name=name)
        return Target("grpc", host, port, request.SerializeToString())
    raise ValueError(f"transport {transport!r}: expected 'http' or 'grpc'")


def health_target(transport: str, port: int, host: str = "127.0.0.1") -> Target:
    """The liveness probe a Kubernetes kubelet sends: REST ``GET /v2/health/live``, gRPC ``ServerLive``."""
    if transport == "http":
        return Target("http", host, port, f"GET /v2/health/live HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    if transport == "grpc":
        return Target("grpc", host, port, pb.ServerLiveRequest().SerializeToString(), LIVE_METHOD)
    raise ValueError(f"transport {transport!r}: expected 'http' or 'grpc'")


@dataclass(frozen=True)
class Shape:
    """How the load sends: a closed loop of ``concurrency`` callers, or paced at ``rate_per_s``."""

    concurrency: int = 0
    rate_per_s: float = 0.0
    max_in_flight: int = 1
    timeout_s: float = 10.0

    @classmethod
    def closed(cls, concurrency: int, timeout_s: float = 10.0) -> Shape:
        if concurrency < 1:
            raise ValueError(f"closed loop: concurrency {concurrency}, expected at least 1")
        return cls(concurrency=concurrency, timeout_s=timeout_s)

    @classmethod
    def paced(cls, rate_per_s: float, max_in_flight: int = 1, timeout_s: float = 10.0) -> Shape:
        if rate_per_s <= 0 or max_in_flight < 1:
            raise ValueError(f"paced: rate {rate_per_s}/s, {max_in_flight} in flight; expected both positive")
        return cls(rate_per_s=rate_per_s, max_in_flight=max_in_flight, timeout_s=timeout_s)

    @property
    def is_closed(self) -> bool:
        return self.concurrency > 0

    @property
    def connections(self) -> int:
        """REST connections (or gRPC callers) opened before the load starts."""
        return self.concurrency if self.is_closed else self.max_in_flight


@dataclass(frozen=True)
class Schedule:
    """Absolute times on ``time.monotonic()``: sending starts, counting starts, everything stops."""

    start_at: float
    measure_from: float
    end_at: float

    @classmethod
    def starting_in(cls, delay_s: float, warmup_s: float, measure_s: float) -> Schedule:
        start = time.monotonic() + delay_s
        return cls(start, start + warmup_s, start + warmup_s + measure_s)

    @property
    def window_s(self) -> float:
        return self.end_at - self.measure_from


@dataclass
class Tally:
    """What the answers in one measurement window were. Latencies in seconds, from send to answer."""

    window_s: float
    ok_s: list[float] = field(default_factory=list)
    rejected_s: list[float] = field(default_factory=list)
    rejected_with_hint: int = 0
    timeouts: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # status or cause -> count
    error_samples: dict[str, str] = field(default_factory=dict)  # gRPC: one message per error kind
    late: int = 0  # paced: ticks that found every in-flight place taken

    @classmethod
    def merged(cls, tallies: list[Tally]) -> Tally:
        """One tally for loads run side by side over the same window (the window of the first)."""
        out = cls(tallies[0].window_s if tallies else 0.0)
        for t in tallies:
            out.ok_s += t.ok_s
            out.rejected_s += t.rejected_s
            out.rejected_with_hint += t.rejected_with_hint
            out.timeouts += t.timeouts
            out.errors += t.errors
            out.error_samples = {**t.error_samples, **out.error_samples}
            out.late += t.late
        return out

    @property
    def goodput_per_s(self) -> float:
        return len(self.ok_s) / self.window_s if self.window_s > 0 else 0.0

    @property
    def rejected_per_s(self) -> float:
        return len(self.rejected_s) / self.window_s if self.window_s > 0 else 0.0

    @property
    def answered_per_s(self) -> float:
        """Every answer, good or bad, a second: what the generator kept up with."""
        n = len(self.ok_s) + len(self.rejected_s) + sum(self.errors.values())
        return n / self.window_s if self.window_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def every_rejection_has_hint(self) -> bool:
        return self.rejected_with_hint == len(self.rejected_s)

    @staticmethod
    def percentile_ms(latencies_s: list[float], q: float) -> float | None:
        return float(np.percentile(latencies_s, q) * 1e3) if latencies_s else None


class _Recorder:
    """Counts an answer into the tally when it arrives inside the schedule's measurement window."""

    def __init__(self, schedule: Schedule) -> None:
        self.tally = Tally(schedule.window_s)
        self._from = schedule.measure_from
        self._to = schedule.end_at

    def counts(self, now: float) -> bool:
        return self._from <= now <= self._to

    def http(self, started: float, status: int, has_hint: bool) -> None:
        now = time.monotonic()
        if not self._from <= now <= self._to:
            return
        if status == 200:
            self.tally.ok_s.append(now - started)
        elif status in REJECTED_HTTP:
            self.tally.rejected_s.append(now - started)
            self.tally.rejected_with_hint += has_hint
        else:
            self.tally.errors[f"HTTP {status}"] += 1

    def grpc_ok(self, started: float) -> None:
        now = time.monotonic()
        if self._from <= now <= self._to:
            self.tally.ok_s.append(now - started)

    def grpc_failed(self, started: float, error: grpc.aio.AioRpcError) -> None:
        now = time.monotonic()
        if not self._from <= now <= self._to:
            return
        code = error.code()
        if code in REJECTED_GRPC:
            self.tally.rejected_s.append(now - started)
            self.tally.rejected_with_hint += any(key == PUSHBACK_KEY for key, _ in error.trailing_metadata() or ())
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            self.tally.timeouts += 1
        else:
            self.tally.errors[code.name] += 1
            self.tally.error_samples.setdefault(code.name, str(error.details())[:200])

    def error(self, cause: str) -> None:
        if self.counts(time.monotonic()):
            self.tally.errors[cause] += 1

    def timeout(self) -> None:
        if self.counts(time.monotonic()):
            self.tally.timeouts += 1

    def late(self) -> None:
        if self.counts(time.monotonic()):
            self.tally.late += 1


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# -- REST -----------------------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    pass


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining).

    ``on_answer(conn, started, status, has_hint)`` and ``on_lost(conn, started)`` are called from the
    event loop; ``started`` is the send time of the request they end (0.0: none was outstanding).
    """

    def __init__(
        self,
        payload: bytes,
        on_answer: Callable[[_HttpConnection, float, int, bool], None],
        on_lost: Callable[[_HttpConnection, float], None],
    ) -> None:
        self._payload = payload
        self._on_answer = on_answer
        self._on_lost = on_lost
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0  # 0.0 when idle
        self.is_closing = False  # the server said Connection: close, or we aborted it
        self.lost_because = "connection closed"  # what a request outstanding when it closes counts as

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def send(self) -> float:
        assert self.transport is not None
        self.sent_at = started = time.monotonic()
        self.transport.write(self._payload)
        return started

    def abort(self) -> None:
        self.is_closing = True
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0 or b"\r\ntransfer-encoding:" in head:
            # Every reply of both servers carries a Content-Length; anything else is a finding, not a load.
            self._buffer.clear()
            self.lost_because = "reply without Content-Length"
            self.abort()
            return
        line_end = head.find(b"\r\n", at + 17)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        self.is_closing = self.is_closing or b"\r\nconnection: close" in head
        started, self.sent_at = self.sent_at, 0.0
        self._on_answer(self, started, int(head[9:12]), b"\r\nretry-after:" in head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closing = True
        started, self.sent_at = self.sent_at, 0.0
        self._on_lost(self, started)


async def _open_http(
    target: Target,
    count: int,
    on_answer: Callable[[_HttpConnection, float, int, bool], None],
    on_lost: Callable[[_HttpConnection, float], None],
) -> list[_HttpConnection]:
    loop = asyncio.get_running_loop()

    async def one() -> _HttpConnection:
        _, protocol = await loop.create_connection(
            lambda: _HttpConnection(target.payload, on_answer, on_lost), target.host, target.port
        )
        return protocol

    opened: list[_HttpConnection] = []
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        for first in range(0, count, CONNECT_BATCH):
            opened += await asyncio.gather(*(one() for _ in range(min(CONNECT_BATCH, count - first))))
    return opened


class _HttpClosedLoop:
    """``concurrency`` connections, each re-sending from its answer callback; a lost connection (the
    server closed it, or a timeout dropped it) is replaced at once, so the load keeps its size."""

    def __init__(self, target: Target, shape: Shape) -> None:
        self._target = target
        self._shape = shape
        self._connections: set[_HttpConnection] = set()
        self._recorder: _Recorder | None = None  # set while running
        self._lost_one = asyncio.Event()

    async def open(self) -> None:
        self._connections.update(await _open_http(self._target, self._shape.concurrency, self._answered, self._lost))

    def _answered(self, conn: _HttpConnection, started: float, status: int, has_hint: bool) -> None:
        if self._recorder is None:
            return
        self._recorder.http(started, status, has_hint)
        if not conn.is_closing:
            conn.send()

    def _lost(self, conn: _HttpConnection, started: float) -> None:
        self._connections.discard(conn)
        if self._recorder is None:
            return
        if started:
            self._recorder.error(conn.lost_because)
        self._lost_one.set()

    async def _keep_connected(self, recorder: _Recorder) -> None:
        while True:
            await self._lost_one.wait()
            self._lost_one.clear()
            missing = self._shape.concurrency - len(self._connections)
            if missing <= 0:
                continue
            try:
                opened = await _open_http(self._target, missing, self._answered, self._lost)
            except (OSError, TimeoutError) as exc:
                recorder.error(f"connect: {type(exc).__name__}")
                await asyncio.sleep(SWEEP_INTERVAL_S)
                self._lost_one.set()
                continue
            self._connections.update(opened)
            for conn in opened:
                conn.send()

    async def _drop_timed_out(self, recorder: _Recorder) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            oldest = time.monotonic() - self._shape.timeout_s
            for conn in [c for c in self._connections if 0.0 < c.sent_at < oldest]:
                recorder.timeout()
                conn.sent_at = 0.0  # its loss is the timeout's, not an error as well
                conn.abort()

    async def run(self, schedule: Schedule) -> Tally:
        recorder = _Recorder(schedule)
        await _sleep_until(schedule.start_at)
        self._recorder = recorder
        for conn in list(self._connections):
            conn.send()
        if len(self._connections) < self._shape.concurrency:  # some closed while waiting to start
            self._lost_one.set()
        try:
            await _until(schedule.end_at, [self._keep_connected(recorder), self._drop_timed_out(recorder)])
        finally:
            self._recorder = None
        return recorder.tally

    async def close(self) -> None:
        self._recorder = None
        for conn in list(self._connections):
            conn.abort()
        await asyncio.sleep(0)  # let connection_lost run


class _HttpPool:
    """Keep-alive connections handed out one request at a time (paced load); most recently used first,
    so the few a paced load needs stay warm and the rest may be closed by the server's idle timeout."""

    def __init__(self, target: Target, shape: Shape) -> None:
        self._target = target
        self._shape = shape
        self._idle: list[_HttpConnection] = []
        self._waiters: dict[_HttpConnection, asyncio.Future[tuple[int, bool]]] = {}

    async def open(self) -> None:
        self._idle = await _open_http(self._target, self._shape.max_in_flight, self._answered, self._lost)

    def _answered(self, conn: _HttpConnection, started: float, status: int, has_hint: bool) -> None:
        waiter = self._waiters.pop(conn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result((status, has_hint))

    def _lost(self, conn: _HttpConnection, started: float) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
        waiter = self._waiters.pop(conn, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(_ConnectionLost(conn.lost_because))

    async def request(self, recorder: _Recorder) -> None:
        while self._idle and self._idle[-1].is_closing:
            self._idle.pop()
        if self._idle:
            conn = self._idle.pop()
        else:
            try:
                (conn,) = await _open_http(self._target, 1, self._answered, self._lost)
            except (OSError, TimeoutError) as exc:
                recorder.error(f"connect: {type(exc).__name__}")
                return
        waiter: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._waiters[conn] = waiter
        started = conn.send()
        try:
            async with asyncio.timeout(self._shape.timeout_s):
                status, has_hint = await waiter
        except TimeoutError:
            recorder.timeout()
            conn.abort()
            return
        except _ConnectionLost as lost:
            recorder.error(str(lost))
            return
        except asyncio.CancelledError:
            conn.abort()  # its answer would arrive for a request nobody waits for
            raise
        recorder.http(started, status, has_hint)
        if not conn.is_closing:
            self._idle.append(conn)

    async def close(self) -> None:
        for conn in [*self._idle, *self._waiters]:
            conn.abort()
        await asyncio.sleep(0)


# -- gRPC -----------------------------------------------------------------------------------------------


def _channel(target: Target) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"{target.host}:{target.port}",
        # Each channel its own connection: without a local pool, channels to one target share a subchannel.
        options=[("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)],
    )


class _GrpcLoad:
    """Closed-loop callers (one coroutine each) or a paced sender, over ceil(n / 64) channels."""

    def __init__(self, target: Target, shape: Shape) -> None:
        self._target = target
        self._shape = shape
        self._channels: list[grpc.aio.Channel] = []
        self._methods: list[Any] = []

    async def open(self) -> None:
        count = max(1, math.ceil(self._shape.connections / CALLERS_PER_CHANNEL))
        self._channels = [_channel(self._target) for _ in range(count)]
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(ch.channel_ready() for ch in self._channels))
        # No serializers: the prebuilt request goes out as it is and the reply stays bytes, never decoded.
        self._methods = [ch.unary_unary(self._target.grpc_method) for ch in self._channels]

    async def _call(self, method: Any, recorder: _Recorder) -> None:
        started = time.monotonic()
        try:
            await method(self._target.payload, timeout=self._shape.timeout_s)
        except grpc.aio.AioRpcError as exc:
            recorder.grpc_failed(started, exc)
        else:
            recorder.grpc_ok(started)

    async def _caller(self, method: Any, recorder: _Recorder, end_at: float) -> None:
        while time.monotonic() < end_at:
            await self._call(method, recorder)

    async def run(self, schedule: Schedule) -> Tally:
        recorder = _Recorder(schedule)
        await _sleep_until(schedule.start_at)
        if self._shape.is_closed:
            coroutines = [
                self._caller(self._methods[i // CALLERS_PER_CHANNEL], recorder, schedule.end_at)
                for i in range(self._shape.concurrency)
            ]
            await _until(schedule.end_at, coroutines)
        else:
            methods = _cycle(self._methods)
            await _paced(self._shape, schedule, recorder, lambda: self._call(next(methods), recorder))
        return recorder.tally

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels))


def _cycle(items: list[Any]) -> Iterator[Any]:
    while True:
        yield from items


# -- shared drivers -------------------------------------------------------------------------------------


async def _until(end_at: float, coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines side by side and cancel whatever is left of them at ``end_at``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + max(0.0, end_at - time.monotonic())):
            async with asyncio.TaskGroup() as group:
                for coroutine in coroutines:
                    group.create_task(coroutine)
    except TimeoutError:
        pass


async def _paced(shape: Shape, schedule: Schedule, recorder: _Recorder, request: Callable[[], Awaitable[None]]) -> None:
    """Start ``request()`` every 1/rate s from ``start_at``, at most ``max_in_flight`` at once."""
    interval_s = 1.0 / shape.rate_per_s
    places = asyncio.Semaphore(shape.max_in_flight)

    async def one() -> None:
        try:
            await request()
        finally:
            places.release()

    async def ticks() -> None:
        async with asyncio.TaskGroup() as group:
            tick = 0
            while (due := schedule.start_at + tick * interval_s) < schedule.end_at:
                await _sleep_until(due)
                if places.locked():
                    recorder.late()
                await places.acquire()
                group.create_task(one())
                tick += 1

    await _until(schedule.end_at, [ticks()])


# -- entry points ---------------------------------------------------------------------------------------


class ConnectedLoad:
    """What :func:`connect` yields: connections open, waiting for :meth:`run`."""

    def __init__(self, impl: _HttpClosedLoop | _HttpPool | _GrpcLoad, shape: Shape) -> None:
        self._impl = impl
        self._shape = shape

    async def run(self, schedule: Schedule) -> Tally:
        """Send from ``schedule.start_at`` to ``end_at`` and return what was answered in the window.

        Returns at ``end_at`` (sleeping until ``start_at`` first); in-flight requests are abandoned.
        """
        if isinstance(self._impl, _HttpPool):
            recorder = _Recorder(schedule)
            await _sleep_until(schedule.start_at)
            pool = self._impl
            await _paced(self._shape, schedule, recorder, lambda: pool.request(recorder))
            return recorder.tally
        return await self._impl.run(schedule)


@asynccontextmanager
async def connect(target: Target, shape: Shape) -> AsyncIterator[ConnectedLoad]:
    """Open the load's connections (bounded by CONNECT_TIMEOUT_S); close them all on exit.

    Async, for one event loop. Raises OSError or TimeoutError when the server cannot be reached.
    """
    impl: _HttpClosedLoop | _HttpPool | _GrpcLoad
    if target.transport == "grpc":
        impl = _GrpcLoad(target, shape)
    else:
        impl = _HttpClosedLoop(target, shape) if shape.is_closed else _HttpPool(target, shape)
    try:
        await impl.open()
        yield ConnectedLoad(impl, shape)
    finally:
        await impl.close()


def run(target: Target, shape: Shape, schedule_for: Callable[[], Schedule]) -> Tally:
    """Connect, take the schedule (``schedule_for()`` is called once connected, in a thread: it may
    block, e.g. on a pipe from another process), run, close. Blocking; starts its own event loop: REST
    on uvloop, gRPC on asyncio's own (the loop grpc.aio is built for)."""

    async def main() -> Tally:
        async with connect(target, shape) as load:
            schedule = await asyncio.to_thread(schedule_for)
            return await load.run(schedule)

    if target.transport == "http":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())
