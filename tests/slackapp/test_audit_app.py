"""The /audit app end to end: signed Slack requests into the ASGI app, a fake Slack Web
API recording every call, and the log as the record of every step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.support import assert_problem
from tests.slackapp.harness import (
    APPROVER,
    APPROVERS,
    GROUP_APPROVER,
    NOW,
    OUTSIDER,
    REQUESTER,
    Harness,
    watched,
)
from trailseal.slackapp.messages import ACTION_APPROVE, ACTION_DENY


@pytest.fixture
def h(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    with watched(tmp_path / "data", caplog) as harness:
        yield harness


def request_id(h: Harness, user: str = REQUESTER, **kwargs: Any) -> str:
    r = h.submit(user, **kwargs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response_action"] == "update", body
    h.settle()
    requested = [e for e in h.events() if e["action"] == "audit.requested"]
    return str(requested[-1]["correlation"]["id"])


def test_the_command_opens_the_modal_with_the_trigger_id(h: Harness) -> None:
    r = h.command("")
    assert r.status_code == 200
    assert r.text == ""  # acknowledged at once; the modal opens after
    h.settle()
    (call,) = h.fake.calls_to("views.open")
    assert call.params["trigger_id"].startswith(f"trig.{REQUESTER}.")
    view = call.params["view"]
    assert view["callback_id"] == "audit_request"
    block_ids = [b.get("block_id") for b in view["blocks"]]
    for block in ("kind", "team", "channels", "users", "external", "start", "end", "purpose"):
        assert block in block_ids


@pytest.mark.parametrize(
    ("kwargs", "block", "words"),
    [
        ({"end": int(NOW.timestamp()) - 30 * 86400}, "end", "after the start"),
        (
            {"start": int(NOW.timestamp()) - 400 * 86400},
            "end",
            "at most 366 days",
        ),
        ({"start": int(NOW.timestamp()) + 3600}, "start", "in the future"),
        ({"channels": []}, "channels", "at least one channel"),
        ({"kind": "user"}, "users", "at least one user"),
        ({"kind": "app", "apps": "not-an-app"}, "apps", "Not an app ID"),
        ({"kind": "query"}, "query", "words to search for"),
        ({"purpose": "because"}, "purpose", "at least 20 characters"),
        ({"team": "acme"}, "team", "team ID starts with T"),
    ],
)
def test_an_invalid_form_gets_inline_errors_and_nothing_is_recorded(
    h: Harness, kwargs: dict[str, Any], block: str, words: str
) -> None:
    r = h.submit(REQUESTER, **kwargs)
    assert r.status_code == 200
    body = r.json()
    assert body["response_action"] == "errors"
    assert words in body["errors"][block], body
    assert h.events() == []


def test_a_valid_request_is_recorded_and_posted_to_the_approvers(h: Harness) -> None:
    rid = request_id(h, external=True)
    (event,) = h.events()
    assert event["id"] == f"request:{rid}"
    assert event["action"] == "audit.requested"
    assert event["correlation"] == {"id": rid}
    assert event["actor"] == {"type": "user", "id": REQUESTER, "team": "T0HOME"}
    assert event["auth"] == {"method": "signing-secret"}
    assert event["raw"]["scope"]["channels"] == ["CINCIDENT"]
    assert event["raw"]["scope"]["include_external"] is True
    assert event["raw"]["purpose"].startswith("Legal hold")
    assert event["raw"]["expires_at"] == "2025-06-04T12:00:00.000000Z"  # 72 h
    message = h.approval_message()
    actions = message.blocks[-1]
    assert actions["type"] == "actions"
    assert [e["action_id"] for e in actions["elements"]] == [ACTION_APPROVE, ACTION_DENY]
    assert {e["value"] for e in actions["elements"]} == {rid}
    # The delivery of the approvers' message is in the log under the request's id.
    delivery = h.events("trailseal.delivery")
    assert [d["action"] for d in delivery] == [
        "delivery.queued",
        "delivery.sent",
        "delivery.acknowledged",
    ]
    assert {d["correlation"]["id"] for d in delivery} == {rid}
    assert any(rid in text for text in h.dms_to(REQUESTER))


def test_deny_is_recorded_the_message_updated_and_the_requester_told(h: Harness) -> None:
    rid = request_id(h)
    assert h.click(ACTION_DENY, rid, GROUP_APPROVER).status_code == 200
    h.settle()
    decision = h.events()[-1]
    assert decision["id"] == f"decision:{rid}"
    assert decision["action"] == "audit.denied"
    assert decision["actor"]["id"] == GROUP_APPROVER  # an approver through a user group
    message = h.approval_message()
    assert message.updates == 1
    assert "*Denied* by <@UAPP0002>" in message.blocks[-1]["text"]["text"]
    assert GROUP_APPROVER in message.blocks[-1]["text"]["text"]
    assert not any(b["type"] == "actions" for b in message.blocks)
    assert any("was denied" in t for t in h.dms_to(REQUESTER))
    assert h.fake.calls_to("files.getUploadURLExternal") == []


def test_nobody_approves_their_own_request(h: Harness) -> None:
    rid = request_id(h, user=APPROVER)
    h.click(ACTION_APPROVE, rid, APPROVER)
    h.settle()
    assert h.actions() == ["audit.requested", "audit.refused"]
    refused = h.events()[-1]
    assert refused["result"] == {"status": "failure", "reason": "self-approval"}
    assert refused["correlation"] == {"id": rid}
    assert any("your own request" in t for t in h.ephemerals_to(APPROVER))
    assert h.approval_message().updates == 0


def test_an_outsider_cannot_request_and_the_refusal_is_logged(h: Harness) -> None:
    r = h.command("", user=OUTSIDER)
    assert r.status_code == 200
    body = r.json()
    assert body["response_type"] == "ephemeral"
    assert "not allowed to request audits" in body["text"]
    assert "<@UAPP0001>" in body["text"]  # whom to ask
    assert "<!subteam^S0APPROVE>" in body["text"]
    h.settle()
    assert h.fake.calls_to("views.open") == []
    (refused,) = h.events()
    assert refused["action"] == "audit.refused"
    assert refused["actor"] == {"type": "user", "id": OUTSIDER, "team": "T0HOME"}
    assert refused["result"] == {"status": "failure", "reason": "not a requester"}
    assert refused["auth"] == {"method": "signing-secret"}
    # A crafted submission without the role is refused too.
    r = h.submit(OUTSIDER)
    assert r.json()["response_action"] == "errors"
    assert h.actions() == ["audit.refused", "audit.refused"]


def test_a_non_approver_click_is_refused_and_logged(h: Harness) -> None:
    rid = request_id(h)
    h.click(ACTION_APPROVE, rid, OUTSIDER)
    h.settle()
    assert h.actions() == ["audit.requested", "audit.refused"]
    refused = h.events()[-1]
    assert refused["raw"] == {"attempted": "approved"}
    assert refused["result"] == {"status": "failure", "reason": "not an approver"}
    assert refused["correlation"] == {"id": rid}
    assert any("not allowed to approve" in t for t in h.ephemerals_to(OUTSIDER))
    assert h.approval_message().updates == 0


def test_an_expired_request_cannot_be_approved(h: Harness) -> None:
    rid = request_id(h)
    h.clock.advance(73 * 3600)
    h.click(ACTION_APPROVE, rid, APPROVER)
    h.settle()
    assert h.actions() == ["audit.requested", "audit.expired", "audit.refused"]
    expired, refused = h.events()[-2:]
    assert refused["result"] == {"status": "failure", "reason": "expired"}
    assert refused["actor"]["id"] == APPROVER
    assert expired["id"] == f"decision:{rid}"
    assert expired["actor"] == {"type": "system", "id": "trailseal"}
    assert "auth" not in expired  # nobody called: the app's own step
    assert any("already expired" in t for t in h.ephemerals_to(APPROVER))
    assert any("expired" in t for t in h.dms_to(REQUESTER))
    assert "*Expired* by expiry" in h.approval_message().blocks[-1]["text"]["text"]


def test_the_sweeper_expires_pending_requests_with_the_service_clock(h: Harness) -> None:
    rid = request_id(h)
    assert h.audit.workflow.sweep() == 0
    h.clock.advance(72 * 3600)
    assert h.audit.workflow.sweep() == 1
    assert h.audit.workflow.sweep() == 0  # idempotent
    h.settle()
    assert h.actions() == ["audit.requested", "audit.expired"]
    assert h.audit.journal.state(rid) == "expired"


def test_a_bad_signature_is_refused_and_nothing_is_recorded(h: Harness) -> None:
    rid = request_id(h)
    calls = len(h.fake.calls)
    r = h.interact(
        {"type": "block_actions", "user": {"id": APPROVER}, "actions": [{"value": rid}]},
        secret="0" * 32,
    )
    assert_problem(r, 401, "unauthorized")
    r = h.client.post("/slack/commands", content=b"command=%2Faudit")
    assert_problem(r, 401, "unauthorized")
    h.settle()
    assert len(h.fake.calls) == calls
    assert h.actions() == ["audit.requested"]


def test_help_and_status_answer_ephemerally(h: Harness) -> None:
    r = h.command("help")
    assert r.json()["response_type"] == "ephemeral"
    assert "/audit status" in r.json()["text"]
    r = h.command("status")
    assert "no audit requests" in str(r.json()["blocks"])
    rid = request_id(h)
    r = h.command("status")
    blocks = str(r.json()["blocks"])
    assert rid in blocks
    assert "pending approval" in blocks
    h.click(ACTION_DENY, rid, APPROVER)
    h.settle()
    assert "denied" in str(h.command("status").json()["blocks"])
    assert "Unknown `/audit frobnicate`" in h.command("frobnicate").json()["text"]


def test_app_home_lists_requests_and_awaiting_decisions(h: Harness) -> None:
    rid = request_id(h)
    event = {
        "type": "event_callback",
        "event_id": "Ev0HOME1",
        "team_id": "T0HOME",
        "event": {"type": "app_home_opened", "user": APPROVER, "tab": "home"},
    }
    r = h.signed("/slack/events", json.dumps(event).encode(), "application/json")
    assert r.status_code == 200
    h.settle()
    home = str(h.fake.home_views[APPROVER]["blocks"])
    assert "Awaiting you" in home
    assert rid in home
    assert ACTION_APPROVE in home
    event["event_id"] = "Ev0HOME2"
    event["event"] = {"type": "app_home_opened", "user": REQUESTER, "tab": "home"}
    h.signed("/slack/events", json.dumps(event).encode(), "application/json")
    h.settle()
    mine = str(h.fake.home_views[REQUESTER]["blocks"])
    assert "Awaiting you" not in mine
    assert rid in mine
    assert "pending approval" in mine
    assert [e["action"] for e in h.events("slack.events")][-2:] == [
        "app.home_opened",
        "app.home_opened",
    ]


def test_approvers_channel_is_where_the_click_came_from(h: Harness) -> None:
    rid = request_id(h)
    h.click(ACTION_DENY, rid, APPROVER)
    h.settle()
    h.click(ACTION_APPROVE, rid, GROUP_APPROVER)
    h.settle()
    told = h.ephemerals_to(GROUP_APPROVER)
    assert any("already denied by <@UAPP0001>" in t for t in told), told
    assert h.actions() == ["audit.requested", "audit.denied"]
    assert h.fake.channels[APPROVERS]["id"] == APPROVERS


def test_rate_limited_slack_calls_are_retried_after_retry_after(h: Harness) -> None:
    h.fake.rate_limit("chat.postMessage", retry_after_s=7)  # the approvers' message
    rid = request_id(h)
    h.fake.rate_limit("chat.update", retry_after_s=3, times=2)
    h.click(ACTION_DENY, rid, APPROVER)
    h.settle()
    assert h.approval_message().updates == 1
    assert h.sleeps == [7.0, 3.0, 3.0]
    delivery = [e["action"] for e in h.events("trailseal.delivery")]
    assert delivery == [
        "delivery.queued",
        "delivery.sent",
        "delivery.retried",
        "delivery.sent",
        "delivery.acknowledged",
    ]


def test_a_request_no_listener_handles_is_logged_by_type_only(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    r = h.interact(
        {
            "type": "shortcut",
            "callback_id": "something_else",
            "team": {"id": "T0HOME"},
            "user": {"id": REQUESTER, "team_id": "T0HOME"},
            "trigger_id": "Legal hold secret trigger",
        }
    )
    assert r.status_code == 404
    assert "slack request not handled by the app" in caplog.text
    assert "something_else" not in caplog.text
    assert h.events() == []


def test_a_decision_from_the_home_tab_republishes_it(h: Harness) -> None:
    rid = request_id(h)
    r = h.interact(
        {
            "type": "block_actions",
            "team": {"id": "T0HOME"},
            "user": {"id": GROUP_APPROVER, "team_id": "T0HOME"},
            "container": {"type": "view", "view_id": "VHOME"},
            "view": {"id": "VHOME", "type": "home"},
            "actions": [{"type": "button", "action_id": ACTION_DENY, "value": rid}],
        }
    )
    assert r.status_code == 200
    h.settle()
    assert h.actions() == ["audit.requested", "audit.denied"]
    home = str(h.fake.home_views[GROUP_APPROVER]["blocks"])
    assert "Nothing is waiting for a decision" in home
    assert h.approval_message().updates == 1
