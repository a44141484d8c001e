"""The /audit app under test: the real ASGI app with the fake Slack Web API behind it.

``Harness`` builds a service on a temporary data directory with a settable clock, the
:class:`~trailseal.slackapp.app.AuditApp` pointed at :class:`FakeSlack`, and
``trailseal.http.create_app`` around both; requests are signed exactly as Slack signs
them, with one helper for each kind (slash command, view submission, button click).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from tests.http.support import FixedClock
from tests.slackapp.fake_slack import FakeSlack
from trailseal.http import HttpOptions, create_app
from trailseal.ingest.slack_signature import slack_signature
from trailseal.service.core import Service
from trailseal.service.registry import Principal
from trailseal.settings import AuditAppConfig, AuditRoles, Secret, SlackApp
from trailseal.slackapp.app import AuditApp
from trailseal.slackapp.modal import (
    B_APPS,
    B_CHANNELS,
    B_END,
    B_EXTERNAL,
    B_KIND,
    B_PURPOSE,
    B_QUERY,
    B_START,
    B_TEAM,
    B_USERS,
)
from trailseal.slackapp.model import APP_SOURCE
from trailseal.verify import verify_log

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0HOME"
APPROVERS = "CAPPROVE1"
REQUESTER = "UREQ0001"
APPROVER = "UAPP0001"
"""Listed as an approver (and a requester)."""
GROUP_APPROVER = "UAPP0002"
"""An approver through the user group S0APPROVE."""
OUTSIDER = "UOUT0001"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PURPOSE = "Legal hold LH-42: preserve the incident channel for counsel"


def values(
    *,
    kind: str = "channel",
    channels: list[str] | None = None,
    users: list[str] | None = None,
    apps: str | None = None,
    team: str | None = None,
    start: int | None = None,
    end: int | None = None,
    query: str | None = None,
    purpose: str | None = PURPOSE,
    external: bool = False,
) -> dict[str, Any]:
    """A modal's ``view.state.values`` as Slack sends them."""
    now = int(NOW.timestamp())
    return {
        B_KIND: {B_KIND: {"type": "static_select", "selected_option": {"value": kind}}},
        B_TEAM: {B_TEAM: {"type": "plain_text_input", "value": team}},
        B_CHANNELS: {
            B_CHANNELS: {
                "type": "multi_conversations_select",
                "selected_conversations": ["CINCIDENT"] if channels is None else channels,
            }
        },
        B_USERS: {B_USERS: {"type": "multi_users_select", "selected_users": users or []}},
        B_APPS: {B_APPS: {"type": "plain_text_input", "value": apps}},
        B_EXTERNAL: {
            B_EXTERNAL: {
                "type": "checkboxes",
                "selected_options": [{"value": "include"}] if external else [],
            }
        },
        B_START: {
            B_START: {
                "type": "datetimepicker",
                "selected_date_time": now - 7 * 86400 if start is None else start,
            }
        },
        B_END: {
            B_END: {"type": "datetimepicker", "selected_date_time": now if end is None else end}
        },
        B_QUERY: {B_QUERY: {"type": "plain_text_input", "value": query}},
        B_PURPOSE: {B_PURPOSE: {"type": "plain_text_input", "value": purpose}},
    }


@dataclass
class Harness:
    """A running app: service, fake Slack, the /audit app and an in-process client."""

    service: Service
    fake: FakeSlack
    audit: AuditApp
    client: TestClient
    clock: FixedClock
    sleeps: list[float]
    """What the app waited for (Retry-After), without waiting."""

    # -- signed requests ----------------------------------------------------------------

    def signed(
        self, path: str, body: bytes, content_type: str, secret: str = SECRET
    ) -> httpx.Response:
        ts = str(int(self.clock().timestamp()))
        return self.client.post(
            path,
            content=body,
            headers={
                "content-type": content_type,
                "x-slack-request-timestamp": ts,
                "x-slack-signature": slack_signature(secret.encode(), ts, body),
            },
        )

    def command(self, text: str = "", user: str = REQUESTER, **extra: str) -> httpx.Response:
        """``/audit <text>`` typed by ``user`` in the approvers' channel."""
        form = {
            "command": "/audit",
            "text": text,
            "user_id": user,
            "team_id": TEAM,
            "channel_id": APPROVERS,
            "trigger_id": f"trig.{user}.{len(self.fake.calls)}",
            "response_url": f"{self.fake.origin}/response/1",
            **extra,
        }
        return self.signed(
            "/slack/commands", urlencode(form).encode(), "application/x-www-form-urlencoded"
        )

    def interact(self, payload: dict[str, Any], secret: str = SECRET) -> httpx.Response:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self.signed("/slack/interactions", body, "application/x-www-form-urlencoded", secret)

    def submit(self, user: str = REQUESTER, **kwargs: Any) -> httpx.Response:
        """Submit the request form with :func:`values` ``(**kwargs)``."""
        return self.interact(
            {
                "type": "view_submission",
                "team": {"id": TEAM},
                "user": {"id": user, "team_id": TEAM},
                "view": {
                    "id": "V1",
                    "type": "modal",
                    "callback_id": "audit_request",
                    "private_metadata": "",
                    "state": {"values": values(**kwargs)},
                },
            }
        )

    def click(self, action: str, rid: str, user: str) -> httpx.Response:
        """``user`` clicks Approve (``audit_approve``) or Deny on the approvers' message."""
        return self.interact(
            {
                "type": "block_actions",
                "team": {"id": TEAM},
                "user": {"id": user, "team_id": TEAM},
                "channel": {"id": APPROVERS},
                "container": {"type": "message", "channel_id": APPROVERS},
                "trigger_id": "trig.click",
                "actions": [
                    {
                        "type": "button",
                        "action_id": action,
                        "block_id": f"decide:{rid}",
                        "value": rid,
                    }
                ],
            }
        )

    def settle(self) -> None:
        """Wait for the app's background work (Slack calls, reports) to finish."""
        assert self.audit.wait_idle(60), "background work did not finish"

    # -- what happened ------------------------------------------------------------------

    def wait_for(self, predicate: Any, what: str) -> None:
        """Settle until ``predicate()`` holds (background jobs queue more jobs)."""
        for _ in range(20):
            self.settle()
            if predicate():
                return
        raise AssertionError(f"never happened: {what}")

    def events(self, source: str = APP_SOURCE) -> list[dict[str, Any]]:
        ledger = self.service.ledger(self.service.registry.log("default", "default"))
        records = [
            orjson.loads(e.data)
            for e in ledger.storage.read_entries(ledger.log.id, 0, ledger.tree_size())
        ]
        return [r for r in records if r.get("source") == source]

    def actions(self) -> list[str]:
        return [str(e["action"]) for e in self.events()]

    def dms_to(self, user: str) -> list[str]:
        """Texts the app sent to ``user``'s DM channel."""
        dm = {c["id"] for c in self.fake.channels.values() if c["is_im"] and user in c["members"]}
        return [m.text or "" for m in self.fake.messages if m.channel in dm]

    def ephemerals_to(self, user: str) -> list[str]:
        return [m.text or "" for m in self.fake.messages if m.ephemeral_user == user]

    def approval_message(self) -> Any:
        found = [m for m in self.fake.messages if m.channel == APPROVERS and not m.thread_ts]
        found = [m for m in found if m.ephemeral_user is None]
        assert len(found) == 1, found
        return found[0]

    def assert_log_verifies(self) -> None:
        ledger = self.service.ledger(self.service.registry.log("default", "default"))
        report = verify_log(ledger, ledger.verifiers())
        assert report.ok, [p.describe() for p in report.problems]


def build(
    path: Path, fake: FakeSlack, clock: FixedClock, *, reseed: bool = True, **config: Any
) -> Harness:
    """Seed the fake workspace and the log (unless ``reseed`` is off: a restart on the
    same data directory and fake), then start everything on ``path``."""
    if reseed:
        for user in (REQUESTER, APPROVER, GROUP_APPROVER, OUTSIDER):
            fake.add_user(user, user.lower())
        fake.add_usergroup("S0APPROVE", [GROUP_APPROVER])
        fake.add_channel(
            APPROVERS,
            "audit-approvers",
            members=[APPROVER, GROUP_APPROVER, OUTSIDER, REQUESTER, fake.bot_user_id],
        )
        fake.add_channel("CINCIDENT", "incident", members=[REQUESTER, APPROVER])
    service, _ = Service.open(path, clock=clock)
    if reseed:
        seed(service)
    settings = AuditAppConfig(
        bot_token=Secret("xoxb-test"),
        approvers_channel=APPROVERS,
        public_url="http://testserver",
        roles=AuditRoles(requesters=(REQUESTER, APPROVER), approvers=(APPROVER, "S0APPROVE")),
        signing_secrets=(Secret(SECRET),),
        app="main",
        base_url=fake.base_url,
        **config,
    )
    sleeps: list[float] = []
    audit = AuditApp(service, settings, sleep=sleeps.append)
    slack_app = SlackApp("main", "/slack/events", "default", "default", (Secret(SECRET),))
    app = create_app(service, HttpOptions(slack_apps=(slack_app,), audit_app=audit))
    client = TestClient(app)
    client.__enter__()
    return Harness(service, fake, audit, client, clock, sleeps)


def seed(service: Service) -> None:
    """Slack activity in the incident channel over the last days: what reports cover."""
    events = [
        {
            "id": f"Ev{n:04d}",
            "source": "slack.events",
            "action": "message.posted",
            "time": f"2025-05-{26 + n % 5:02d}T10:00:00Z",
            "actor": {"type": "user", "id": REQUESTER if n % 2 else APPROVER, "team": TEAM},
            "context": {"workspace": TEAM, "channel": "CINCIDENT"},
            "targets": [{"type": "channel", "id": "CINCIDENT"}],
            "content": {"body": f"message {n}"},
        }
        for n in range(12)
    ]
    principal = Principal("seed", "default", "ingest", False, internal=True)
    service.ingest(principal, "default", events)


def close(h: Harness) -> None:
    h.settle()
    h.client.__exit__(None, None, None)
    h.audit.stop()
    h.service.close()


@contextmanager
def watched(path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    """A harness on a fresh fake Slack, logging at DEBUG; afterwards the log verifies,
    and neither the token, nor a signing secret, nor what people typed reached a log."""
    caplog.set_level(logging.DEBUG)
    with FakeSlack() as fake:
        harness = build(path, fake, FixedClock(NOW))
        try:
            yield harness
            harness.settle()
            harness.assert_log_verifies()
        finally:
            close(harness)
    for secret in ("xoxb-test", SECRET, "Legal hold", "payload="):
        assert secret not in caplog.text
