"""Alert notifications POSTed as JSON to ``alerts.webhook_url``, off the evaluation path.

::

    AlertManager --notify()--> bounded queue --deliver()--> POST, retried with doubling backoff
                   (never waits;                (one at a time, in order: a resolved alert never
                    full: dropped, counted)       overtakes its firing one)

Each notification is tried at most ``webhook_max_attempts`` times; try n+1 waits
``min(webhook_backoff_s * 2**(n-1), 30)`` seconds after try n, and each try is bounded by
``webhook_timeout_s``. Any 2xx is delivered. 408, 429, 5xx, timeouts and connection errors are retried;
other answers (3xx, 4xx) are the receiver's or the configuration's fault, so retrying cannot help.
Every notification ends in ``modelserve_alert_notifications_total{outcome="sent"|"failed"}``.

The body is ``{"status": "firing"|"resolved", "alert": {...}}``, the alert as ``GET /v2/alerts`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson
from prometheus_client import Counter

__all__ = ["BACKOFF_CAP_S", "WebhookNotifier", "retry_delay_s"]

log = logging.getLogger("modelserve.alerts")

BACKOFF_CAP_S = 30.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a body-less GET: a webhook that redirects is misconfigured, and the
    # 3xx it answers is reported as such.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxies from the environment: nothing below app.py reads os.environ, and a webhook is usually an
# internal address a corporate proxy cannot reach.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _post(url: str, body: bytes, timeout_s: float) -> int:
    """POST ``body``; the HTTP status. Raises OSError (URLError, timeouts) when no answer came."""
    request = urllib.request.Request(  # noqa: S310 (the URL's scheme is checked in AlertSettings)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "modelserve-alerts"},
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def retry_delay_s(try_number: int, backoff_s: float) -> float:
    """Seconds to wait before try ``try_number`` (1-based; the first try does not wait)."""
    if try_number <= 1:
        return 0.0
    return float(min(backoff_s * 2.0 ** (try_number - 2), BACKOFF_CAP_S))


def _shown(url: str) -> str:
    # Webhook URLs often carry their secret in the path or query (Slack, Teams): logs show the host only.
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") + "/..."


def _is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class WebhookNotifier:
    """Sends notifications in the background. Call :meth:`start`, run :meth:`deliver` in a task,
    :meth:`notify` from the event loop, and :meth:`stop` when done. Not thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        max_attempts: int,
        backoff_s: float,
        queue_size: int,
        notifications: Counter,
    ) -> None:
        self._url = url
        self._shown_url = _shown(url)
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._queue_size = queue_size
        self._notifications = notifications
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._dropping = False

    def start(self) -> None:
        """Open the queue; notifications before this (or after :meth:`stop`) are dropped and counted."""
        self._queue = asyncio.Queue(self._queue_size)
        self._dropping = False

    def stop(self) -> None:
        """Close the queue; notifications still waiting are counted as failed. Never blocks: a try in
        flight is abandoned (its thread ends within ``timeout_s`` and keeps no one waiting)."""
        queue, self._queue = self._queue, None
        left = queue.qsize() if queue is not None else 0
        if left:
            self._notifications.labels(outcome="failed").inc(left)
            log.warning("alert webhook: %d notifications not sent (shutting down)", left)

    def notify(self, alert: dict[str, Any]) -> None:
        """Queue one alert document (its ``state`` says firing or resolved). Never waits; when the queue is
        full the notification is dropped, counted as failed, and logged (once per run of drops)."""
        try:
            if self._queue is None:
                raise asyncio.QueueFull
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._notifications.labels(outcome="failed").inc()
            if not self._dropping:
                log.warning(
                    "alert webhook: dropping notifications, %d are waiting for %s (alerts.webhook_queue_size); "
                    "the /v2/alerts endpoint still shows every alert",
                    self._queue_size,
                    self._shown_url,
                )
            self._dropping = True
        else:
            self._dropping = False

    async def deliver(self) -> None:
        """Send queued notifications one at a time, until cancelled. Needs :meth:`start` first."""
        queue = self._queue
        if queue is None:
            raise RuntimeError("WebhookNotifier.deliver() called before start()")
        while True:
            alert = await queue.get()
            sent = await self._send(alert)
            self._notifications.labels(outcome="sent" if sent else "failed").inc()

    async def _send(self, alert: dict[str, Any]) -> bool:
        body = orjson.dumps({"status": alert.get("state"), "alert": alert})
        what = f"alert {alert.get('name')} {alert.get('state')} for model {alert.get('model')}"
        problem = ""
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(retry_delay_s(attempt, self._backoff_s))
            try:
                async with asyncio.timeout(self._timeout_s):
                    status = await self._post_in_thread(body)
            except TimeoutError:
                problem = f"no answer within {self._timeout_s:g} s (alerts.webhook_timeout_s)"
                continue
            except (OSError, http.client.HTTPException) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                problem = f"cannot reach it ({reason})"
                continue
            except Exception:
                # Each notification is its own exception boundary: the next one is still delivered.
                log.exception("alert webhook %s: %s not sent, unexpected error; not retrying", self._shown_url, what)
                return False
            if 200 <= status < 300:
                return True
            problem = f"it answered HTTP {status}"
            if not _is_retryable(status):
                log.error(
                    "alert webhook %s: %s not sent, %s; not retrying (check alerts.webhook_url)",
                    self._shown_url,
                    what,
                    problem,
                )
                return False
        log.error(
            "alert webhook %s: %s not sent after %d tries, %s", self._shown_url, what, self._max_attempts, problem
        )
        return False

    async def _post_in_thread(self, body: bytes) -> int:
        # A daemon thread rather than asyncio.to_thread: the default executor is joined when the event loop
        # closes, so a POST to a hanging receiver would hold up shutdown for timeout_s. Abandoned, this
        # thread ends on its own once urllib's socket timeout expires.
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()

        def settle(status: int | None, error: BaseException | None) -> None:
            if answer.done():
                return  # the try timed out or was cancelled meanwhile
            if error is not None:
                answer.set_exception(error)
            else:
                assert status is not None
                answer.set_result(status)

        def work() -> None:
            status: int | None = None
            error: BaseException | None = None
            try:
                status = _post(self._url, body, self._timeout_s)
            except Exception as exc:  # handed to the awaiting task, which decides
                error = exc
            # RuntimeError: the loop closed while we waited, nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, status, error)

        threading.Thread(target=work, name="alert-webhook", daemon=True).start()
        return await answer
