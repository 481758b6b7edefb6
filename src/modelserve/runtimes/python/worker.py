"""The worker process: loads one ``model.py`` and answers infer calls over a pipe, one at a time.

Started by :mod:`modelserve.runtimes.python.process` as ``python -m modelserve.runtimes.python.worker FD``
where FD is its end of a socket pair. It exits when the pipe closes, so an orphaned worker never lingers.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from modelserve.runtimes.python.api import ModelContext
from modelserve.runtimes.python.wire import receive_message, send_message


def _load_model(header: dict[str, Any]) -> Any:
    version_dir = Path(header["version_dir"])
    path = version_dir / header["model_filename"]
    module_name = f"modelserve_user_model_{header['model_name']}_{header['version']}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {header['model_filename']}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    model_class = getattr(module, "Model", None)
    if model_class is None:
        raise AttributeError(f"{header['model_filename']} defines no class named 'Model'")
    model = model_class()
    if not callable(getattr(model, "infer", None)):
        raise AttributeError("class Model has no infer(self, inputs) method")
    load = getattr(model, "load", None)
    if callable(load):
        load(
            ModelContext(
                name=header["model_name"],
                version=header["version"],
                version_dir=version_dir,
                parameters=dict(header["parameters"]),
            )
        )
    return model


def _describe(exc: BaseException) -> str:
    # The user's own message; the traceback goes to the server log, never to the client.
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def serve(conn: Connection) -> None:
    header, _ = receive_message(conn)
    try:
        model = _load_model(header)
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        send_message(conn, {"ok": False, "error": _describe(exc)})
        return
    send_message(conn, {"ok": True})
    while True:
        try:
            request, inputs = receive_message(conn)
        except EOFError:
            break
        if request.get("op") == "unload":
            break
        try:
            outputs = model.infer(inputs)
            if not isinstance(outputs, dict):
                raise TypeError(f"infer() must return a dict of numpy arrays, got {type(outputs).__name__}")
            import numpy as np

            wanted = request.get("outputs") or list(outputs)
            missing = [name for name in wanted if name not in outputs]
            if missing:
                raise KeyError(f"infer() returned no output named {', '.join(repr(m) for m in missing)}")
            result = {name: np.asarray(outputs[name]) for name in wanted}
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            send_message(conn, {"ok": False, "error": _describe(exc)})
            continue
        send_message(conn, {"ok": True}, result)
    unload = getattr(model, "unload", None)
    if callable(unload):
        unload()


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
