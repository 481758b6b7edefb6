"""A real webhook endpoint for tests: an http.server on 127.0.0.1 in a thread that records every POST."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["WebhookReceiver", "serving_webhook"]


class WebhookReceiver:
    """A real webhook endpoint on 127.0.0.1: answers each POST with ``statuses[n]`` (the last one repeats),
    or holds it open until closed when the status is 0."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.hits: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    status = receiver.statuses[min(len(receiver.hits), len(receiver.statuses) - 1)]
                    receiver.hits.append((status, body))
                if status == 0:
                    receiver.closing.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def delivered(self, state: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for status, body in self.hits if 200 <= status < 300 and body["status"] == state]

    def count(self) -> int:
        with self.lock:
            return len(self.hits)


@contextmanager
def serving_webhook(statuses: list[int]) -> Iterator[WebhookReceiver]:
    """A started receiver, shut down (hanging POSTs released) on exit."""
    hook = WebhookReceiver(statuses)
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.closing.set()
        hook.server.shutdown()
        hook.server.server_close()
        hook.thread.join(10)
