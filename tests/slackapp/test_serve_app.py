"""`trailseal serve` with ``[slack.audit_app]``: the routes exist, the app answers, and
its sweeper and workers stop with the server."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from tests.slackapp.fake_slack import FakeSlack
from trailseal.cli import main
from trailseal.ingest.slack_signature import slack_signature
from trailseal.service.core import Service

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def test_serve_wires_the_audit_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    data = tmp_path / "data"
    svc, _ = Service.open(data)
    svc.close()
    fake = FakeSlack()
    fake.add_user("U0REQ", "requester")
    with (data / "trailseal.toml").open("a") as f:
        f.write(
            "\n[[slack.apps]]\n"
            'name = "main"\n'
            'signing_secret_env = "TS_TEST_SIGNING"\n'
            "\n[slack.audit_app]\n"
            'app = "main"\n'
            'bot_token_env = "TS_TEST_BOT"\n'
            'approvers_channel = "C0APPROVE"\n'
            'public_url = "https://trailseal.example.com"\n'
            f'base_url = "{fake.base_url}"\n'
            "\n[slack.audit_app.roles]\n"
            'requesters = ["*"]\n'
            'approvers = ["U0BOSS"]\n'
        )
    monkeypatch.setenv("TS_TEST_SIGNING", SECRET)
    monkeypatch.setenv("TS_TEST_BOT", "xoxb-test")
    answers: list[Any] = []

    def server_run(self: uvicorn.Server, sockets: Any = None) -> None:
        self.started = True
        assert any(t.name == "slackapp-sweeper" for t in threading.enumerate())
        body = urlencode(
            {"command": "/audit", "text": "help", "user_id": "U0REQ", "team_id": "T0HOME"}
        ).encode()
        ts = str(int(time.time()))
        with TestClient(self.config.app) as client:
            r = client.post(
                "/slack/commands",
                content=body,
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "x-slack-request-timestamp": ts,
                    "x-slack-signature": slack_signature(SECRET.encode(), ts, body),
                },
            )
        answers.append((r.status_code, r.json()))

    monkeypatch.setattr(uvicorn.Server, "run", server_run)
    root = logging.getLogger("trailseal")
    saved = (root.handlers[:], root.level, root.propagate)  # serve configures JSON logging
    try:
        assert main(["--data-dir", str(data), "serve", "--port", "0"]) == 0
    finally:
        root.handlers[:], root.level, root.propagate = saved
        fake.close()
    ((status, answer),) = answers
    assert status == 200
    assert answer["response_type"] == "ephemeral"
    assert "/audit status" in answer["text"]
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("slackapp")]
    assert leftover == []
