"""The webhook notifier on its own, against a real local HTTP endpoint: which answers are retried, the
backoff schedule, and a full queue that drops (and counts) instead of waiting."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from modelserve.observability.webhook import BACKOFF_CAP_S, WebhookNotifier, retry_delay_s
from tests.observability.webhook_receiver import serving_webhook
from tests.waiting import wait_until_async

ALERT = {"name": "HighErrorRate", "model": "iris", "state": "firing", "value": 0.5, "threshold": 0.2}


def _counter() -> Counter:
    return Counter("notifications", "test", ["outcome"], registry=CollectorRegistry())


def _count(counter: Counter, outcome: str) -> float:
    for metric in counter.collect():  # what a scrape reads
        for sample in metric.samples:
            if sample.name == "notifications_total" and sample.labels == {"outcome": outcome}:
                return sample.value
    return 0.0


def _notifier(url: str, counter: Counter, **overrides: Any) -> WebhookNotifier:
    arguments: dict[str, Any] = {"timeout_s": 2.0, "max_attempts": 4, "backoff_s": 0.01, "queue_size": 10}
    return WebhookNotifier(url, notifications=counter, **(arguments | overrides))


async def _deliver_until(notifier: WebhookNotifier, counter: Counter, done: int, timeout_s: float = 10.0) -> None:
    """Run the started notifier's worker until ``done`` notifications are settled, then stop it."""

    async def settled() -> None:
        await wait_until_async(
            lambda: _count(counter, "sent") + _count(counter, "failed") >= done,
            timeout_s=timeout_s,
            what=f"{done} notifications settled",
        )

    try:
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as group:
            worker = group.create_task(notifier.deliver())
            await settled()
            worker.cancel()
    finally:
        notifier.stop()


def test_the_backoff_doubles_from_the_setting_up_to_the_cap() -> None:
    assert [retry_delay_s(n, 0.5) for n in range(1, 6)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert retry_delay_s(12, 0.5) == BACKOFF_CAP_S == 30.0


@pytest.mark.parametrize(
    ("statuses", "tries", "outcome"),
    [
        ([204], 1, "sent"),
        ([500, 502, 201], 3, "sent"),
        ([408, 429, 200], 3, "sent"),
        ([404], 1, "failed"),  # the receiver's fault: retrying cannot help
        ([301], 1, "failed"),  # a redirect is not followed (urllib would re-send the POST as a GET)
        ([503], 4, "failed"),  # max_attempts
    ],
)
def test_which_answers_are_retried(statuses: list[int], tries: int, outcome: str) -> None:
    counter = _counter()
    with serving_webhook(statuses) as hook:
        notifier = _notifier(hook.url, counter)

        async def scenario() -> None:
            notifier.start()
            notifier.notify(ALERT)
            await _deliver_until(notifier, counter, done=1)

        asyncio.run(scenario())
        assert hook.count() == tries
        assert hook.hits[0][1] == {"status": "firing", "alert": ALERT}
    assert _count(counter, outcome) == 1


def test_a_full_queue_drops_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    counter = _counter()
    with serving_webhook([200]) as hook:
        notifier = _notifier(hook.url, counter, queue_size=2)

        async def scenario() -> None:
            notifier.start()
            with caplog.at_level(logging.WARNING, logger="modelserve.alerts"):
                for _ in range(5):  # nothing delivers yet: 2 fit, 3 are dropped
                    notifier.notify(ALERT)
            await _deliver_until(notifier, counter, done=5)

        asyncio.run(scenario())
        assert hook.count() == 2
    assert _count(counter, "sent") == 2 and _count(counter, "failed") == 3
    dropping = [r for r in caplog.records if "dropping notifications" in r.getMessage()]
    assert len(dropping) == 1 and "alerts.webhook_queue_size" in dropping[0].getMessage()


def test_notifications_left_at_stop_count_as_failed() -> None:
    counter = _counter()
    notifier = _notifier("http://127.0.0.1:9/hook", counter)

    async def scenario() -> None:
        notifier.start()
        notifier.notify(ALERT)
        notifier.notify(ALERT)
        notifier.stop()
        notifier.notify(ALERT)  # after stop: dropped at once

    asyncio.run(scenario())
    assert _count(counter, "failed") == 3 and _count(counter, "sent") == 0


def test_logs_never_show_the_secret_in_the_url(caplog: pytest.LogCaptureFixture) -> None:
    counter = _counter()
    with serving_webhook([404]) as hook:
        notifier = _notifier(hook.url + "/T0001/s3cr3t?token=abc", counter)

        async def scenario() -> None:
            notifier.start()
            notifier.notify(ALERT)
            await _deliver_until(notifier, counter, done=1)

        with caplog.at_level(logging.INFO, logger="modelserve.alerts"):
            asyncio.run(scenario())
    [line] = [r.getMessage() for r in caplog.records]
    assert "HTTP 404" in line and "127.0.0.1" in line and "s3cr3t" not in line and "abc" not in line
