"""The registry's report files and download-link keys, on SQLite and PostgreSQL alike.

Only a shared (PostgreSQL) store uses report files
(``tests/slackapp/test_shared_reports.py``), but the SQL is the registry's one dialect,
so the contract runs on both engines: files stored in chunks and read back one chunk at
a time, puts that are idempotent across nodes, and a link key registered once however
many nodes register it at once, never replaced by another.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.service.conftest import OpenNode
from tests.service.test_registry import run_together
from trailseal.errors import AlreadyExistsError, NotFoundError, StorageError, TamperError
from trailseal.ledger import utc_now
from trailseal.service import registry as registry_module
from trailseal.service.registry import REPORT_CHUNK_BYTES, Registry
from trailseal.slackapp.links import link_key_id
from trailseal.slackapp.report_store import ReportStore

AT = "2025-01-01T00:00:00.000000Z"
RID = "ar_0123456789ab"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_rows(registry: Registry, rid: str = RID) -> int:
    return int(registry._rows("SELECT count(*) FROM report_files WHERE rid = ?", rid)[0][0])


def test_a_file_is_stored_in_chunks_and_read_back_one_chunk_at_a_time(
    registry: Registry, tmp_path: Path
) -> None:
    data = os.urandom(2 * REPORT_CHUNK_BYTES + 12345)
    path = write(tmp_path / "r.csv", data)
    assert registry.put_report_file(RID, "r.csv", path, AT) == sha(data)
    assert file_rows(registry) == 3
    chunks = list(registry.report_file_chunks(RID, "r.csv", sha(data)))
    assert [len(c) for c in chunks] == [REPORT_CHUNK_BYTES, REPORT_CHUNK_BYTES, 12345]
    assert all(type(c) is bytes for c in chunks)
    assert b"".join(chunks) == data


def test_exact_multiples_and_empty_files_round_trip(registry: Registry, tmp_path: Path) -> None:
    for name, data in [("exact.bin", b"x" * REPORT_CHUNK_BYTES), ("empty.html", b"")]:
        path = write(tmp_path / name, data)
        registry.put_report_file(RID, name, path, AT)
        assert b"".join(registry.report_file_chunks(RID, name, sha(data))) == data
    # An empty file is one empty chunk: stored, so not confused with a missing one.
    assert file_rows(registry) == 2


def test_putting_a_file_again_from_another_node_changes_nothing(
    open_node: OpenNode, tmp_path: Path
) -> None:
    a, b = open_node(), open_node()
    data = os.urandom(REPORT_CHUNK_BYTES + 1)
    path = write(tmp_path / "r.json", data)
    a.put_report_file(RID, "r.json", path, AT)
    b.put_report_file(RID, "r.json", path, AT)
    a.put_report_file(RID, "r.json", path, AT)
    # Both at once: one inserts, the other waits for its rows and inserts nothing.
    outcomes = run_together(
        4, lambda i: (a, b)[i % 2].put_report_file("ar_concurrent0", "r.json", path, AT)
    )
    assert outcomes == [sha(data)] * 4
    for node in (a, b):
        assert file_rows(node) == file_rows(node, "ar_concurrent0") == 2
        assert b"".join(node.report_file_chunks(RID, "r.json", sha(data))) == data


def test_a_rebuilt_file_is_stored_beside_the_first_and_asked_for_by_hash(
    registry: Registry, tmp_path: Path
) -> None:
    first, rebuilt = b"generated_at: 10:00\n", b"generated_at: 10:05\n"
    registry.put_report_file(RID, "r.csv", write(tmp_path / "a", first), AT)
    # The rebuilt file has another name on disk here, but is stored under the given one.
    registry.put_report_file(RID, "r.csv", write(tmp_path / "b", rebuilt), AT)
    assert b"".join(registry.report_file_chunks(RID, "r.csv", sha(first))) == first
    assert b"".join(registry.report_file_chunks(RID, "r.csv", sha(rebuilt))) == rebuilt
    with pytest.raises(NotFoundError, match=r"no copy of 'r\.csv' of request ar_0123456789ab"):
        registry.report_file_chunks(RID, "r.csv", sha(b"other"))
    with pytest.raises(NotFoundError):
        registry.report_file_chunks("ar_ffffffffffff", "r.csv", sha(first))


def test_a_file_that_changes_while_stored_is_not_stored(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "r.csv", b"after")
    # The hashing pass saw other bytes than the storing pass reads.
    monkeypatch.setattr(registry_module, "_file_sha256", lambda _: sha(b"before"))
    with pytest.raises(StorageError, match="changed while it was stored"):
        registry.put_report_file(RID, "r.csv", path, AT)
    assert file_rows(registry) == 0


def test_reading_back_holds_one_chunk_at_a_time(registry: Registry, tmp_path: Path) -> None:
    data = os.urandom(8 * REPORT_CHUNK_BYTES)
    tracemalloc.start()
    try:
        registry.put_report_file(RID, "big.csv", write(tmp_path / "big.csv", data), AT)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        store = ReportStore(tmp_path / "reports", registry, utc_now)
        fetched = store.path(RID, "big.csv", sha(data))
        _, fetch_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fetched.read_bytes() == data
    # Python allocations at their highest, while 8 MiB went through: a few chunks.
    assert put_peak < 3 * REPORT_CHUNK_BYTES, put_peak
    assert fetch_peak < 3 * REPORT_CHUNK_BYTES, fetch_peak


def test_a_fetched_file_is_checked_against_the_recorded_hash(
    registry: Registry, tmp_path: Path
) -> None:
    data = b"rows\n" * 1000
    registry.put_report_file(RID, "r.csv", write(tmp_path / "r.csv", data), AT)
    store = ReportStore(tmp_path / "reports", registry, utc_now)
    fetched = store.path(RID, "r.csv", sha(data))
    assert fetched == tmp_path / "reports" / RID / "r.csv"
    assert fetched.read_bytes() == data
    assert fetched.stat().st_mode & 0o777 == 0o600
    assert fetched.parent.stat().st_mode & 0o777 == 0o700
    # A copy stored under the right hash with other bytes (an altered row): refused.
    wrong = sha(b"what the log recorded")
    registry.put_report_file(RID, "s.csv", write(tmp_path / "s.csv", data), AT)
    with registry._tx() as tx:
        tx.execute("UPDATE report_files SET sha256 = ? WHERE name = 's.csv'", (wrong,))
    with pytest.raises(TamperError, match=r"copy of file 's\.csv' of request \w+ was altered") as e:
        store.path(RID, "s.csv", wrong)
    assert (e.value.expected, e.value.found) == (bytes.fromhex(wrong), bytes.fromhex(sha(data)))
    assert sorted(p.name for p in fetched.parent.iterdir()) == ["r.csv"]  # no partial left


def test_one_node_store_never_touches_the_registry(registry: Registry, tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports", None, utc_now)
    (tmp_path / "built").mkdir()
    data = b"local only"
    write(tmp_path / "built" / "r.csv", data)
    store.share(RID, tmp_path / "built", {"r.csv": sha(data)})
    with pytest.raises(NotFoundError, match="no longer on this server"):
        store.path(RID, "r.csv", sha(data))
    assert file_rows(registry) == 0


def test_concurrent_registrations_of_one_link_key_agree(open_node: OpenNode) -> None:
    nodes = [open_node(), open_node()]
    keys = [Ed25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(3)]
    for key in keys:  # six nodes starting at once with one copied key file
        run_together(6, lambda i, k=key: nodes[i % 2].add_link_key(link_key_id(k), k, AT))
    for node in nodes:
        assert [node.link_key(link_key_id(k)) for k in keys] == keys
        assert all(type(node.link_key(link_key_id(k))) is bytes for k in keys)
    rows = nodes[0]._rows("SELECT key_id FROM link_keys ORDER BY key_id")
    assert [r[0] for r in rows] == sorted(link_key_id(k) for k in keys)
    assert nodes[1].link_key("0" * 16) is None


def test_an_id_keeps_its_first_public_key(open_node: OpenNode) -> None:
    first, second = open_node(), open_node()
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    first.add_link_key(link_key_id(key), key, AT)
    with pytest.raises(AlreadyExistsError, match="another public key"):
        second.add_link_key(link_key_id(key), b"\x02" * 32, AT)
    assert second.link_key(link_key_id(key)) == key
