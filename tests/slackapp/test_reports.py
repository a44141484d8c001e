"""Audit reports: the right events for each kind of scope, files an auditor can read and
a bundle they can check, Slack enrichment through the fake Web API, upload, and the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web import WebClient

import trailseal.bundle
import trailseal.slackapp.upload
from tests.slackapp.fake_slack import FakeSlack
from trailseal.bundle import verify_bundle
from trailseal.cli import main
from trailseal.core.merkle import leaf_hash
from trailseal.errors import FormatError, SlackError
from trailseal.service.core import Service
from trailseal.service.registry import Principal, TenantLog
from trailseal.slackapp.model import AuditRequest, AuditScope, ReportFiles
from trailseal.slackapp.report_files import csv_cell
from trailseal.slackapp.reports import build_report, upload_report

HOME, EXT = "T0HOME", "T0EXT"
PRINCIPAL = Principal("trailseal:test", "default", "ingest", False, internal=True)


def ev(eid: str, day: int, action: str, actor: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": eid,
        "source": "slack.events",
        "time": f"2025-05-{day:02d}T10:00:00Z",
        "action": action,
        "actor": actor,
        **extra,
    }


U1 = {"type": "user", "id": "U1", "team": HOME}
U2 = {"type": "user", "id": "U2", "team": HOME, "name": "<script>alert(1)</script>"}
UX = {"type": "user", "id": "UX", "team": EXT}
HOME_CTX = {"workspace": HOME}
EVENTS = [
    ev("e0", 1, "message.posted", U1, context={**HOME_CTX, "channel": "C1"}),
    ev("e1", 1, "message.posted", UX, context={**HOME_CTX, "channel": "C2"}),
    ev("e2", 2, "channel.renamed", U2, context=HOME_CTX, targets=[{"type": "channel", "id": "C1"}]),
    ev("e3", 3, "app.installed", {"type": "app", "id": "A1"}, context={**HOME_CTX, "app": "A1"}),
    ev(
        "e4",
        4,
        "member.joined",
        U1,
        context={**HOME_CTX, "channel": "C2"},
        targets=[{"type": "user", "id": "U2"}],
    ),
    ev("e5", 30, "message.posted", U1, context={**HOME_CTX, "channel": "C1"}),  # April: below
    ev(
        "e6",
        5,
        "deploy.finished",
        {"type": "user", "id": "U9", "team": "T0OTHER"},
        context={"workspace": "T0OTHER"},
        targets=[{"type": "database", "id": "db1", "name": "production-db"}],
    ),
    ev(
        "e7",
        6,
        "file.shared",
        {"type": "user", "id": "U3", "team": HOME, "name": "=cmd|' /C calc'!A0"},
        context={**HOME_CTX, "channel": "C3"},
        targets=[{"type": "file", "id": "F1", "name": '=HYPERLINK("http://evil")'}],
    ),
]
EVENTS[5]["time"] = "2025-04-30T10:00:00Z"


class Clock:
    def __call__(self) -> datetime:
        return datetime(2025, 6, 2, tzinfo=UTC)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc, _ = Service.open(tmp_path / "data", clock=Clock())
    svc.ingest(PRINCIPAL, "default", EVENTS)
    yield svc
    svc.close()


@pytest.fixture
def tlog(service: Service) -> TenantLog:
    return service.registry.log("default", "default")


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(HOME, "Home Org") as server:
        server.add_team(EXT, "Partner", "partner")
        server.add_user("U1", "alice", real_name="Alice Liddell")
        server.add_user("U2", "bob")
        server.add_user("UX", "eve", team_id=EXT)
        server.add_user("US", "sam", is_stranger=True)
        server.add_channel("C1", "general", members=["U1", "U2"])
        server.add_channel("C2", "partners", members=["U1", "UX", "US"], is_ext_shared=True)
        server.add_app("A1", "Deploy Bot")
        yield server


def request(kind: str, include_external: bool = False, **scope: Any) -> AuditRequest:
    return AuditRequest(
        id="req-1",
        requester="U1",
        team_id=HOME,
        scope=AuditScope(
            kind=kind,  # type: ignore[arg-type]
            start="2025-05-01T00:00:00Z",
            end="2025-06-01T00:00:00Z",
            include_external=include_external,
            **scope,
        ),
        purpose="SOC 2 <evidence> & review",
        requested_at="2025-06-01T00:00:00Z",
        expires_at="2025-06-02T00:00:00Z",
    )


def csv_rows(files: ReportFiles) -> list[dict[str, str]]:
    with files.csv.open(newline="") as f:
        return list(csv.DictReader(f))


def event_ids(files: ReportFiles) -> list[str]:
    return [r["event_id"] for r in csv_rows(files)]


def verifiers(service: Service, tlog: TenantLog) -> Any:
    return service.ledger(tlog).verifiers()


@pytest.mark.parametrize(
    ("kind", "scope", "include_external", "expected"),
    [
        ("channel", {"channels": ("C1",)}, False, ["e0", "e2"]),
        ("channel", {"channels": ("C2",)}, False, ["e4"]),
        ("channel", {"channels": ("C2",)}, True, ["e1", "e4"]),
        ("channel", {"channels": ("C1", "C3")}, False, ["e0", "e2", "e7"]),
        ("user", {"users": ("U2",)}, False, ["e2", "e4"]),
        ("user", {"users": ("UX",)}, True, ["e1"]),
        ("app", {"apps": ("A1",)}, False, ["e3"]),
        ("team", {"team_id": HOME}, False, ["e0", "e2", "e3", "e4", "e7"]),
        ("team", {"team_id": HOME}, True, ["e0", "e1", "e2", "e3", "e4", "e7"]),
        ("query", {"query": "production-db"}, True, ["e6"]),
        ("query", {"query": "production-db"}, False, []),  # U9 is of another team
        ("query", {"query": "message.posted"}, False, ["e0"]),
        # The form says users "narrow the others", and approvers see them in the scope.
        ("channel", {"channels": ("C1",), "users": ("U2",)}, False, ["e2"]),
        ("team", {"team_id": HOME, "users": ("U2",)}, False, ["e2", "e4"]),
        ("app", {"apps": ("A1",), "users": ("U2",)}, False, []),
        ("query", {"query": "message.posted", "users": ("U2",)}, False, []),
        # Channels and apps shown in the scope narrow the other kinds as well.
        ("user", {"users": ("U2",), "channels": ("C1",)}, False, ["e2"]),
        ("team", {"team_id": HOME, "channels": ("C2",)}, False, ["e4"]),
        ("query", {"query": "message.posted", "channels": ("C3",)}, False, []),
        ("team", {"team_id": HOME, "apps": ("A1",)}, False, ["e3"]),
    ],
)
def test_each_kind_selects_exactly_its_events(
    service: Service,
    tlog: TenantLog,
    tmp_path: Path,
    kind: str,
    scope: dict[str, Any],
    include_external: bool,
    expected: list[str],
) -> None:
    files = build_report(
        service, tlog, request(kind, include_external, **scope), tmp_path / "out", web=None
    )
    assert event_ids(files) == expected
    assert files.rows == files.log_entries == len(expected)
    result = verify_bundle(files.bundle, verifiers(service, tlog))
    assert result.ok, result.problems
    assert result.entries_checked == len(expected)


def test_a_query_report_pages_through_the_index(
    service: Service, tlog: TenantLog, tmp_path: Path
) -> None:
    events = [ev(f"bulk{i}", 7, "bulk.event", U1, context=HOME_CTX) for i in range(1500)]
    for first in range(0, 1500, 500):
        service.ingest(PRINCIPAL, "default", events[first : first + 500])
    files = build_report(service, tlog, request("query", query="bulk.event"), tmp_path, web=None)
    assert event_ids(files) == [f"bulk{i}" for i in range(1500)]
    assert verify_bundle(files.bundle, verifiers(service, tlog)).ok


def test_external_members_excluded_unless_asked(
    service: Service, tlog: TenantLog, tmp_path: Path
) -> None:
    left_out = build_report(
        service, tlog, request("channel", channels=("C2",)), tmp_path / "a", web=None
    )
    summary = json.loads(left_out.json.read_text())["summary"]
    assert summary["excluded_external_rows"] == 1
    included = build_report(
        service, tlog, request("channel", True, channels=("C2",)), tmp_path / "b", web=None
    )
    rows = csv_rows(included)
    assert [(r["event_id"], r["external"]) for r in rows] == [("e1", "true"), ("e4", "false")]


def test_csv_and_json_contents(service: Service, tlog: TenantLog, tmp_path: Path) -> None:
    files = build_report(service, tlog, request("team", team_id=HOME), tmp_path / "r", web=None)
    ledger = service.ledger(tlog)
    rows = csv_rows(files)
    first = rows[0]
    assert first["index"] == "0"
    assert first["leaf_hash"] == leaf_hash(ledger.entry(0).data).hex()
    assert (first["action"], first["actor_id"], first["channel"]) == ("message.posted", "U1", "C1")
    shared = next(r for r in rows if r["event_id"] == "e7")
    assert shared["actor_name"] == "'=cmd|' /C calc'!A0"  # neutralised for spreadsheets
    assert shared["targets"] == 'file:F1 (=HYPERLINK("http://evil"))'  # harmless mid-cell
    document = json.loads(files.json.read_text())
    assert document["report"]["request"]["id"] == "req-1"
    assert document["report"]["checkpoint"]["tree_size"] == files.tree_size
    assert [r["event_id"] for r in document["rows"]] == [r["event_id"] for r in rows]
    assert document["rows"][-1]["actor_name"] == "=cmd|' /C calc'!A0"  # JSON keeps it as is
    assert document["summary"]["rows"] == 5
    assert dict(map(tuple, document["summary"]["by_action"]))["message.posted"] == 1
    assert files.sha256[files.csv.name] == hashlib.sha256(files.csv.read_bytes()).hexdigest()
    assert set(files.sha256) == {
        p.name for p in (files.csv, files.json, files.summary_html, files.bundle)
    }


def test_files_are_private_and_complete(service: Service, tlog: TenantLog, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "r1"
    files = build_report(service, tlog, request("team", team_id=HOME), out, web=None)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in (files.csv, files.json, files.summary_html, files.bundle):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not list(out.glob("*.partial"))


def test_html_summary_is_escaped_and_blocks_fit_slack(
    service: Service, tlog: TenantLog, tmp_path: Path
) -> None:
    files = build_report(service, tlog, request("user", users=("U2",)), tmp_path, web=None)
    page = files.summary_html.read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "SOC 2 &lt;evidence&gt; &amp; review" in page
    assert "trailseal verify-bundle" in page
    blocks = files.summary_blocks
    assert 0 < len(blocks) <= 50
    assert blocks[0]["type"] == "header"
    assert len(blocks[0]["text"]["text"]) <= 150
    text = json.dumps(blocks)
    assert "<script>" not in text
    assert "SOC 2 &lt;evidence&gt; &amp; review" in text


def test_bundle_fails_when_a_byte_is_altered(
    service: Service, tlog: TenantLog, tmp_path: Path
) -> None:
    files = build_report(service, tlog, request("team", team_id=HOME), tmp_path, web=None)
    with zipfile.ZipFile(files.bundle) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    for name, old, new in (
        ("chunks/000000.entries", b"member.joined", b"member.jOined"),
        ("chunks/000000.proof", b"A", b"B"),
    ):
        altered = tmp_path / f"altered-{name.rsplit('.', 1)[1]}.zip"
        with zipfile.ZipFile(altered, "w") as zf:
            for info, data in members:
                zf.writestr(info, data.replace(old, new, 1) if info.filename == name else data)
        result = verify_bundle(altered, verifiers(service, tlog))
        assert not result.ok
        assert f"{name} does not match its hash in the manifest" in result.problems
        assert any(p.startswith("entry ") for p in result.problems), result.problems


def test_bundle_in_many_chunks(
    service: Service, tlog: TenantLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trailseal.bundle, "CHUNK_ENTRIES", 2)
    files = build_report(service, tlog, request("team", True, team_id=HOME), tmp_path, web=None)
    with zipfile.ZipFile(files.bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "trailseal-evidence-bundle/v2"
    assert [c["entries"] for c in manifest["chunks"]] == [2, 2, 2]
    result = verify_bundle(files.bundle, verifiers(service, tlog))
    assert result.ok, result.problems
    assert result.entries_checked == 6


def test_scope_errors(service: Service, tlog: TenantLog, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"needs at least one of scope\.channels"):
        build_report(service, tlog, request("channel"), tmp_path, web=None)
    req = request("team", team_id=HOME)
    inverted = replace(req, scope=replace(req.scope, start=req.scope.end))
    with pytest.raises(FormatError, match="time range is empty"):
        build_report(service, tlog, inverted, tmp_path, web=None)


# -- Slack enrichment ---------------------------------------------------------------------


def web_for(fake: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.base_url)


def test_enrichment_names_members_and_notes_missing_scope(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    fake.rate_limit("users.info", retry_after_s=0)  # the first lookup is rate limited
    files = build_report(
        service, tlog, request("team", team_id=HOME, channels=("C2",)), tmp_path, web=web_for(fake)
    )
    rows = csv_rows(files)
    assert rows[0]["actor_name"] == "Alice Liddell"
    infos = fake.calls_to("users.info")
    assert [c.params["user"] for c in infos].count("U1") == 2  # 429, then the retry
    assert len({c.params["user"] for c in infos}) == len(infos) - 1  # otherwise cached
    summary = json.loads(files.json.read_text())["summary"]
    slack = summary["slack"]
    assert slack["team"]["name"] == "Home Org"
    channel = slack["channels"][0]
    assert (channel["name"], channel["is_ext_shared"], channel["external"]) == ("partners", True, 2)
    assert channel["member_ids"] == ["U1"]  # UX (other org) and US (stranger) left out
    assert "app listing: not available: missing scope admin.apps:read" in slack["notes"]
    assert "not available: missing scope admin.apps:read" in files.summary_html.read_text()
    assert all(c.token_sent for c in fake.calls)


def test_enrichment_lists_apps_when_the_scope_allows(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    fake.scopes.add("admin.apps:read")
    files = build_report(service, tlog, request("app", apps=("A1",)), tmp_path, web=web_for(fake))
    slack = json.loads(files.json.read_text())["summary"]["slack"]
    assert slack["apps"] == [{"id": "A1", "name": "Deploy Bot"}]
    assert "notes" not in slack


def test_an_app_listing_refused_for_the_token_type_is_noted(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    fake.fail("admin.apps.approved.list", "not_allowed_token_type")
    files = build_report(service, tlog, request("app", apps=("A1",)), tmp_path, web=web_for(fake))
    notes = json.loads(files.json.read_text())["summary"]["slack"]["notes"]
    assert "app listing: not available: not_allowed_token_type" in notes
    assert files.rows == 1


def test_a_user_slack_will_not_show_is_noted_not_fatal(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    fake.fail("users.info", "user_not_visible")
    files = build_report(service, tlog, request("user", users=("U2",)), tmp_path, web=web_for(fake))
    assert event_ids(files) == ["e2", "e4"]
    notes = json.loads(files.json.read_text())["summary"]["slack"]["notes"]
    assert [n for n in notes if n.endswith(": user_not_visible")]


def test_slack_says_who_is_external(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    # The log says U1 is home; Slack says this U1 belongs to the partner org.
    fake.add_user("U1", "alice", team_id=EXT)
    files = build_report(service, tlog, request("user", users=("U1",)), tmp_path, web=web_for(fake))
    assert files.rows == 0
    assert json.loads(files.json.read_text())["summary"]["excluded_external_rows"] == 2


def test_slack_auth_failure_is_a_trailseal_error(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    fake.fail("team.info", "invalid_auth")
    with pytest.raises(SlackError, match=r"team\.info failed: invalid_auth") as err:
        build_report(service, tlog, request("team", team_id=HOME), tmp_path, web=web_for(fake))
    assert err.value.code == "invalid_auth"
    assert not list(tmp_path.glob("*.partial"))


def test_upload_sends_every_file(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    req = request("team", team_id=HOME)
    files = build_report(service, tlog, req, tmp_path, web=None)
    ids = upload_report(web_for(fake), "C1", "1700000000.000001", req, files)
    assert len(ids) == 4
    uploaded = {fake.files[i].filename: fake.files[i] for i in ids}
    for path in (files.csv, files.json, files.summary_html, files.bundle):
        assert uploaded[path.name].data == path.read_bytes()
        assert uploaded[path.name].shared_to == ["C1"]
        assert uploaded[path.name].thread_ts == "1700000000.000001"
    assert "req-1" in (uploaded[files.csv.name].initial_comment or "")
    assert uploaded[files.bundle.name].title == "Evidence bundle"


def test_upload_failure_names_the_slack_error(
    service: Service, tlog: TenantLog, tmp_path: Path, fake: FakeSlack
) -> None:
    req = request("team", team_id=HOME)
    files = build_report(service, tlog, req, tmp_path, web=None)
    fake.fail("files.completeUploadExternal", "not_in_channel")
    with pytest.raises(SlackError, match="not_in_channel") as err:
        upload_report(web_for(fake), "C1", None, req, files)
    assert err.value.code == "not_in_channel"


# -- CLI ---------------------------------------------------------------------------------


def test_cli_audit_report(
    tmp_path: Path,
    fake: FakeSlack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    svc, _ = Service.open(data, clock=Clock())
    svc.ingest(PRINCIPAL, "default", EVENTS)
    key = svc.ledger(svc.registry.log("default", "default")).verifiers()[0].to_string()
    svc.close()
    monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-test")
    out = tmp_path / "out"
    args = [
        "--data-dir", str(data), "audit-report", "--kind", "channel", "--channel", "C1",
        "--since", "2025-05-01T00:00:00Z", "--until", "2025-06-01T00:00:00Z",
        "--purpose", "incident review", "--out", str(out),
        "--slack-token-env", "TEST_SLACK_TOKEN", "--slack-base-url", fake.base_url,
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 rows; 2 log entries proven into tree size 9" in printed  # + the access event
    bundle = next(out.glob("*.evidence.zip"))
    assert f"{bundle}  sha256:" in printed
    assert fake.calls_to("conversations.info")
    capsys.readouterr()
    assert main(["verify-bundle", str(bundle), "--key", key]) == 0
    assert "2 entries proven into tree size 9" in capsys.readouterr().out
    svc, _ = Service.open(data)
    access = svc.ledger(svc.registry.log("default", "default")).entry(8)
    svc.close()
    recorded = json.loads(access.data)
    assert (recorded["action"], recorded["raw"]["purpose"]) == ("access.report", "incident review")

    assert main([*args[:4], "team", *args[6:]]) == 2  # --kind team without --team
    monkeypatch.delenv("TEST_SLACK_TOKEN")
    assert main(args) != 0
    assert "TEST_SLACK_TOKEN is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=x", "'\t=x"),
        ("\r=x", "'\r=x"),
        ("a=b", "a=b"),
        (None, ""),
        (True, "true"),
        (7, "7"),
    ],
)
def test_csv_cells_cannot_become_formulas(value: Any, cell: str) -> None:
    assert csv_cell(value) == cell


def test_a_file_over_slacks_limit_is_left_out_and_the_comment_says_where_it_is(
    service: Service,
    tlog: TenantLog,
    tmp_path: Path,
    fake: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    req = request("team", team_id=HOME)
    files = build_report(service, tlog, req, tmp_path, web=None)
    by_size = sorted((files.csv, files.json, files.summary_html, files.bundle), key=_size)
    largest = by_size[-1]
    assert _size(largest) > _size(by_size[-2])
    monkeypatch.setattr(trailseal.slackapp.upload, "SLACK_FILE_LIMIT", _size(by_size[-2]))
    ids = upload_report(web_for(fake), "C1", None, req, files)
    assert sorted(fake.files[i].filename for i in ids) == sorted(p.name for p in by_size[:-1])
    comment = fake.files[ids[0]].initial_comment or ""
    assert f"{largest.name} (0.0 GB): over Slack's 1 GB file limit, not uploaded" in comment
    assert "download links" in comment
    assert "--key '&lt;verifier key&gt;'" in comment  # mrkdwn: no stray markup


def _size(path: Path) -> int:
    return path.stat().st_size
