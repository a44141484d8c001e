"""Messages trailseal posts to Slack are logged through every state of their delivery."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ingest.fake_slack_web import FakeSlackWeb
from trailseal.ingest.delivery import DeliveryError, SlackPoster
from trailseal.service.core import Service
from trailseal.service.registry import Principal

TOKEN = "xoxb-0000000000-1111111111-abcdefghijklmnopqrstuvwx"


@pytest.fixture
def slack() -> Iterator[FakeSlackWeb]:
    fake = FakeSlackWeb()
    yield fake
    fake.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc, _ = Service.open(tmp_path / "data")
    yield svc
    svc.close()


def poster(slack: FakeSlackWeb, service: Service, waits: list[float]) -> SlackPoster:
    principal = Principal("trailseal:delivery", "default", "ingest", False, internal=True)
    return SlackPoster(
        TOKEN,
        lambda events: service.ingest(principal, "default", events, "trailseal.delivery") and None,
        base_url=slack.base_url,
        sleep=waits.append,
    )


def states(service: Service) -> list[tuple[str, int, str]]:
    ledger = service.ledger(service.registry.log("default", "default"))
    out = []
    for entry in ledger.storage.read_entries(ledger.log.id, 0, 1 << 30):
        record: dict[str, Any] = json.loads(entry.data)
        out.append(
            (record["action"], record["result"]["delivery"]["attempt"], record["correlation"]["id"])
        )
    return out


def test_a_delivered_message_is_queued_sent_and_acknowledged(
    slack: FakeSlackWeb, service: Service
) -> None:
    slack.script("chat.postMessage", 200, {"ok": True, "channel": "C1", "ts": "1700.000100"})
    p = poster(slack, service, [])
    delivered = p.post_message("C1", "Your audit report is ready", correlation_id="dlv_1")
    p.close()
    assert delivered.ts == "1700.000100"
    assert states(service) == [
        ("delivery.queued", 1, "dlv_1"),
        ("delivery.sent", 1, "dlv_1"),
        ("delivery.acknowledged", 1, "dlv_1"),
    ]
    ((method, headers, body),) = slack.calls
    assert method == "chat.postMessage"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body == {"channel": "C1", "text": "Your audit report is ready"}
    assert "Your audit report is ready" not in json.dumps(states(service))


def test_rate_limits_and_server_errors_are_retried_and_logged(
    slack: FakeSlackWeb, service: Service
) -> None:
    slack.script(
        "chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3"}
    )
    slack.script("chat.postMessage", 503, {"ok": False, "error": "service_unavailable"})
    slack.script("chat.postMessage", 200, {"ok": True, "ts": "1.2"})
    waits: list[float] = []
    p = poster(slack, service, waits)
    assert p.post_message("C1", "hi", correlation_id="dlv_2").attempts == 3
    p.close()
    assert waits == [3.0, 4.0]
    assert [s[0] for s in states(service)] == [
        "delivery.queued",
        "delivery.sent",
        "delivery.retried",
        "delivery.sent",
        "delivery.retried",
        "delivery.sent",
        "delivery.acknowledged",
    ]


def test_a_permanent_error_fails_once_and_is_logged(slack: FakeSlackWeb, service: Service) -> None:
    slack.script("chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    p = poster(slack, service, [])
    with pytest.raises(DeliveryError, match="channel_not_found"):
        p.post_message("C404", "hi", correlation_id="dlv_3")
    p.close()
    assert [s[0] for s in states(service)] == [
        "delivery.queued",
        "delivery.sent",
        "delivery.failed",
    ]
    assert len(slack.calls) == 1


def test_giving_up_after_the_last_attempt(slack: FakeSlackWeb, service: Service) -> None:
    for _ in range(4):
        slack.script("chat.postMessage", 500, {"ok": False, "error": "fatal_error"})
    p = poster(slack, service, [])
    with pytest.raises(DeliveryError, match="gave up after 4 attempts"):
        p.post_message("C1", "hi", correlation_id="dlv_4")
    p.close()
    assert states(service)[-1] == ("delivery.failed", 4, "dlv_4")
    assert "xoxb" not in repr(p)
