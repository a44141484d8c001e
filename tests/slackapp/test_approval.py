"""Approval to report: the decision, the upload, the report event, the download links;
two approvers at once; a crash between approval and report."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.http.support import FixedClock, assert_problem
from tests.slackapp.fake_slack import FakeSlack
from tests.slackapp.harness import (
    APPROVER,
    GROUP_APPROVER,
    NOW,
    REQUESTER,
    Harness,
    build,
    close,
)
from trailseal.bundle import verify_bundle
from trailseal.slackapp.messages import ACTION_APPROVE, ACTION_DENY


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def h(tmp_path: Path, fake: FakeSlack) -> Iterator[Harness]:
    harness = build(tmp_path / "data", fake, FixedClock(NOW))
    try:
        yield harness
        harness.settle()
        harness.assert_log_verifies()
    finally:
        close(harness)


def requested(h: Harness) -> str:
    assert h.submit(REQUESTER).json()["response_action"] == "update"
    h.settle()
    return str(h.events()[-1]["correlation"]["id"])


def approve_and_wait(h: Harness, rid: str, user: str = APPROVER) -> None:
    assert h.click(ACTION_APPROVE, rid, user).status_code == 200
    h.wait_for(lambda: "audit.report_generated" in h.actions(), "the report event")


def download_urls(h: Harness) -> list[str]:
    """The download buttons of the requester's report message."""
    urls = []
    for m in h.fake.messages:
        for block in m.blocks or []:
            for element in block.get("elements", []):
                if isinstance(element, dict) and element.get("url"):
                    urls.append(str(element["url"]))
    return urls


def test_approval_builds_uploads_and_records_the_report(h: Harness) -> None:
    rid = requested(h)
    approve_and_wait(h, rid)
    assert h.actions() == ["audit.requested", "audit.approved", "audit.report_generated"]
    decision, report = h.events()[1:]
    assert decision["id"] == f"decision:{rid}"
    assert decision["actor"] == {"type": "user", "id": APPROVER, "team": "T0HOME"}
    assert decision["correlation"] == {"id": rid}
    message = h.approval_message()
    assert message.updates == 1
    assert "*Approved* by <@UAPP0001>" in message.blocks[-1]["text"]["text"]
    assert any("was approved by <@UAPP0001>" in t for t in h.dms_to(REQUESTER))
    # The report: 12 seeded messages in the incident channel, files uploaded twice
    # (the requester's DM and the approvers' thread), each file's hash in the log.
    raw = report["raw"]
    assert report["id"] == f"report:{rid}"
    assert raw["rows"] == 12
    assert raw["tree_size"] >= 12
    assert len(raw["slack_file_ids"]) == 8
    files = h.fake.files
    assert {f.filename for f in files.values()} == set(raw["sha256"])
    for f in files.values():
        assert f.data is not None
        assert hashlib.sha256(f.data).hexdigest() == raw["sha256"][f.filename]
    threads = {f.thread_ts for f in files.values()}
    assert threads == {None, message.ts}
    bundle = next(
        p for p in (h.audit.workflow.reports_dir / rid).iterdir() if p.name.endswith(".zip")
    )
    ledger = h.service.ledger(h.service.registry.log("default", "default"))
    checked = verify_bundle(bundle, ledger.verifiers())
    assert checked.ok, checked.problems
    assert checked.entries_checked == raw["log_entries"] == 12
    assert any("report for" in t and "is ready" in t for t in h.dms_to(REQUESTER))


def test_download_links_work_expire_and_are_logged(h: Harness) -> None:
    rid = requested(h)
    approve_and_wait(h, rid)
    urls = download_urls(h)
    assert len(urls) == 4
    csv_url = next(u for u in urls if u.split("?")[0].endswith(".csv"))
    parts = urlsplit(csv_url)
    assert parts.netloc == "testserver"
    report = h.events()[-1]
    r = h.client.get(f"{parts.path}?{parts.query}")
    assert r.status_code == 200, r.text
    name = parts.path.rsplit("/", 1)[-1]
    assert hashlib.sha256(r.content).hexdigest() == report["raw"]["sha256"][name]
    downloaded = h.events()[-1]
    assert downloaded["action"] == "audit.report_downloaded"
    assert downloaded["id"].startswith(f"download:{rid}:")
    assert downloaded["actor"]["id"] == REQUESTER
    assert downloaded["auth"] == {"method": "hmac"}
    assert downloaded["raw"]["file"] == name
    assert downloaded["raw"]["purpose"].startswith("Legal hold LH-42")

    token = parts.query.removeprefix("token=")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_problem(h.client.get(f"{parts.path}?token={forged}"), 403, "forbidden")
    other = parts.path.replace(rid, "ar_000000000000")
    assert_problem(h.client.get(f"{other}?token={token}"), 403, "forbidden")
    missing = parts.path.rsplit("/", 1)[0] + "/secrets.txt"
    assert_problem(h.client.get(f"{missing}?token={token}"), 404, "not-found")
    h.clock.advance(8 * 24 * 3600)  # links last 7 days by default
    assert_problem(h.client.get(f"{parts.path}?{parts.query}"), 410, "link-expired")
    assert [a for a in h.actions() if a == "audit.report_downloaded"] == ["audit.report_downloaded"]


def test_two_approvers_at_once_make_one_decision(h: Harness) -> None:
    rid = requested(h)
    start = threading.Barrier(2)
    answers: list[int] = []

    def click(action: str, user: str) -> None:
        start.wait()
        answers.append(h.click(action, rid, user).status_code)

    threads = [
        threading.Thread(target=click, args=(ACTION_APPROVE, APPROVER)),
        threading.Thread(target=click, args=(ACTION_DENY, GROUP_APPROVER)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200, 200]
    h.settle()
    decisions = [e for e in h.events() if e["id"] == f"decision:{rid}"]
    assert len(decisions) == 1
    winner = decisions[0]["actor"]["id"]
    loser = GROUP_APPROVER if winner == APPROVER else APPROVER
    told = h.ephemerals_to(loser)
    assert any(f"already {decisions[0]['raw']['decision']} by <@{winner}>" in t for t in told)
    # The loser's click shows the recorded outcome again (in case the winner's update
    # failed): the message names the one decision, never the loser's.
    message = h.approval_message()
    assert message.updates == 2
    label = {"approved": "*Approved*", "denied": "*Denied*"}[decisions[0]["raw"]["decision"]]
    assert f"{label} by <@{winner}>" in message.blocks[-1]["text"]["text"]
    if decisions[0]["action"] == "audit.approved":
        h.wait_for(lambda: "audit.report_generated" in h.actions(), "the report event")


def test_an_approval_without_report_is_finished_after_a_restart(
    tmp_path: Path, fake: FakeSlack
) -> None:
    first = build(tmp_path / "data", fake, FixedClock(NOW))
    try:
        rid = requested(first)
        fake.fail("files.getUploadURLExternal", "internal_error")  # the report dies
        first.click(ACTION_APPROVE, rid, APPROVER)
        first.settle()
        assert first.actions() == ["audit.requested", "audit.approved"]
        assert any("could not be built" in t for t in first.dms_to(REQUESTER))
    finally:
        close(first)
    second = build(tmp_path / "data", fake, FixedClock(NOW), reseed=False)
    try:
        second.audit.start()  # what serve does: resume, then sweep in the background
        second.wait_for(lambda: "audit.report_generated" in second.actions(), "the report")
        assert second.actions() == ["audit.requested", "audit.approved", "audit.report_generated"]
        second.assert_log_verifies()
    finally:
        close(second)


def test_pending_reads_only_new_requests_and_forgets_decided_ones(h: Harness) -> None:
    journal = h.audit.workflow.journal
    first, second, third = requested(h), requested(h), requested(h)
    assert [r.id for r in journal.pending()] == [first, second, third]  # oldest first
    assert h.click(ACTION_DENY, second, APPROVER).status_code == 200
    h.settle()
    ledger = journal.ledger()
    reads: list[int] = []
    real_entry = ledger.entry

    def counting_entry(index: int) -> object:
        reads.append(index)
        return real_entry(index)

    ledger.entry = counting_entry  # type: ignore[method-assign,assignment]
    try:
        journal.service.search_index.catch_up(ledger)  # its reads are not pending()'s
        reads.clear()
        assert [r.id for r in journal.pending()] == [first, third]
        assert reads == []  # no request entry read again
        fourth = requested(h)
        journal.service.search_index.catch_up(ledger)
        reads.clear()
        assert [r.id for r in journal.pending()] == [first, third, fourth]
        assert len(reads) == 1  # only the new request's entry
    finally:
        del ledger.entry


def test_the_sweep_finishes_a_report_another_node_left_but_not_one_that_failed_here(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = h.audit.workflow
    # A report that fails on this node: its requester is told once, and the sweep leaves
    # it for the next start (Slack refusing an upload is not fixed by trying every minute).
    failed = requested(h)
    h.fake.fail("files.getUploadURLExternal", "internal_error")
    h.click(ACTION_APPROVE, failed, APPROVER)
    h.settle()
    assert sum("could not be built" in t for t in h.dms_to(REQUESTER)) == 1
    assert workflow.resume(retry_failed=False) == 0
    # serve's sweeper: at start it resumes every unfinished report, the failed one too.
    h.audit.sweep_interval_s = 0.05
    h.audit.start()
    wait_until(h, lambda: generated(h) == {failed})
    # A report whose node died after the approval: the job never ran here, and it is
    # not this node's start that finds it but a later sweep.
    orphan = requested(h)
    with monkeypatch.context() as m:
        m.setattr(workflow.report_queue, "submit", lambda *args: None)
        h.click(ACTION_APPROVE, orphan, APPROVER)
        h.settle()
        assert generated(h) == {failed}
    wait_until(h, lambda: generated(h) == {failed, orphan})
    assert workflow.resume(retry_failed=False) == 0  # nothing unfinished is left


def generated(h: Harness) -> set[str]:
    return {
        str(e["correlation"]["id"]) for e in h.events() if e["action"] == "audit.report_generated"
    }


def wait_until(h: Harness, predicate: Any, timeout_s: float = 30) -> None:
    """Poll while the sweeper thread works (up to ``timeout_s``: a wait, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the sweeper did not get there"
        time.sleep(0.05)
    h.settle()
