"""The /audit app over Socket Mode: commands and interactions arrive as envelopes on the
fake Slack WebSocket, go to the same bolt handlers, and the answer rides on the ack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.support import FixedClock
from tests.ingest.test_socket_mode import TOKEN
from tests.ingest.test_socket_mode import FakeSlack as FakeSocketSlack
from tests.slackapp.fake_slack import FakeSlack
from tests.slackapp.harness import NOW, REQUESTER, TEAM, Harness, build, close, values
from trailseal.ingest.socket_mode import SocketModeIngestor
from trailseal.settings import Secret, SocketModeApp


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[Harness, FakeSocketSlack]]:
    with FakeSlack() as web:
        h = build(tmp_path / "data", web, FixedClock(NOW), socket_mode="main")
        socket = FakeSocketSlack(lambda envelope: (True, 0))
        ingestor = SocketModeIngestor(
            SocketModeApp("main", Secret(TOKEN), base_url=socket.base_url),
            h.service,
            ping_interval=0.5,
            interactive=h.audit.dispatch_socket_mode,
        )
        try:
            ingestor.start()
            socket.wait("hello", lambda: socket.hellos == 1)
            yield h, socket
            h.settle()
            h.assert_log_verifies()
        finally:
            ingestor.stop()
            socket.close()
            close(h)


def envelope(n: int, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "envelope_id": f"env-{n}",
        "type": kind,
        "accepts_response_payload": True,
        "payload": payload,
    }


def command(text: str) -> dict[str, Any]:
    return {
        "command": "/audit",
        "text": text,
        "user_id": REQUESTER,
        "team_id": TEAM,
        "channel_id": "CAPPROVE1",
        "trigger_id": "trig.socket",
    }


def submission(**kwargs: Any) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": TEAM},
        "user": {"id": REQUESTER, "team_id": TEAM},
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": "audit_request",
            "state": {"values": values(**kwargs)},
        },
    }


def test_commands_and_submissions_over_socket_mode(
    wired: tuple[Harness, FakeSocketSlack],
) -> None:
    h, socket = wired
    socket.deliver(envelope(1, "slash_commands", command("help")))
    socket.wait_acked("env-1")
    answer = socket.acks["env-1"].payload
    assert answer is not None
    assert answer["response_type"] == "ephemeral"
    assert "/audit status" in answer["text"]

    socket.deliver(envelope(2, "slash_commands", command("")))
    socket.wait_acked("env-2")
    assert socket.acks["env-2"].payload is None  # an empty ack; the modal opens after
    h.settle()
    assert [c.params["trigger_id"] for c in h.fake.calls_to("views.open")] == ["trig.socket"]

    socket.deliver(envelope(3, "interactive", submission(purpose="short")))
    socket.wait_acked("env-3")
    errors = socket.acks["env-3"].payload
    assert errors is not None
    assert errors["response_action"] == "errors"
    assert "purpose" in errors["errors"]

    socket.deliver(envelope(4, "interactive", submission()))
    socket.wait_acked("env-4")
    updated = socket.acks["env-4"].payload
    assert updated is not None
    assert updated["response_action"] == "update"
    h.settle()
    (requested,) = h.events()
    assert requested["action"] == "audit.requested"
    assert requested["auth"] == {"method": "token"}  # not signed: the app token's link
    assert requested["raw"]["request_id"] in str(updated["view"])


def test_home_tab_over_socket_mode(tmp_path: Path) -> None:
    """``app_home_opened`` over Socket Mode is stored, acknowledged, and the tab published."""
    with FakeSlack() as web:
        h = build(tmp_path / "data", web, FixedClock(NOW), socket_mode="main")
        socket = FakeSocketSlack(lambda envelope: (True, 0))
        ingestor = SocketModeIngestor(
            SocketModeApp("main", Secret(TOKEN), base_url=socket.base_url),
            h.service,
            ping_interval=0.5,
            interactive=h.audit.dispatch_socket_mode,
            home_opened=h.audit.app_home_opened,
        )
        try:
            ingestor.start()
            socket.wait("hello", lambda: socket.hellos == 1)
            opened = {
                "type": "event_callback",
                "team_id": TEAM,
                "event_id": "EvHOME1",
                "event_time": 1_700_000_000,
                "event": {"type": "app_home_opened", "user": REQUESTER, "tab": "home"},
            }
            socket.deliver(envelope(1, "events_api", opened))
            socket.wait_acked("env-1")
            h.settle()
            assert [c.params["user_id"] for c in h.fake.calls_to("views.publish")] == [REQUESTER]
            assert REQUESTER in h.fake.home_views
            h.assert_log_verifies()
        finally:
            ingestor.stop()
            socket.close()
            close(h)
