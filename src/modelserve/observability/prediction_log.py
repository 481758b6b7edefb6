"""The sampled prediction log: a fraction of requests, with inputs, outputs and latency, written to files.

Per model folder ``<directory>/<model>/``: JSON Lines in ``predictions.jsonl``, rotated at
``max_file_bytes`` to ``predictions.<UTC time>.<n>.jsonl``, keeping at most ``max_files`` files per model
(the oldest rotated file is deleted). With the ``parquet`` format (the ``parquet`` extra: pyarrow) records
are gathered and written as one Parquet file per ``_PARQUET_ROWS`` records or per ``_PARQUET_FLUSH_S``
seconds, under the same count cap.

Writes happen on the log's own thread, fed by a bounded queue: a slow, full or failing disk never blocks or
fails inference. Records that find the queue full are dropped, records the destination refuses are
failed; both are counted (``modelserve_prediction_log_records_total{outcome}``) and a failing destination
is logged at most once a minute.

A tensor larger than ``max_inline_bytes`` is logged as a summary: shape, datatype, sha256 of its bytes
and min/max/mean for numbers. Request parameters (``user_id``, experiment keys, ...) are logged as given,
scalars only, at most ``_MAX_PARAMETERS`` of them with strings cut to ``_MAX_PARAMETER_CHARS``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from modelserve.observability.handoff import Handoff
from modelserve.observability.observation import Observation

__all__ = ["LogCounts", "PredictionLog", "record_of"]

log = logging.getLogger(__name__)

_POLL_S = 0.1
_MAX_PARAMETERS = 32
_MAX_PARAMETER_CHARS = 256
_FAILURE_LOG_INTERVAL_S = 60.0
_PARQUET_ROWS = 1000
_PARQUET_FLUSH_S = 10.0
_ACTIVE = "predictions"


@dataclass(slots=True)
class LogCounts:
    written: int = 0
    dropped: int = 0
    failed: int = 0


def _tensor(array: np.ndarray, max_inline_bytes: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"datatype": str(array.dtype), "shape": list(array.shape)}
    if array.dtype.kind == "O":
        size = sum(len(v) if isinstance(v, bytes | str) else 8 for v in array.reshape(-1))
        if size <= max_inline_bytes:
            entry["data"] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)
            ]
        else:
            digest = hashlib.sha256()
            for v in array.reshape(-1):
                digest.update(v if isinstance(v, bytes) else str(v).encode())
            entry["sha256"] = digest.hexdigest()
        return entry
    if array.nbytes <= max_inline_bytes:
        entry["data"] = array.reshape(-1).tolist()
        return entry
    entry["sha256"] = hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()
    if array.size and array.dtype.kind in "fiub":
        entry["min"] = array.min().item()
        entry["max"] = array.max().item()
        entry["mean"] = float(array.mean(dtype=np.float64))
    return entry


def _parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in list(parameters.items())[:_MAX_PARAMETERS]:
        if isinstance(value, str):
            out[key[:_MAX_PARAMETER_CHARS]] = value[:_MAX_PARAMETER_CHARS]
        elif isinstance(value, bool | int | float):
            out[key[:_MAX_PARAMETER_CHARS]] = value
    return out


def record_of(observation: Observation, max_inline_bytes: int) -> dict[str, Any]:
    """The logged form of one request (what a JSONL line holds)."""
    return {
        "time": datetime.fromtimestamp(observation.time_ms / 1000, tz=UTC).isoformat(timespec="milliseconds"),
        "request_id": observation.request_id,
        "model": observation.model,
        "version": observation.version,
        "requested_version": observation.requested_version,
        "latency_ms": round(observation.latency_ns / 1e6, 4),
        "transport": observation.context.transport,
        "principal": observation.context.principal,
        "tenant": observation.context.tenant,
        "headers": dict(observation.context.headers),
        "parameters": _parameters(observation.parameters),
        "inputs": {name: _tensor(a, max_inline_bytes) for name, a in observation.inputs.items()},
        "outputs": {name: _tensor(a, max_inline_bytes) for name, a in observation.outputs.items()},
    }


class _JsonLinesFiles:
    """One model's rotating JSONL files."""

    def __init__(self, folder: Path, max_file_bytes: int, max_files: int) -> None:
        self._folder = folder
        self._max_file_bytes = max_file_bytes
        self._max_files = max_files
        self._file: IO[bytes] | None = None
        self._size = 0
        self._rotations = 0

    def write(self, line: bytes) -> None:
        if self._file is None:
            self._folder.mkdir(parents=True, exist_ok=True)
            self._file = (self._folder / f"{_ACTIVE}.jsonl").open("ab")
            self._size = self._file.tell()
        if self._size and self._size + len(line) > self._max_file_bytes:
            self._rotate()
            assert self._file is not None
        self._file.write(line)
        self._file.flush()  # a reader (or a crash) sees whole lines
        self._size += len(line)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._rotations += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        (self._folder / f"{_ACTIVE}.jsonl").rename(self._folder / f"{_ACTIVE}.{stamp}.{self._rotations:06d}.jsonl")
        _keep_newest(self._folder, f"{_ACTIVE}.*.jsonl", self._max_files - 1)
        self._file = (self._folder / f"{_ACTIVE}.jsonl").open("ab")
        self._size = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _ParquetFiles:
    """One model's Parquet files: a file per batch of records."""

    def __init__(self, folder: Path, max_files: int) -> None:
        self._folder = folder
        self._max_files = max_files
        self._pending: list[dict[str, Any]] = []
        self._first_at = 0.0
        self._written = 0

    def write(self, record: dict[str, Any]) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        # Tensors and parameters go in as JSON text: their shapes differ between models and requests.
        self._pending.append(
            {**record, **{k: orjson.dumps(record[k]).decode() for k in ("headers", "parameters", "inputs", "outputs")}}
        )
        if len(self._pending) >= _PARQUET_ROWS:
            self.flush()

    def due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._first_at >= _PARQUET_FLUSH_S

    def flush(self) -> None:
        if not self._pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self._pending = self._pending, []
        self._folder.mkdir(parents=True, exist_ok=True)
        self._written += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        pq.write_table(pa.Table.from_pylist(rows), self._folder / f"{_ACTIVE}.{stamp}.{self._written:06d}.parquet")
        _keep_newest(self._folder, f"{_ACTIVE}.*.parquet", self._max_files)

    def close(self) -> None:
        self.flush()


def _keep_newest(folder: Path, pattern: str, keep: int) -> None:
    # Names sort by time (UTC stamp, then a counter), so the oldest come first.
    for old in sorted(folder.glob(pattern))[: max(0, len(list(folder.glob(pattern))) - keep)]:
        old.unlink(missing_ok=True)


class PredictionLog:
    """Samples requests and writes them on its own thread; ``start()`` before use, ``stop()`` at shutdown."""

    def __init__(
        self,
        directory: Path,
        *,
        enabled: bool,
        sample_rate: float,
        model_sample_rates: Mapping[str, float],
        parquet: bool,
        max_file_bytes: int,
        max_files: int,
        max_inline_bytes: int,
        queue_size: int,
    ) -> None:
        self._directory = directory
        self._enabled = enabled
        self._sample_rate = sample_rate
        self._model_sample_rates = dict(model_sample_rates)
        self._parquet = parquet
        self._max_file_bytes = max_file_bytes
        self._max_files = max_files
        self._max_inline_bytes = max_inline_bytes
        self._handoff: Handoff[Observation] = Handoff(queue_size, _POLL_S)
        self._files: dict[str, _JsonLinesFiles | _ParquetFiles] = {}
        self._counts: dict[str, LogCounts] = {}
        self._counts_lock = threading.Lock()
        self._last_failure_log = -_FAILURE_LOG_INTERVAL_S
        self._started = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    # -- request path -----------------------------------------------------------------------------

    def wants(self, model: str, version: str) -> bool:
        if not self._enabled:
            return False
        rate = self._model_sample_rates.get(model, self._sample_rate)
        return rate > 0 and (rate >= 1.0 or random.random() < rate)  # noqa: S311 - sampling, not security

    def submit(self, observation: Observation) -> None:
        if not self._handoff.offer(observation):
            self._count(observation.model, "dropped")

    # -- readers ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, LogCounts]:
        with self._counts_lock:
            return {model: LogCounts(c.written, c.dropped, c.failed) for model, c in self._counts.items()}

    def _count(self, model: str, outcome: str) -> None:
        with self._counts_lock:
            counts = self._counts.setdefault(model, LogCounts())
            setattr(counts, outcome, getattr(counts, outcome) + 1)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._enabled and not self._started:
            if self._parquet:
                import pyarrow  # noqa: F401 - fail at start, with the fix, rather than on the first record
            self._started = True
            self._handoff.start("prediction-log", self._handle, self._flush_due)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Writes what is queued (within ``timeout_s``) and closes the files. A writer stuck on a hung
        destination is left behind (it is a daemon thread) rather than holding up shutdown."""
        if not self._started:
            return
        self._started = False
        if not self._handoff.stop(timeout_s):
            log.warning("prediction log: the writer is stuck on its destination; records still queued are lost")
            return
        for files in self._files.values():
            try:
                files.close()
            except OSError as exc:
                self._failed("closing", exc)

    # -- the writer thread ------------------------------------------------------------------------

    def _handle(self, batch: list[Observation]) -> None:
        for observation in batch:
            self._write(observation)
        self._flush_due()

    def _write(self, observation: Observation) -> None:
        model = observation.model
        try:
            record = record_of(observation, self._max_inline_bytes)
            files = self._files.get(model)
            if files is None:
                folder = self._directory / model
                files = self._files[model] = (
                    _ParquetFiles(folder, self._max_files)
                    if self._parquet
                    else _JsonLinesFiles(folder, self._max_file_bytes, self._max_files)
                )
            if isinstance(files, _ParquetFiles):
                files.write(record)
            else:
                files.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        except (OSError, ValueError, TypeError) as exc:
            self._count(model, "failed")
            self._failed(f"writing a record of model {model}", exc)
            self._files.pop(model, None)  # reopen next time: the destination may come back
            return
        self._count(model, "written")

    def _flush_due(self) -> None:
        for model, files in list(self._files.items()):
            if isinstance(files, _ParquetFiles) and files.due():
                try:
                    files.flush()
                except (OSError, ValueError) as exc:
                    self._failed(f"writing Parquet for model {model}", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            log.warning(
                "prediction log: %s failed (%s); inference goes on, failed records are counted in "
                'modelserve_prediction_log_records_total{outcome="failed"}',
                what,
                exc,
            )
