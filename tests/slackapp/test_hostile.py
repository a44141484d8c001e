"""What a hostile requester types, what a failing Slack answers, and clicks on requests
that do not exist: defects found in a review, each pinned by a test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.slackapp.harness import (
    APPROVER,
    APPROVERS,
    GROUP_APPROVER,
    OUTSIDER,
    REQUESTER,
    Harness,
    watched,
)
from trailseal.slackapp.messages import ACTION_APPROVE, ACTION_DENY

# Slack mrkdwn that would ping everyone, mention someone, or hide a link behind text
# (docs.slack.dev/messaging/formatting-message-text: & < > are control characters).
HOSTILE = "Legal hold <!channel> ask <@UAPP0001> & see <https://evil.example|the ticket>"


@pytest.fixture
def h(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    with watched(tmp_path / "data", caplog) as harness:
        yield harness


def request_id(h: Harness, **kwargs: Any) -> str:
    r = h.submit(REQUESTER, **kwargs)
    assert r.json()["response_action"] == "update", r.text
    h.settle()
    requested = [e for e in h.events() if e["action"] == "audit.requested"]
    return str(requested[-1]["correlation"]["id"])


def mrkdwn_texts(blocks: Any) -> list[str]:
    """Every mrkdwn text in ``blocks`` (sections, fields and context elements)."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == "mrkdwn":
                out.append(str(value.get("text", "")))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(blocks)
    return out


def assert_inert(texts: list[str]) -> None:
    joined = "\n".join(texts)
    assert "Legal hold" in joined
    for markup in ("<!channel>", "<@UAPP0001>", "<https://evil", "<!here>"):
        assert markup not in joined, joined
    assert "&lt;!channel&gt;" in joined
    assert "&amp; see" in joined


def test_typed_text_reaches_approvers_as_text_not_markup(h: Harness) -> None:
    rid = request_id(h, kind="query", query="login <!here> & `x`", purpose=HOSTILE)
    texts = mrkdwn_texts(h.approval_message().blocks)
    assert_inert(texts)
    assert any("&lt;!here&gt;" in t for t in texts)
    # The same request on an approver's Home tab and in the requester's /audit status.
    event = {
        "type": "event_callback",
        "event_id": "Ev0HOME1",
        "team_id": "T0HOME",
        "event": {"type": "app_home_opened", "user": APPROVER, "tab": "home"},
    }
    h.signed("/slack/events", json.dumps(event).encode(), "application/json")
    h.settle()
    assert_inert(mrkdwn_texts(h.fake.home_views[APPROVER]["blocks"]))
    assert_inert(mrkdwn_texts(h.command("status").json()["blocks"]))
    assert rid in str(h.fake.home_views[APPROVER]["blocks"])


def test_a_long_purpose_of_markup_characters_still_fits_a_section(h: Harness) -> None:
    request_id(h, purpose="<&>" * 333)  # 999 characters, each escaped to 4 or 5
    purpose = next(t for t in mrkdwn_texts(h.approval_message().blocks) if "Purpose" in t)
    assert len(purpose) <= 3000
    assert purpose.endswith(("&lt;", "&amp;", "&gt;", "…"))  # no entity cut in half


def test_a_request_the_approvers_never_saw_is_not_reported_as_sent(h: Harness) -> None:
    h.fake.fail("chat.postMessage", "not_in_channel")  # the approvers' message
    rid = request_id(h)
    assert [m for m in h.fake.messages if m.channel == APPROVERS] == []
    (told,) = h.dms_to(REQUESTER)
    assert rid in told
    assert "sent to the approvers" not in told
    assert "could not be posted" in told
    assert "not_in_channel" in told
    # Still pending: an approver can decide from the Home tab.
    assert h.audit.journal.state(rid) == "pending"


def test_a_report_delivered_to_the_requester_is_recorded_when_the_thread_copy_fails(
    h: Harness,
) -> None:
    rid = request_id(h)
    h.fake.removed_from.add(APPROVERS)  # someone removed the app from the channel
    h.click(ACTION_APPROVE, rid, APPROVER)
    h.wait_for(lambda: any("report for" in t for t in h.dms_to(REQUESTER)), "a report notice")
    delivered = [f for f in h.fake.files.values() if f.shared_to and f.shared_to[0][0] == "D"]
    assert len(delivered) == 4  # the requester has the report ...
    assert h.actions()[-1] == "audit.report_generated"  # ... so the log says so
    report = h.events()[-1]
    assert sorted(report["raw"]["slack_file_ids"]) == sorted(f.id for f in delivered)
    told = h.dms_to(REQUESTER)
    assert not any("could not be built" in t for t in told), told
    assert any("is ready" in t for t in told)
    # A restart does not send it again.
    assert h.audit.workflow.resume() == 0


def test_a_click_on_a_request_that_does_not_exist_is_refused_and_logged(h: Harness) -> None:
    h.click(ACTION_APPROVE, "ar_000000000000", OUTSIDER)
    h.settle()
    (refused,) = h.events()
    assert refused["action"] == "audit.refused"
    assert refused["actor"]["id"] == OUTSIDER
    assert refused["result"] == {"status": "failure", "reason": "not an approver"}
    assert any("not allowed to approve" in t for t in h.ephemerals_to(OUTSIDER))
    h.click(ACTION_APPROVE, "ar_000000000000", APPROVER)
    h.settle()
    assert h.actions() == ["audit.refused", "audit.refused"]
    refused = h.events()[-1]
    assert refused["result"] == {"status": "failure", "reason": "no such request"}
    assert refused["correlation"] == {"id": "ar_000000000000"}
    assert any("no audit request" in t for t in h.ephemerals_to(APPROVER))


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        # A NUL passed the form, was approved, and then failed the report at every restart.
        ("query", {"kind": "query", "query": "login \x00 admin"}),
        ("query", {"kind": "query", "query": "x" * 501}),  # the form's max_length
        ("purpose", {"purpose": "Legal hold LH-42 \x1b[2J for counsel"}),
        # A right-to-left override shows approvers text in another order than stored.
        ("purpose", {"purpose": "Legal hold LH-42 \u202etpircs for counsel"}),
    ],
)
def test_control_characters_and_overlong_text_are_refused_in_the_form(
    h: Harness, field: str, kwargs: dict[str, Any]
) -> None:
    r = h.submit(REQUESTER, **kwargs)
    body = r.json()
    assert body["response_action"] == "errors", body
    assert set(body["errors"]) == {field}
    h.settle()
    assert h.events() == []


def test_line_breaks_and_tabs_in_a_purpose_are_fine(h: Harness) -> None:
    purpose = "Legal hold LH-42:\n\tpreserve the channel\r\nfor counsel"
    rid = request_id(h, purpose=purpose)
    request = h.audit.workflow.journal.request(rid)
    assert request is not None
    assert request.purpose == purpose


def test_a_report_that_fails_unexpectedly_is_still_told_to_the_requester(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("trailseal.slackapp.workflow.build_report", disk_full)
    rid = request_id(h)
    h.click(ACTION_APPROVE, rid, APPROVER)
    h.settle()
    told = [t for t in h.dms_to(REQUESTER) if "could not be built" in t]
    assert len(told) == 1, h.dms_to(REQUESTER)
    assert rid in told[0]
    assert "No space left" not in told[0]  # the details are for the server log
    assert h.audit.journal.state(rid) == "approved"  # resumed after a restart


def test_buttons_left_by_a_failed_update_are_replaced_on_the_next_click(h: Harness) -> None:
    rid = request_id(h)
    h.fake.fail("chat.update", "internal_error")
    h.click(ACTION_DENY, rid, APPROVER)
    h.settle()
    assert h.approval_message().updates == 0  # Slack failed: the buttons are still shown
    h.click(ACTION_APPROVE, rid, GROUP_APPROVER)
    h.settle()
    assert any("already denied" in t for t in h.ephemerals_to(GROUP_APPROVER))
    message = h.approval_message()
    assert message.updates == 1
    assert not any(b["type"] == "actions" for b in message.blocks)
    assert "*Denied* by <@UAPP0001>" in message.blocks[-1]["text"]["text"]
    assert h.actions() == ["audit.requested", "audit.denied"]
