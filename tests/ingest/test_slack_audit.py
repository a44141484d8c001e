"""The Slack Audit Logs poller, against a fake Audit Logs API on 127.0.0.1.

The fake serves ``GET /audit/v1/logs`` like Slack: entries newest first within
``oldest``/``latest`` (inclusive), ``limit`` per page, an opaque ``next_cursor`` bound to
the window; scripted answers (429, 5xx, invalid_cursor, auth errors) come first. The
real httpx client talks to it over TCP.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from trailseal.cli import main
from trailseal.cli.common import EXIT_CONFIG
from trailseal.errors import ConfigError, StorageError
from trailseal.http.observability import JsonFormatter
from trailseal.ingest.slack_audit import map_audit_entry
from trailseal.ingest.slack_audit_poller import AuditPoller, HttpxFetch, SlackAuditError
from trailseal.model.schema import schema_errors
from trailseal.service.core import Service
from trailseal.service.poller import (
    PRINCIPAL_ID,
    STATE_NAME,
    build_audit_poller,
    service_append,
    start_audit_poller,
)
from trailseal.service.registry import Principal
from trailseal.settings import Secret, SlackAuditConfig

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "slack"
TOKEN = "xoxp-1234567890-0987654321-1234567890-abcdef0123456789abcdef0123456789"
NOW = 1_700_000_000
TEMPLATE: dict[str, Any] = json.loads((FIXTURES / "audit-logs-response.json").read_text())[
    "entries"
][0]

Answer = tuple[int, dict[str, str], Any]


class FakeAuditLogs:
    """A fake Slack Audit Logs API; ``requests`` records every query, ``script`` queues
    answers that take precedence (each once, when its predicate holds)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.entries: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.authorizations: list[str] = []
        self.generation = 0
        self._script: list[tuple[Callable[[dict[str, str]], bool], Answer]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, headers, body = fake.answer(
                    url.path, params, self.headers.get("Authorization", "")
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add(self, *entries: dict[str, Any]) -> None:
        with self._lock:
            self.entries += entries

    def script(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        when: Callable[[dict[str, str]], bool] = lambda params: True,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self._script.append((when, (status, headers or {}, body)))

    def invalidate_cursors(self) -> None:
        """Every cursor handed out so far becomes invalid (as after expiry)."""
        self.generation += 1

    def _cursor(self, oldest: int, latest: int, offset: int) -> str:
        raw = json.dumps({"g": self.generation, "o": oldest, "l": latest, "off": offset})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def answer(self, path: str, params: dict[str, str], authorization: str) -> Answer:
        with self._lock:
            self.requests.append(params)
            self.authorizations.append(authorization)
            for i, (when, answer) in enumerate(self._script):
                if when(params):
                    del self._script[i]
                    return answer
            if path != "/audit/v1/logs":
                return 404, {}, {"ok": False, "error": "unknown_method"}
            if authorization != f"Bearer {self.token}":
                return 401, {}, {"ok": False, "error": "invalid_auth"}
            oldest = int(params.get("oldest", "0"))
            latest = int(params.get("latest", str(1 << 40)))
            limit = int(params.get("limit", "100"))
            window = sorted(
                (e for e in self.entries if oldest <= int(e["date_create"]) <= latest),
                key=lambda e: (int(e["date_create"]), str(e["id"])),
                reverse=True,
            )
            offset = 0
            if "cursor" in params:
                try:
                    c = json.loads(base64.urlsafe_b64decode(params["cursor"]))
                except ValueError:
                    c = {}
                if c.get("g") != self.generation or (c.get("o"), c.get("l")) != (oldest, latest):
                    return 400, {}, {"ok": False, "error": "invalid_cursor"}
                offset = int(c["off"])
            page = window[offset : offset + limit]
            more = offset + limit < len(window)
            cursor = self._cursor(oldest, latest, offset + limit) if more else ""
            return 200, {}, {"entries": page, "response_metadata": {"next_cursor": cursor}}


def entry(n: int, at: int, **changes: Any) -> dict[str, Any]:
    """The fixture's entry with its own id and time; ``changes`` replace top-level keys."""
    e = copy.deepcopy(TEMPLATE)
    e["id"] = f"0123a45b-6c7d-8900-e12f-{n:012d}"
    e["date_create"] = at
    e.update(changes)
    return e


class Clock:
    """The poller's clock (Unix seconds), moved by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeAuditLogs]:
    server = FakeAuditLogs()
    yield server
    server.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc, _ = Service.open(tmp_path / "data")
    yield svc
    svc.close()


def config(fake: FakeAuditLogs, **changes: Any) -> SlackAuditConfig:
    values: dict[str, Any] = {
        "token": Secret(TOKEN),
        "base_url": fake.base_url,
        "limit": 3,
        "overlap_s": 300,
        "interval_s": 0.05,
    }
    values.update(changes)
    return SlackAuditConfig(**values)


def make_poller(
    service: Service,
    fake: FakeAuditLogs,
    sleeps: list[float] | None = None,
    clock: Clock | None = None,
    token: str = TOKEN,
    **changes: Any,
) -> AuditPoller:
    cfg = config(fake, **changes)
    return build_audit_poller(
        service,
        cfg,
        fetch=HttpxFetch(token, cfg.base_url, timeout_s=5),
        clock=clock or Clock(),
        sleep=(sleeps if sleeps is not None else []).append,
    )


def stored(service: Service) -> list[dict[str, Any]]:
    ledger = service.ledger(service.registry.log("default", "default"))
    records = [json.loads(e.data) for e in ledger.storage.read_entries(ledger.log.id, 0, 1 << 30)]
    return [r for r in records if r["source"] == "slack.audit"]


def stored_ids(service: Service) -> list[str]:
    return sorted(r["id"] for r in stored(service))


def ids(*entries: dict[str, Any]) -> list[str]:
    return sorted(e["id"] for e in entries)


def page_requests(fake: FakeAuditLogs) -> list[dict[str, str]]:
    return [p for p in fake.requests if p]


# -- mapping -------------------------------------------------------------------------------


def test_the_documented_entry_maps_to_a_valid_event_with_everything_kept() -> None:
    event = map_audit_entry(copy.deepcopy(TEMPLATE))
    assert schema_errors(event) == []
    assert event == {
        "id": "0123a45b-6c7d-8900-e12f-3456789gh0i1",
        "source": "slack.audit",
        "class": "security",
        "action": "slack.audit.user_login",
        "time": "2018-03-16T15:32:23.000000Z",
        "actor": {
            "type": "user",
            "id": "W123AB456",
            "name": "Charlie Parker",
            "email": "bird@slack.com",
            "ip": "1.23.45.678",  # not a valid address: kept exactly as Slack sent it
            "ua": TEMPLATE["context"]["ua"],
            "session": "847288190092",
        },
        "targets": [{"type": "user", "id": "W123AB456", "name": "Charlie Parker"}],
        "context": {"enterprise": "E1701NCCA", "location": "Birdland"},
        "result": {"status": "success"},
        "raw": TEMPLATE,
    }


@pytest.mark.parametrize(
    ("entity", "target"),
    [
        (
            {"type": "user", "user": {"id": "W1", "name": "A"}},
            {"type": "user", "id": "W1", "name": "A"},
        ),
        (
            {"type": "channel", "channel": {"id": "C1", "privacy": "public", "name": "general"}},
            {"type": "channel", "id": "C1", "name": "general"},
        ),
        (
            {"type": "file", "file": {"id": "F1", "filetype": "pdf", "title": "Q3"}},
            {"type": "file", "id": "F1", "name": "Q3"},
        ),
        (
            {"type": "app", "app": {"id": "A1", "name": "Bot"}},
            {"type": "app", "id": "A1", "name": "Bot"},
        ),
        (
            {"type": "workspace", "workspace": {"id": "T1", "name": "ws", "domain": "ws"}},
            {"type": "workspace", "id": "T1", "name": "ws"},
        ),
        (
            {"type": "enterprise", "enterprise": {"id": "E1", "domain": "birdland"}},
            {"type": "enterprise", "id": "E1", "name": "birdland"},
        ),
        (
            {"type": "message", "message": {"channel": "C1", "team": "T1", "timestamp": "1700.01"}},
            {"type": "message", "id": "C1/1700.01"},
        ),
        (
            {"type": "workflow", "workflow": {"id": "Wf1", "name": "Flow"}},
            {"type": "workflow", "id": "Wf1", "name": "Flow"},
        ),
        (
            {"type": "workflow_v2", "workflow_v2": {"id": "Wf2"}},
            {"type": "workflow_v2", "id": "Wf2"},
        ),
        (
            {"type": "barrier", "barrier": {"id": "B1", "primary_usergroup": "S1"}},
            {"type": "barrier", "id": "B1"},
        ),
        (
            {"type": "role", "role": {"id": "Rl1", "name": "Admin", "type": "system"}},
            {"type": "role", "id": "Rl1", "name": "Admin"},
        ),
        (
            {"type": "account_type_role", "account_type_role": {"id": "Rl2", "name": "Guest"}},
            {"type": "account_type_role", "id": "Rl2", "name": "Guest"},
        ),
        (
            {"type": "usergroup", "usergroup": {"id": "S1", "name": "oncall"}},
            {"type": "usergroup", "id": "S1", "name": "oncall"},
        ),
        (
            {"type": "huddle", "huddle": {"id": "R1", "date_start": 1, "participants": ["W1"]}},
            {"type": "huddle", "id": "R1"},
        ),
        (
            {"type": "canvas", "canvas": {"id": "F9", "title": "Plan"}},
            {"type": "canvas", "id": "F9", "name": "Plan"},
        ),
        ({"type": "list", "list": {"id": "L1"}}, {"type": "list", "id": "L1"}),
        ({"type": "user", "user": "W7"}, {"type": "user", "id": "W7"}),  # drift: a bare id
        ({"hologram": {"id": "H1", "name": "x"}}, {"type": "hologram", "id": "H1", "name": "x"}),
    ],
)
def test_every_entity_type_becomes_a_target(entity: dict[str, Any], target: dict[str, str]) -> None:
    event = map_audit_entry(entry(1, NOW, entity=entity))
    assert schema_errors(event) == []
    assert event["targets"] == [target]
    assert event["raw"]["entity"] == entity


def test_type_drift_and_unknown_fields_are_tolerated_and_kept() -> None:
    numeric = entry(1, NOW)
    numeric["context"] = {**numeric["context"], "session_id": 847288190092, "ip_address": 1234}
    assert map_audit_entry(numeric)["actor"]["session"] == "847288190092"
    assert map_audit_entry(numeric)["actor"]["ip"] == "1234"
    null = entry(2, NOW)
    null["context"] = {**null["context"], "session_id": None, "app": {"id": "A9", "name": "X"}}
    event = map_audit_entry(null)
    assert "session" not in event["actor"]
    assert event["context"]["app"] == "A9"
    odd = entry(
        3,
        NOW,
        date_create=str(NOW),
        action="pref.some setting/changed..x",
        actor={"type": "workflow", "workflow": {"id": "Wf1"}},
        details={"previous_value": "a", "new_value": "b", "never_seen": {"deep": [1, {"x": None}]}},
        token="xoxp-leaked-into-a-payload",
        future_field={"v": 2},
    )
    event = map_audit_entry(odd)
    assert schema_errors(event) == []
    assert event["action"] == "slack.audit.pref.some_setting_changed.x"
    assert event["class"] == "admin"
    assert event["actor"] == {
        "type": "service",
        "id": "Wf1",
        "ip": "1.23.45.678",
        "ua": TEMPLATE["context"]["ua"],
        "session": "847288190092",
    }
    assert event["time"] == "2023-11-14T22:13:20.000000Z"
    assert event["raw"]["details"]["never_seen"] == {"deep": [1, {"x": None}]}
    assert event["raw"]["future_field"] == {"v": 2}
    assert "token" not in event["raw"]
    placeholder = map_audit_entry(
        entry(4, NOW, actor={"type": "user", "user": {"id": "USLACKUSER"}})
    )
    assert placeholder["actor"]["type"] == "system"
    bare = map_audit_entry({"id": "x", "action": "file_downloaded_blocked"})
    assert schema_errors(bare) == []
    assert bare["result"] == {"status": "failure", "reason": "file_downloaded_blocked"}
    assert bare["actor"] == {"type": "system", "id": "slack"}
    long = map_audit_entry(entry(5, NOW, action="a" * 300))
    assert len(long["action"]) == 128
    assert schema_errors(long) == []
    no_id = map_audit_entry({"date_create": NOW, "action": "user_login"})
    assert no_id["id"] == map_audit_entry({"action": "user_login", "date_create": NOW})["id"]
    awkward = map_audit_entry(entry(6, NOW, actor={"type": "user", "user": {"id": "W" * 900}}))
    assert schema_errors(awkward) == []  # cut to the schema's 256 characters
    assert awkward["actor"]["id"] == "W" * 256
    assert awkward["raw"]["actor"]["user"]["id"] == "W" * 900


# -- the poll cycle against the fake API -----------------------------------------------------


def test_pages_are_read_newest_first_with_the_window_on_every_page(
    fake: FakeAuditLogs, service: Service
) -> None:
    entries = [entry(i, NOW - 100 + i * 10) for i in range(10)]
    fake.add(*entries, entry(99, NOW - 301), entry(98, NOW + 1))  # outside the window
    summary = make_poller(service, fake).poll_once()
    assert (summary.pages, summary.entries, summary.appended, summary.duplicates) == (4, 10, 10, 0)
    requests = page_requests(fake)
    # first cycle: from now - overlap_s to now, sent again with every page
    assert [(p["oldest"], p["latest"], p["limit"]) for p in requests] == [
        (str(NOW - 300), str(NOW), "3")
    ] * 4
    assert ["cursor" in p for p in requests] == [False, True, True, True]
    assert set(fake.authorizations) == {f"Bearer {TOKEN}"}
    records = stored(service)
    assert [r["raw"]["date_create"] for r in records] == sorted(
        (e["date_create"] for e in entries), reverse=True
    )  # appended in the order Slack lists them: newest first
    assert stored_ids(service) == ids(*entries)


def test_a_full_backfill_reads_everything_once_and_advances_the_watermark(
    fake: FakeAuditLogs, service: Service
) -> None:
    entries = [entry(i, NOW - 10_000 + i * 800) for i in range(12)]
    fake.add(*entries)
    summary = make_poller(service, fake, backfill_from="2023-11-14T20:00:00Z").poll_once()
    start = 1_699_992_000
    assert summary.oldest == start
    assert all(p["oldest"] == str(start) and p["latest"] == str(NOW) for p in fake.requests)
    assert stored_ids(service) == ids(*[e for e in entries if e["date_create"] >= start])
    newest = max(e["date_create"] for e in entries)
    assert summary.watermark == newest
    assert service.registry.get_state(STATE_NAME) == {"watermark": newest}
    # an entry before the backfill start is never read
    assert entries[0]["date_create"] < start
    assert entries[0]["id"] not in stored_ids(service)


def test_rate_limits_wait_retry_after_and_retry(fake: FakeAuditLogs, service: Service) -> None:
    entries = [entry(i, NOW - 100 + i) for i in range(7)]
    fake.add(*entries)
    fake.script(
        429,
        {"ok": False, "error": "ratelimited"},
        {"Retry-After": "7"},
        when=lambda p: "cursor" in p,
    )
    sleeps: list[float] = []
    summary = make_poller(service, fake, sleeps).poll_once()
    assert sleeps == [7.0]
    assert summary.appended == 7
    assert stored_ids(service) == ids(*entries)


def test_server_errors_back_off_and_retry(fake: FakeAuditLogs, service: Service) -> None:
    entries = [entry(i, NOW - 100 + i) for i in range(4)]
    fake.add(*entries)
    fake.script(500, {"ok": False, "error": "internal_error"})
    fake.script(503, "<html>unavailable</html>")
    sleeps: list[float] = []
    summary = make_poller(service, fake, sleeps).poll_once()
    assert sleeps == [1.0, 2.0]
    assert summary.appended == 4
    assert stored_ids(service) == ids(*entries)


def test_persistent_server_errors_raise_and_leave_the_state_alone(
    fake: FakeAuditLogs, service: Service
) -> None:
    fake.add(entry(1, NOW - 10))
    fake.script(502, {"ok": False}, times=5)
    sleeps: list[float] = []
    with pytest.raises(SlackAuditError, match="after 5 attempts: HTTP 502") as info:
        make_poller(service, fake, sleeps).poll_once()
    assert "next run continues" in info.value.diagnostics()
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert service.registry.get_state(STATE_NAME) is None
    assert stored(service) == []


def test_network_errors_are_retried_then_reported(service: Service) -> None:
    dead = FakeAuditLogs()
    dead.close()  # nothing listens on its port any more
    sleeps: list[float] = []
    with pytest.raises(SlackAuditError, match="network error: ConnectError"):
        make_poller(service, dead, sleeps).poll_once()
    assert len(sleeps) == 4
    assert service.registry.get_state(STATE_NAME) is None


def test_an_invalid_cursor_mid_paging_restarts_the_window(
    fake: FakeAuditLogs, service: Service
) -> None:
    entries = [entry(i, NOW - 100 + i) for i in range(10)]
    fake.add(*entries)
    fake.script(
        400,
        {"ok": False, "error": "invalid_cursor"},
        when=lambda p: "cursor" in p and len(fake.requests) >= 3,
    )
    summary = make_poller(service, fake).poll_once()
    assert summary.restarts == 1
    requests = page_requests(fake)
    restarted = requests[3]
    assert "cursor" not in restarted
    assert (restarted["oldest"], restarted["latest"]) == (
        requests[0]["oldest"],
        requests[0]["latest"],
    )
    assert summary.duplicates == 6  # the two pages read before the refusal, read again
    assert summary.appended == 10
    assert stored_ids(service) == ids(*entries)


def test_type_drift_and_unknown_actions_survive_into_the_stored_record(
    fake: FakeAuditLogs, service: Service
) -> None:
    as_string = entry(1, NOW - 20)
    as_number = entry(2, NOW - 10, action="brand_new_action_2031")
    as_number["context"] = {**as_number["context"], "session_id": 847288190093}
    as_number["details"] = {"new_value": "x", "never_documented": {"nested": [1, 2]}}
    as_number["entity"] = {"type": "canvas", "canvas": {"id": "F77", "title": "Plans"}}
    as_number["added_in_2031"] = True
    fake.add(as_string, as_number)
    make_poller(service, fake).poll_once()
    records = {r["id"]: r for r in stored(service)}
    first, second = records[as_string["id"]], records[as_number["id"]]
    assert first["actor"]["session"] == "847288190092"
    assert second["actor"]["session"] == "847288190093"
    assert first["actor"]["ip"] == second["actor"]["ip"] == "1.23.45.678"
    assert second["action"] == "slack.audit.brand_new_action_2031"
    assert second["targets"] == [{"type": "canvas", "id": "F77", "name": "Plans"}]
    assert second["raw"]["details"]["never_documented"] == {"nested": [1, 2]}
    assert second["raw"]["added_in_2031"] is True
    assert second["raw"]["context"]["session_id"] == 847288190093
    assert second["raw"] == as_number


def _principal() -> Principal:
    return Principal(PRINCIPAL_ID, "default", "ingest", False, internal=True)


def test_a_crash_mid_cycle_loses_nothing_and_duplicates_nothing(
    fake: FakeAuditLogs, service: Service
) -> None:
    entries = [entry(i, NOW - 200 + i) for i in range(12)]  # 4 pages of 3
    fake.add(*entries)
    real_append = service_append(service, _principal(), "default")
    calls = 0

    def append_then_die(events: list[dict[str, Any]]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StorageError("the disk went away")
        return real_append(events)

    crashing = AuditPoller(
        HttpxFetch(TOKEN, fake.base_url),
        append_then_die,
        lambda: service.registry.get_state(STATE_NAME),
        lambda state: service.registry.put_state(STATE_NAME, state, "now"),
        clock=Clock(),
        sleep=lambda s: None,
        limit=3,
    )
    with pytest.raises(StorageError):
        crashing.poll_once()
    del crashing  # the process is gone
    state = service.registry.get_state(STATE_NAME)
    assert state is not None
    assert state["phase"] == "paging"
    assert state["cursor"]
    assert len(stored(service)) == 6

    summary = make_poller(service, fake, clock=Clock(NOW + 60)).poll_once()
    assert summary.resumed
    assert (summary.pages, summary.appended, summary.duplicates) == (2, 6, 0)
    assert summary.latest == NOW  # the interrupted cycle's window, not a new one
    assert stored_ids(service) == ids(*entries)
    assert len(stored(service)) == 12
    assert service.registry.get_state(STATE_NAME) == {"watermark": NOW - 189}


def test_dying_between_append_and_checkpoint_rereads_as_duplicates(
    fake: FakeAuditLogs, service: Service
) -> None:
    entries = [entry(i, NOW - 200 + i) for i in range(12)]
    fake.add(*entries)
    saves = 0

    def save_then_die(state: dict[str, Any]) -> None:
        nonlocal saves
        saves += 1
        if saves == 2:  # page 2 is appended, its checkpoint is not
            raise OSError("killed")
        service.registry.put_state(STATE_NAME, state, "now")

    dying = AuditPoller(
        HttpxFetch(TOKEN, fake.base_url),
        service_append(service, _principal(), "default"),
        lambda: service.registry.get_state(STATE_NAME),
        save_then_die,
        clock=Clock(),
        sleep=lambda s: None,
        limit=3,
    )
    with pytest.raises(OSError, match="killed"):
        dying.poll_once()
    fake.invalidate_cursors()  # and by the restart the saved cursor has expired
    summary = make_poller(service, fake).poll_once()
    assert summary.resumed
    assert summary.restarts == 1
    assert summary.duplicates == 6
    assert summary.appended == 6
    assert stored_ids(service) == ids(*entries)
    assert len(stored(service)) == 12


def test_late_entries_inside_the_overlap_are_picked_up_next_cycle(
    fake: FakeAuditLogs, service: Service
) -> None:
    first = [entry(i, NOW - 250 + i * 50) for i in range(5)]  # up to NOW - 50
    fake.add(*first)
    clock = Clock()
    poller = make_poller(service, fake, clock=clock)
    assert poller.poll_once().watermark == NOW - 50
    late = entry(100, NOW - 200)  # happened before the watermark, visible only now
    newer = entry(101, NOW + 30)
    fake.add(late, newer)
    clock.now = NOW + 60
    summary = poller.poll_once()
    assert summary.oldest == NOW - 50 - 300
    assert summary.latest == NOW + 60
    assert summary.appended == 2
    assert summary.duplicates == 5
    assert stored_ids(service) == ids(*first, late, newer)
    assert summary.watermark == NOW + 30


def test_a_refused_token_is_a_config_error_saying_how_to_fix_it(
    fake: FakeAuditLogs, service: Service
) -> None:
    fake.add(entry(1, NOW - 10))
    with pytest.raises(ConfigError, match="invalid_auth") as info:
        make_poller(service, fake, token="xoxp-not-the-right-one").poll_once()
    message = info.value.diagnostics()
    assert "auditlogs:read" in message
    assert "owner" in message
    assert service.registry.get_state(STATE_NAME) is None
    fake.script(
        403,
        {"ok": False, "error": "missing_scope", "needed": "auditlogs:read", "provided": "admin"},
    )
    with pytest.raises(ConfigError, match=r"missing_scope \(HTTP 403; needed: auditlogs:read"):
        make_poller(service, fake).poll_once()
    fake.script(200, {"ok": False, "error": "not_allowed_token_type"})
    with pytest.raises(ConfigError, match=r"not_allowed_token_type.*org"):
        make_poller(service, fake).poll_once()


def test_the_token_never_reaches_a_log(
    fake: FakeAuditLogs, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.add(*[entry(i, NOW - 100 + i) for i in range(5)])
    fake.script(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
    fake.script(500, {"ok": False, "error": "internal_error"})
    fake.script(400, {"ok": False, "error": "invalid_cursor"}, when=lambda p: "cursor" in p)
    poller = make_poller(service, fake)
    poller.poll_once()
    with pytest.raises(ConfigError):
        make_poller(service, fake, token=TOKEN + "x").poll_once()
    fetch = HttpxFetch(TOKEN, fake.base_url)
    assert TOKEN not in repr(fetch)
    assert TOKEN not in repr(poller)
    assert TOKEN not in repr(config(fake))
    assert caplog.records
    for record in caplog.records:
        assert TOKEN not in JsonFormatter().format(record)
        assert TOKEN not in record.getMessage()
    assert TOKEN not in caplog.text


def test_the_background_poller_runs_cycles_and_survives_failures(
    fake: FakeAuditLogs, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trailseal.poller")
    now = time.time()
    entries = [entry(i, int(now) - 100 + i) for i in range(4)]
    fake.add(*entries)
    fake.script(401, {"ok": False, "error": "invalid_auth"})  # the first cycle fails
    runner = start_audit_poller(service, config(fake))
    try:
        deadline = time.monotonic() + 10
        while runner.cycles < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop()
    assert runner.failures >= 1
    assert runner.cycles >= 2
    assert stored_ids(service) == ids(*entries)
    failed = [r for r in caplog.records if r.getMessage() == "poll cycle failed"]
    line = json.loads(JsonFormatter().format(failed[0]))
    assert line["logger"] == "trailseal.poller"
    assert line["error"] == "ConfigError"
    assert "auditlogs:read" in line["detail"]
    assert TOKEN not in caplog.text


def test_cli_poll_once_end_to_end(
    fake: FakeAuditLogs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    svc, _ = Service.open(data)
    svc.close()
    with (data / "trailseal.toml").open("a") as f:
        f.write(
            "\n[slack.audit]\n"
            'token_env = "TS_TEST_SLACK_AUDIT_TOKEN"\n'
            f'base_url = "{fake.base_url}"\n'
            "limit = 2\n"
            'backfill_from = "2023-11-01"\n'
        )
    monkeypatch.setenv("TS_TEST_SLACK_AUDIT_TOKEN", TOKEN)
    entries = [entry(i, NOW + i) for i in range(5)]
    fake.add(*entries)
    capsys.readouterr()
    assert main(["--data-dir", str(data), "slack", "poll", "--once"]) == 0
    out = capsys.readouterr()
    assert "polled 3 pages: 5 entries, 5 appended, 0 duplicates" in out.out
    assert fake.requests[0]["oldest"] == "1698796800"
    assert main(["--data-dir", str(data), "slack", "poll", "--once"]) == 0
    assert "0 appended, 5 duplicates" in capsys.readouterr().out
    svc, _ = Service.open(data)
    try:
        assert stored_ids(svc) == ids(*entries)
    finally:
        svc.close()

    monkeypatch.setenv("TS_TEST_SLACK_AUDIT_TOKEN", "xoxp-revoked-0000000000")
    assert main(["--data-dir", str(data), "slack", "poll", "--once"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "error: Slack refused the Audit Logs token: invalid_auth" in err
    assert "auditlogs:read" in err
    assert TOKEN not in err
    assert "xoxp-revoked" not in err


def test_serve_runs_the_poller_in_the_background_and_stops_it(
    fake: FakeAuditLogs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    data = tmp_path / "data"
    svc, _ = Service.open(data)
    svc.close()
    with (data / "trailseal.toml").open("a") as f:
        f.write(
            "\n[slack.audit]\n"
            'token_env = "TS_TEST_SLACK_AUDIT_TOKEN"\n'
            f'base_url = "{fake.base_url}"\n'
            "interval_s = 0.05\n"
        )
    monkeypatch.setenv("TS_TEST_SLACK_AUDIT_TOKEN", TOKEN)
    entries = [entry(i, int(time.time()) - 100 + i) for i in range(3)]
    fake.add(*entries)

    def instead_of_serving() -> None:  # "serve" until the poller has run two cycles
        deadline = time.monotonic() + 10
        while len(fake.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)

    def server_run(self: uvicorn.Server, sockets: Any = None) -> None:
        self.started = True
        instead_of_serving()

    # `serve` may run uvicorn either way; neither may really listen here.
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: instead_of_serving())
    monkeypatch.setattr(uvicorn.Server, "run", server_run)
    root = logging.getLogger("trailseal")
    saved = (root.handlers[:], root.level, root.propagate)  # serve configures JSON logging
    try:
        assert main(["--data-dir", str(data), "serve", "--port", "0"]) == 0
    finally:
        root.handlers[:], root.level, root.propagate = saved
    assert not [t for t in threading.enumerate() if t.name.startswith("poller-")]
    svc, _ = Service.open(data)
    try:
        assert stored_ids(svc) == ids(*entries)
    finally:
        svc.close()
