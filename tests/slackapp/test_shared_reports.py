"""Report downloads behind a load balancer: two nodes on one PostgreSQL schema.

Each node has its own data directory, copied from the first before either made a link
key (as an operator adds a node), so each makes a link key of its own and registers its
public half. A report built on node A is downloaded through node B with a link A
signed: B checks it with A's public key from the registry, fetches the file from there,
checks it against the SHA-256 in the log, logs the download and serves the same bytes.
A copy altered in the database is refused. On one SQLite node the registry holds no
report file, only the node's own public link key.

Skipped, with the reason, when PostgreSQL is not reachable (``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import drop_schema, postgres_dsn
from tests.http.support import FixedClock, assert_problem
from tests.slackapp.fake_slack import FakeSlack
from tests.slackapp.harness import APPROVER, NOW, REQUESTER, Harness, build, close
from tests.slackapp.test_approval import approve_and_wait, download_urls, requested
from trailseal.core.note import NoteSigner
from trailseal.datadir import DataDir
from trailseal.service.core import Service
from trailseal.service.schema import migrate_postgres
from trailseal.slackapp.links import KEY_FILE, KEY_NAME, DownloadLinks, LinkKey
from trailseal.slackapp.messages import ACTION_APPROVE
from trailseal.storage.urls import parse


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def store_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, migrated as its owner would; dropped afterwards."""
    dsn = postgres_dsn()  # skips when PostgreSQL is not reachable
    schema = f"t_reports_{uuid.uuid4().hex[:12]}"
    url = f"{dsn}?schema={schema}"
    migrate_postgres(parse(url))
    yield url
    drop_schema(schema)


@pytest.fixture
def nodes(tmp_path: Path, fake: FakeSlack, store_url: str) -> Iterator[tuple[Harness, Harness]]:
    """Node A (seeded) and node B, each with its data directory, on one schema."""
    clock = FixedClock(NOW)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    data_dir, _, _ = DataDir.init(
        a_dir, "localhost/trailseal/default/default", "default", clock, storage_url=store_url
    )
    data_dir.close()
    service, token = Service.open(a_dir, clock=clock)  # the tenant, its key, the first API key
    service.close()
    assert token
    shutil.copytree(a_dir, b_dir)
    (b_dir / "search.db").unlink(missing_ok=True)  # each node indexes the log itself
    a = build(a_dir, fake, clock)
    try:
        b = build(b_dir, fake, clock, reseed=False)
    except BaseException:
        close(a)
        raise
    try:
        yield a, b
    finally:
        close(b)
        close(a)


def approved_report(a: Harness) -> tuple[str, dict[str, str], list[str]]:
    """A request approved on A, its report built there: rid, recorded hashes, links."""
    rid = requested(a)
    approve_and_wait(a, rid)
    report = next(e for e in a.events() if e["action"] == "audit.report_generated")
    return rid, report["raw"]["sha256"], download_urls(a)


def downloads(h: Harness) -> list[str]:
    return [str(e["raw"]["file"]) for e in h.events() if e["action"] == "audit.report_downloaded"]


def test_a_link_made_on_one_node_downloads_through_another(
    nodes: tuple[Harness, Harness],
) -> None:
    a, b = nodes
    key_ids = {h.audit.links.token("ar_0", "U", 1).split(".")[1] for h in (a, b)}
    assert len(key_ids) == 2  # a key per node, both public halves in the shared registry
    rows = a.service.registry._rows("SELECT key_id FROM link_keys")
    assert {r[0] for r in rows} == key_ids
    assert all((h.service.data_dir.path / "keys" / KEY_FILE).exists() for h in (a, b))
    rid, sha256, urls = approved_report(a)
    assert len(urls) == 4
    assert not (b.audit.workflow.reports_dir / rid).exists()
    for url in urls:
        parts = urlsplit(url)
        name = parts.path.rsplit("/", 1)[-1]
        r = b.client.get(f"{parts.path}?{parts.query}")
        assert r.status_code == 200, r.text
        assert hashlib.sha256(r.content).hexdigest() == sha256[name]
        assert r.content == (a.audit.workflow.reports_dir / rid / name).read_bytes()
        kept = b.audit.workflow.reports_dir / rid / name
        assert kept.read_bytes() == r.content
        assert kept.stat().st_mode & 0o777 == 0o600
    # One event per download, in the shared log (both nodes read it), named by who.
    assert sorted(downloads(a)) == sorted(downloads(b)) == sorted(sha256)
    last = b.events()[-1]
    assert (last["action"], last["actor"]["id"]) == ("audit.report_downloaded", REQUESTER)
    # Served again from B's own copy, logged again.
    parts = urlsplit(urls[0])
    assert b.client.get(f"{parts.path}?{parts.query}").status_code == 200
    assert len(downloads(b)) == 5
    # A well-formed link signed by a key no node registered: refused, expired or not.
    stranger = DownloadLinks(LinkKey(NoteSigner.generate(KEY_NAME)), b.service.registry, "")
    for expires in (int(NOW.timestamp()) + 3600, 1):
        r = b.client.get(f"{parts.path}?token={stranger.token(rid, REQUESTER, expires)}")
        assert_problem(r, 403, "forbidden")
    assert len(downloads(b)) == 5
    a.assert_log_verifies()


def test_a_copy_altered_in_the_database_is_refused(nodes: tuple[Harness, Harness]) -> None:
    a, b = nodes
    rid, sha256, urls = approved_report(a)
    csv_url = urlsplit(next(u for u in urls if u.split("?")[0].endswith(".csv")))
    name = csv_url.path.rsplit("/", 1)[-1]
    registry = a.service.registry
    with registry._tx() as tx:  # the schema owner edits a row: no grant lets the service
        tx.execute(
            "UPDATE report_files SET data = ? WHERE rid = ? AND name = ? AND seq = 0",
            (b"Acme,forged\n", rid, name),
        )
    r = b.client.get(f"{csv_url.path}?{csv_url.query}")
    assert_problem(r, 500, "report-altered")
    assert "was altered" in r.json()["detail"]
    assert r.json()["expected_sha256"] == sha256[name]
    assert r.json()["found_sha256"] != sha256[name]
    assert downloads(b) == []  # refused before the event: nothing was downloaded
    assert list((b.audit.workflow.reports_dir / rid).iterdir()) == []  # no partial left
    # The other files were not touched and still come through B.
    json_url = urlsplit(next(u for u in urls if u.split("?")[0].endswith(".json")))
    assert b.client.get(f"{json_url.path}?{json_url.query}").status_code == 200


def test_a_report_finished_by_another_node_replaces_a_stale_local_copy(
    nodes: tuple[Harness, Harness], fake: FakeSlack
) -> None:
    a, b = nodes
    rid = requested(a)
    fake.fail("files.getUploadURLExternal", "internal_error")  # after sharing, before the event
    a.click(ACTION_APPROVE, rid, APPROVER)
    a.settle()
    assert "audit.report_generated" not in a.actions()
    stale = {p.name: p.read_bytes() for p in (a.audit.workflow.reports_dir / rid).iterdir()}
    assert len(stale) == 4
    # B resumes it (the elected node after A died, say): a new build, other bytes (a
    # later generated_at), stored in the registry beside A's copy.
    b.clock.advance(60)
    assert b.audit.workflow.resume() == 1
    b.wait_for(lambda: "audit.report_generated" in b.actions(), "the report on B")
    report = next(e for e in b.events() if e["action"] == "audit.report_generated")
    assert report["raw"]["sha256"].keys() == stale.keys()
    # A link made by B, followed to A: A's leftover files are not what the log recorded,
    # so A fetches the recorded ones.
    token = b.audit.links.token(rid, REQUESTER, int(NOW.timestamp()) + 3600)
    for name, digest in report["raw"]["sha256"].items():
        r = a.client.get(f"/slack/reports/{rid}/{name}?token={token}")
        assert r.status_code == 200, r.text
        assert hashlib.sha256(r.content).hexdigest() == digest
    assert any(stale[n] != (a.audit.workflow.reports_dir / rid / n).read_bytes() for n in stale)


def test_one_sqlite_node_registers_only_its_link_key(tmp_path: Path, fake: FakeSlack) -> None:
    h = build(tmp_path / "data", fake, FixedClock(NOW))
    try:
        rid, sha256, urls = approved_report(h)
        parts = urlsplit(urls[0])
        assert h.client.get(f"{parts.path}?{parts.query}").status_code == 200
        assert not h.service.shared
        assert (h.service.data_dir.path / "keys" / KEY_FILE).exists()
        registry = h.service.registry
        assert registry._rows("SELECT count(*) FROM report_files") == [(0,)]
        own = h.audit.links.token(rid, REQUESTER, 1).split(".")[1]
        assert registry._rows("SELECT key_id FROM link_keys") == [(own,)]
        assert set(sha256) == {p.name for p in (h.audit.workflow.reports_dir / rid).iterdir()}
    finally:
        close(h)


def test_a_report_is_built_by_one_node_at_a_time(nodes: tuple[Harness, Harness]) -> None:
    a, b = nodes
    for h in (a, b):
        h.service.join_cluster(election_interval_s=0.1)
    rid = requested(a)
    # The approval's own report job is held back: B will be the one to try.
    a.audit.workflow.report_queue.submit = lambda *args: None  # type: ignore[method-assign]
    assert a.click(ACTION_APPROVE, rid, APPROVER).status_code == 200
    a.settle()
    uploads = len(a.fake.calls_to("files.completeUploadExternal"))
    with a.service.claim(f"slackapp-report:{rid}") as mine:
        assert mine  # A is building it (say)
        b.audit.workflow.run_report(rid)  # B's sweep finds it unfinished: not its turn
        assert len(b.fake.calls_to("files.completeUploadExternal")) == uploads
        assert "audit.report_generated" not in b.actions()
        with b.service.claim(f"slackapp-report:{rid}") as theirs:
            assert not theirs
    b.audit.workflow.run_report(rid)  # A let go without finishing (it died): B builds it
    assert "audit.report_generated" in b.actions()
    a.audit.workflow.run_report(rid)  # and whoever comes next finds the report event
    assert [e["action"] for e in a.events()].count("audit.report_generated") == 1
