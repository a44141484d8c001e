"""Tampering with the SQLite file behind the store's back, caught by `trailseal verify`.

Each test drops the append-only triggers with a raw ``sqlite3`` connection (as an
attacker with write access to the file would), changes one thing, and runs the CLI
in-process. It asserts the exact exit status and that the report names what and where.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trailseal.cli import main
from trailseal.cli.common import (
    EXIT_BAD_SIGNATURE,
    EXIT_INCONSISTENT,
    EXIT_INPUT,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_TAMPERED,
)
from trailseal.core.checkpoint import Checkpoint, parse_signed_checkpoint, sign_checkpoint
from trailseal.core.merkle import root_from_leaf_hashes
from trailseal.core.note import NoteSigner
from trailseal.datadir import DataDir

ORIGIN = "example.com/log"
# Several checkpoints; level-0 tiles built from several chunks; five level-1 hashes.
BATCHES = (1, 7, 300, 1, 450, 13, 500, 228)
SIZE = sum(BATCHES)
INDEX_BITS = 40
LOG_ID = 1


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


@dataclass(frozen=True)
class Built:
    """A data directory of SIZE entries and what was appended to it."""

    path: Path
    data: list[bytes]
    leaves: list[bytes]
    sizes: list[int]

    @property
    def db(self) -> Path:
        return self.path / "trailseal.db"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("tamper") / "d"
    data_dir, _, _ = DataDir.init(path, ORIGIN)
    try:
        ledger = data_dir.ledger()
        n, sizes = 0, []
        for size in BATCHES:
            records = [
                {"seq": n + i, "msg": "x" * ((n + i) % 5), "source": "test"} for i in range(size)
            ]
            results = ledger.append(records)
            assert [r.status for r in results] == ["appended"] * size
            n += size
            sizes.append(n)
        data = [e.data for e in data_dir.storage.read_entries(LOG_ID, 0, SIZE)]
    finally:
        data_dir.close()
    assert len(data) == SIZE
    return Built(path, data, [_leaf(d) for d in data], sizes)


@pytest.fixture
def built(template: Built, tmp_path: Path) -> Built:
    """A private copy of the template data directory."""
    path = tmp_path / "d"
    shutil.copytree(template.path, path)
    return Built(path, template.data, template.leaves, template.sizes)


def _rowid(index: int) -> int:
    return (LOG_ID << INDEX_BITS) | index


@contextmanager
def tamper(db: Path, *tables: str) -> Iterator[sqlite3.Connection]:
    """A raw connection with the append-only triggers of ``tables`` dropped; commits."""
    conn = sqlite3.connect(db)
    try:
        for table in tables:
            conn.execute(f"DROP TRIGGER {table}_no_update")
            conn.execute(f"DROP TRIGGER {table}_no_delete")
        yield conn
        conn.commit()
    finally:
        conn.close()


def _verify(capsys: pytest.CaptureFixture[str], built: Built) -> tuple[int, dict[str, Any], str]:
    code = main(["--data-dir", str(built.path), "verify", "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _tile_chunk(conn: sqlite3.Connection, level: int, idx: int, pos: int) -> tuple[int, int, bytes]:
    """The chunk of tile ``level/idx`` holding hash ``pos``: (row id, start, hashes)."""
    rows = conn.execute(
        "SELECT id, start, hashes FROM tiles WHERE log_id = ? AND level = ? AND idx = ?"
        " ORDER BY start",
        (LOG_ID, level, idx),
    ).fetchall()
    for row_id, start, hashes in rows:
        if start <= pos < start + len(hashes) // 32:
            return row_id, start, hashes
    raise AssertionError(f"no chunk of tile {level}/{idx} holds hash {pos}")


def _replace_tile_hash(db: Path, level: int, idx: int, pos: int) -> tuple[bytes, bytes]:
    """Flip the bits of hash ``pos`` of tile ``level/idx``; returns (old, new) hash."""
    with tamper(db, "tiles") as conn:
        row_id, start, hashes = _tile_chunk(conn, level, idx, pos)
        at = (pos - start) * 32
        old = hashes[at : at + 32]
        new = bytes(b ^ 0xFF for b in old)
        conn.execute(
            "UPDATE tiles SET hashes = ? WHERE id = ?",
            (hashes[:at] + new + hashes[at + 32 :], row_id),
        )
    return old, new


def _entry_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])
    finally:
        conn.close()


# -- an untouched log ------------------------------------------------------------------


def test_template_has_several_checkpoints_and_level_1_tiles(built: Built) -> None:
    conn = sqlite3.connect(built.db)
    try:
        sizes = [r[0] for r in conn.execute("SELECT tree_size FROM checkpoints ORDER BY id")]
        levels = {r[0] for r in conn.execute("SELECT DISTINCT level FROM tiles")}
    finally:
        conn.close()
    assert sizes == built.sizes
    assert levels == {0, 1}


def test_correct_log_passes(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    code = main(["--data-dir", str(built.path), "verify"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert out.startswith(f"OK {ORIGIN}: {SIZE} entries, {len(BATCHES)} checkpoints")
    assert f"tree size {SIZE}" in out

    code, report, _ = _verify(capsys, built)
    assert code == EXIT_OK
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["entries_checked"] == SIZE
    assert report["checkpoints_checked"] == len(BATCHES)
    assert report["tree_size"] == SIZE


# -- entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda d: d.replace(b'"test"', b'"tesT"'), id="still-valid-json"),
        pytest.param(lambda d: d[:-1] + b"!", id="not-json"),
    ],
)
@pytest.mark.parametrize(
    "index",
    [
        pytest.param(0, id="first"),
        pytest.param(700, id="full-tile"),
        pytest.param(1400, id="partial-edge-tile"),
        pytest.param(SIZE - 1, id="last"),
    ],
)
def test_changed_entry_byte(
    capsys: pytest.CaptureFixture[str], built: Built, edit: Any, index: int
) -> None:
    tampered = edit(built.data[index])
    assert len(tampered) == len(built.data[index])
    assert sum(a != b for a, b in zip(tampered, built.data[index], strict=True)) == 1
    with tamper(built.db, "entries") as conn:
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (tampered, _rowid(index)))

    code, report, err = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    first = report["problems"][0]
    assert first["kind"] == "entry"
    assert first["index"] == index
    assert first["expected"] == built.leaves[index].hex()
    assert first["found"] == _leaf(tampered).hex()
    # No other entry is blamed.
    assert [p["index"] for p in report["problems"] if p["kind"] == "entry"] == [index]
    assert f"entry {index} does not match" in err
    assert built.leaves[index].hex() in err


def test_show_of_a_tampered_entry(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    with tamper(built.db, "entries") as conn:
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (b"{not json", _rowid(5)))
    assert main(["--data-dir", str(built.path), "show", "--raw", "5"]) == EXIT_OK
    assert capsys.readouterr().out == "{not json"
    # Not a traceback: a message and a status.
    assert main(["--data-dir", str(built.path), "show", "5"]) == EXIT_INPUT
    assert "stored entry is not JSON" in capsys.readouterr().err


def test_deleted_entry_in_the_middle(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    index = 800
    with tamper(built.db, "entries") as conn:
        conn.execute("DELETE FROM entries WHERE id = ?", (_rowid(index),))

    code, report, err = _verify(capsys, built)
    assert code == EXIT_MISSING
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("missing", index)]
    assert report["entries_checked"] == SIZE - 1
    assert f"entry {index} is missing" in err


def test_swapped_entries(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    low, high = 300, 1000
    with tamper(built.db, "entries") as conn:
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (built.data[high], _rowid(low)))
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (built.data[low], _rowid(high)))

    code, report, err = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    entry_problems = [p for p in report["problems"] if p["kind"] == "entry"]
    assert [p["index"] for p in entry_problems] == [low, high]
    first = report["problems"][0]
    assert (first["kind"], first["index"]) == ("entry", low)
    assert first["expected"] == built.leaves[low].hex()
    assert first["found"] == built.leaves[high].hex()
    assert f"index:    {low}" in err


def test_truncated_tail(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    with tamper(built.db, "entries") as conn:
        conn.execute("DELETE FROM entries WHERE id >= ?", (_rowid(SIZE - 10),))

    code, report, err = _verify(capsys, built)
    assert code == EXIT_MISSING
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("truncated", SIZE - 10)]
    assert f"up to index {SIZE - 11}" in err


def test_extra_entry_beyond_the_latest_checkpoint(
    capsys: pytest.CaptureFixture[str], built: Built
) -> None:
    conn = sqlite3.connect(built.db)  # INSERT needs no trigger dropped
    try:
        conn.execute(
            "INSERT INTO entries (id, log_id, data) VALUES (?, ?, ?)",
            (_rowid(SIZE), LOG_ID, b'{"seq":1500}'),
        )
        conn.commit()
    finally:
        conn.close()

    code, report, err = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("extra", SIZE)]
    assert f"latest checkpoint size {SIZE}" in err


# -- tiles -----------------------------------------------------------------------------


def test_replaced_level_0_tile_hash(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    index = 3 * 256 + 14  # a full tile written in two chunks (sizes 772 and 1272 split it)
    old, new = _replace_tile_hash(built.db, 0, 3, 14)
    assert old == built.leaves[index]

    code, report, err = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    first = report["problems"][0]
    assert (first["kind"], first["index"]) == ("entry", index)
    assert first["expected"] == new.hex()  # what the stored tree now says
    assert first["found"] == built.leaves[index].hex()  # what the entry hashes to
    assert f"index:    {index}" in err


def test_replaced_level_1_tile_hash(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    old, new = _replace_tile_hash(built.db, 1, 0, 2)

    code, report, err = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    tile_problems = [p for p in report["problems"] if p["kind"] == "tile"]
    assert len(tile_problems) == 1
    assert "tile 1/0 hash 2" in tile_problems[0]["message"]
    assert tile_problems[0]["expected"] == old.hex()
    assert tile_problems[0]["found"] == new.hex()
    assert report["problems"][0]["kind"] == "tile"
    assert "FAIL [tile] tile 1/0 hash 2" in err


def test_deleted_tile_chunk(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    """A chunk gone from the middle of a tile leaves a gap the store itself refuses."""
    with tamper(built.db, "tiles") as conn:
        row_id, start, _ = _tile_chunk(conn, 0, 3, 0)
        assert start == 0
        conn.execute("DELETE FROM tiles WHERE id = ?", (row_id,))
    code = main(["--data-dir", str(built.path), "verify"])
    err = capsys.readouterr().err
    assert code == EXIT_TAMPERED
    assert "tile 0/3 has a chunk at 4 after 0 hashes" in err


def test_deleted_level_1_tile(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    with tamper(built.db, "tiles") as conn:
        conn.execute("DELETE FROM tiles WHERE level = 1")
    code, report, _ = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    problem = report["problems"][0]
    assert problem["kind"] == "tile"
    assert "tile 1/0 hash 0" in problem["message"]
    assert problem["found"] is None


@pytest.mark.parametrize(
    ("level", "idx", "pos"), [(0, 5, 100), (1, 0, 4)], ids=["level0", "level1"]
)
def test_append_refused_after_edge_tile_tampering(
    capsys: pytest.CaptureFixture[str], built: Built, tmp_path: Path, level: int, idx: int, pos: int
) -> None:
    # The right edge of a 1500-leaf tree: tile 0/5 (220 hashes) and tile 1/0 (5 hashes).
    _replace_tile_hash(built.db, level, idx, pos)
    records = tmp_path / "more.ndjson"
    records.write_text('{"seq": 1500}\n{"seq": 1501}\n')

    code = main(["--data-dir", str(built.path), "append", str(records)])
    err = capsys.readouterr().err
    assert code == EXIT_TAMPERED
    assert "does not match its signed checkpoint" in err
    assert "trailseal verify" in err
    assert _entry_count(built.db) == SIZE

    conn = sqlite3.connect(built.db)
    try:
        latest = conn.execute("SELECT max(tree_size), count(*) FROM checkpoints").fetchone()
    finally:
        conn.close()
    assert latest == (SIZE, len(BATCHES))


# -- checkpoints -----------------------------------------------------------------------


def _real_signer(path: Path) -> NoteSigner:
    data_dir = DataDir.open(path)
    try:
        log = data_dir.log()
        (key,) = data_dir.keys(log)
        return data_dir.load_signer(log, key.verifier)
    finally:
        data_dir.close()


def test_checkpoint_signed_by_another_key(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    with tamper(built.db, "checkpoints") as conn:
        row_id, note = conn.execute(
            "SELECT id, note FROM checkpoints WHERE tree_size = ?", (759,)
        ).fetchone()
        body = parse_signed_checkpoint(note).checkpoint
        forged = sign_checkpoint(body, [NoteSigner.generate(ORIGIN)]).to_bytes()
        conn.execute("UPDATE checkpoints SET note = ? WHERE id = ?", (forged, row_id))

    code, report, err = _verify(capsys, built)
    assert code == EXIT_BAD_SIGNATURE
    assert [p["kind"] for p in report["problems"]] == ["signature"]
    assert f"checkpoint #{row_id} (size 759)" in report["problems"][0]["message"]
    assert "not signed by a trusted key" in err


def test_fork_signed_by_the_real_key(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    size = 759
    signer = _real_signer(built.path)
    other_root = hashlib.sha256(b"another history").digest()
    forged = sign_checkpoint(Checkpoint(ORIGIN, size, other_root), [signer]).to_bytes()
    conn = sqlite3.connect(built.db)  # INSERT needs no trigger dropped
    try:
        (real_root,) = conn.execute(
            "SELECT root_hash FROM checkpoints WHERE tree_size = ?", (size,)
        ).fetchone()
        cur = conn.execute(
            "INSERT INTO checkpoints (log_id, tree_size, root_hash, note, signed_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (LOG_ID, size, other_root, forged, "2025-01-01T00:00:00.000000Z"),
        )
        forged_id = cur.lastrowid
        conn.commit()
    finally:
        conn.close()

    code, report, err = _verify(capsys, built)
    assert code == EXIT_INCONSISTENT
    first = report["problems"][0]
    assert first["kind"] == "fork"
    assert f"#{forged_id}" in first["message"]
    assert f"size {size}" in first["message"]
    assert first["expected"] == real_root.hex()
    assert first["found"] == other_root.hex()
    assert err[err.index("FAIL [") :].startswith("FAIL [fork]")  # the fork speaks first


def test_checkpoint_root_column_differs_from_signed_text(
    capsys: pytest.CaptureFixture[str], built: Built
) -> None:
    with tamper(built.db, "checkpoints") as conn:
        conn.execute(
            "UPDATE checkpoints SET root_hash = ? WHERE tree_size = ?", (b"\x00" * 32, 308)
        )

    code, report, _ = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    assert report["problems"][0]["kind"] == "checkpoint-root"
    assert report["problems"][0]["found"] == "00" * 32


def test_log_rewritten_under_an_honest_looking_checkpoint(
    capsys: pytest.CaptureFixture[str], built: Built
) -> None:
    """Entry and its level-0 tile hash rewritten together: only the signed roots catch it."""
    index = 1300  # in the partial edge tile 0/5
    tampered = built.data[index].replace(b'"seq":1300', b'"seq":1399')
    with tamper(built.db, "entries", "tiles") as conn:
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (tampered, _rowid(index)))
        row_id, start, hashes = _tile_chunk(conn, 0, 5, index - 5 * 256)
        at = (index - 5 * 256 - start) * 32
        conn.execute(
            "UPDATE tiles SET hashes = ? WHERE id = ?",
            (hashes[:at] + _leaf(tampered) + hashes[at + 32 :], row_id),
        )

    code, report, _ = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    kinds = {p["kind"] for p in report["problems"]}
    assert "checkpoint-root" in kinds
    assert "entry" not in kinds


def test_deleted_latest_checkpoint(capsys: pytest.CaptureFixture[str], built: Built) -> None:
    with tamper(built.db, "checkpoints") as conn:
        conn.execute("DELETE FROM checkpoints WHERE tree_size = ?", (SIZE,))
    code, report, _ = _verify(capsys, built)
    assert code == EXIT_TAMPERED
    previous = built.sizes[-2]
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("extra", previous)]


def test_history_rewritten_and_resigned_with_a_planted_key(
    capsys: pytest.CaptureFixture[str], built: Built
) -> None:
    """An attacker rewrites entry 3, rebuilds the tree and re-signs every checkpoint with
    a key planted in log_keys. Trusting the log's real key (not the database) catches it.
    """
    evil = NoteSigner.generate(ORIGIN)
    real = _real_signer(built.path).verifier.to_string()
    index = 3
    tampered = built.data[index].replace(b'"test"', b'"evil"')
    leaves = list(built.leaves)
    leaves[index] = _leaf(tampered)
    with tamper(built.db, "entries", "tiles", "checkpoints") as conn:
        conn.execute(
            "INSERT INTO log_keys (log_id, verifier, event, at) VALUES (?, ?, 'added', ?)",
            (LOG_ID, evil.verifier.to_string(), "2025-01-01T00:00:00.000000Z"),
        )
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (tampered, _rowid(index)))
        row_id, start, hashes = _tile_chunk(conn, 0, 0, index)
        at = (index - start) * 32
        conn.execute(
            "UPDATE tiles SET hashes = ? WHERE id = ?",
            (hashes[:at] + leaves[index] + hashes[at + 32 :], row_id),
        )
        row_id, start, hashes = _tile_chunk(conn, 1, 0, 0)
        conn.execute(
            "UPDATE tiles SET hashes = ? WHERE id = ?",
            (root_from_leaf_hashes(leaves[:256]) + hashes[32:], row_id),
        )
        for row_id, size in conn.execute("SELECT id, tree_size FROM checkpoints").fetchall():
            root = root_from_leaf_hashes(leaves[:size])
            note = sign_checkpoint(Checkpoint(ORIGIN, size, root), [evil]).to_bytes()
            conn.execute(
                "UPDATE checkpoints SET note = ?, root_hash = ? WHERE id = ?",
                (note, root, row_id),
            )

    code = main(["--data-dir", str(built.path), "verify", "--key", real])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_SIGNATURE
    assert err.count("FAIL [signature]") == len(BATCHES)


def test_export_refuses_an_entry_that_does_not_match_the_tree(
    capsys: pytest.CaptureFixture[str], built: Built, tmp_path: Path
) -> None:
    with tamper(built.db, "entries") as conn:
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (b'{"seq":1}', _rowid(3)))
    out = tmp_path / "evidence.zip"
    code = main(["--data-dir", str(built.path), "export", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_TAMPERED
    assert "entry 3 does not match the tree" in err
    assert not out.exists()
    assert not out.with_name("evidence.zip.partial").exists()


def test_verify_warns_when_it_trusts_the_stores_own_keys(
    capsys: pytest.CaptureFixture[str], built: Built
) -> None:
    code, _, err = _verify(capsys, built)
    assert code == EXIT_OK
    assert "Pass --key with the published verifier key" in err
