"""The chunked evidence bundle (v2): bounded-memory export of any selection, checked
offline like v1; v1 stays the default layout."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trailseal.bundle
from trailseal.bundle import (
    BUNDLE_FORMAT,
    CHUNKED_BUNDLE_FORMAT,
    export_bundle,
    proof_ranges,
    verify_bundle,
)
from trailseal.core.merkle import inclusion_ranges
from trailseal.core.note import NoteSigner
from trailseal.errors import FormatError, SignatureError
from trailseal.ledger import Ledger
from trailseal.storage import MemoryStorage
from trailseal.storage.base import StoredEntry

SIGNER = NoteSigner.generate("test.example/bundle-key")


@pytest.fixture
def ledger() -> Ledger:
    storage = MemoryStorage()
    log = storage.create_log("main", "test.example/bundle", "2025-01-01T00:00:00Z")
    ledger = Ledger(storage, log, [SIGNER])
    for first in range(0, 300, 100):
        ledger.append([{"id": i, "n": i, "text": "line\nbreak"} for i in range(first, first + 100)])
    return ledger


@st.composite
def selections(draw: st.DrawFn) -> tuple[list[int], int]:
    size = draw(st.integers(1, 3000))
    indexes = draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=60))
    return sorted(indexes), size


@settings(max_examples=200, deadline=None)
@given(selections())
def test_proof_ranges_are_the_union_of_inclusion_ranges(selection: tuple[list[int], int]) -> None:
    indexes, size = selection
    expected = sorted({r for i in indexes for r in inclusion_ranges(i, size)})
    assert proof_ranges(indexes, size) == expected


def entries(ledger: Ledger, indexes: list[int]) -> list[StoredEntry]:
    return [ledger.entry(i) for i in indexes]


def test_default_layout_is_still_v1(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    export_bundle(ledger, out, entries(ledger, [1, 2]), selection={})
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read("manifest.json"))["format"] == BUNDLE_FORMAT
        assert "entries/1.json" in zf.namelist()
    assert verify_bundle(out, [SIGNER.verifier]).ok


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_bundle_verifies(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(trailseal.bundle, "CHUNK_ENTRIES", chunk)
    picked = [0, 1, 2, 5, 99, 100, 101, 255, 256, 299]
    out = tmp_path / "b.zip"
    summary = export_bundle(ledger, out, entries(ledger, picked), selection={}, layout="chunks")
    assert summary.entries == len(picked)
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["format"] == CHUNKED_BUNDLE_FORMAT
        assert manifest["entry_count"] == len(picked)
        assert sum(c["entries"] for c in manifest["chunks"]) == len(picked)
        assert not [n for n in zf.namelist() if n.startswith(("entries/", "proofs/"))]
        report_md = zf.read("REPORT.md").decode()
    assert "Entries: 10 (indexes 0 to 299)" in report_md
    result = verify_bundle(out, [SIGNER.verifier])
    assert result.ok, result.problems
    assert result.entries_checked == len(picked)


def _rewrite(path: Path, name: str, old: bytes, new: bytes, fix_hash: bool = False) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: (info, zf.read(info)) for info in zf.infolist()}
    info, data = members[name]
    members[name] = (info, data.replace(old, new, 1))
    if fix_hash:  # a careful forger also fixes the manifest: the proofs must still catch it
        manifest_info, manifest = members["manifest.json"]
        doc = json.loads(manifest)
        doc["files"][name] = hashlib.sha256(members[name][1]).hexdigest()
        members["manifest.json"] = (manifest_info, json.dumps(doc).encode())
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members.values():
            zf.writestr(info, data)


def test_a_forged_entry_fails_even_with_the_manifest_fixed(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    export_bundle(ledger, out, entries(ledger, [3, 4]), selection={}, layout="chunks")
    _rewrite(out, "chunks/000000.entries", b'"n":4', b'"n":5', fix_hash=True)
    result = verify_bundle(out, [SIGNER.verifier])
    assert [p for p in result.problems if p.startswith("entry 4:")]
    assert not [p for p in result.problems if p.startswith("entry 3:")]


def test_a_moved_entry_fails(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    export_bundle(ledger, out, entries(ledger, [3, 4]), selection={}, layout="chunks")
    _rewrite(out, "chunks/000000.entries", b"4 {", b"5 {", fix_hash=True)
    result = verify_bundle(out, [SIGNER.verifier])
    assert any(p.startswith("entry 5:") for p in result.problems), result.problems


def test_a_dropped_entry_fails(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    export_bundle(ledger, out, entries(ledger, [3, 4]), selection={}, layout="chunks")
    with zipfile.ZipFile(out) as zf:
        lines = zf.read("chunks/000000.entries")
    _rewrite(out, "chunks/000000.entries", lines, lines.split(b"\n", 1)[1], fix_hash=True)
    problems = verify_bundle(out, [SIGNER.verifier]).problems
    assert "chunks/000000: does not hold the 2 entries listed" in problems
    assert "the manifest lists 2 entries; the chunks hold 1" in problems


def test_another_key_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    export_bundle(ledger, out, entries(ledger, [3]), selection={}, layout="chunks")
    other = NoteSigner.generate("test.example/bundle-key").verifier
    with pytest.raises(SignatureError):
        verify_bundle(out, [other])


def test_entries_out_of_order_are_refused(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    with pytest.raises(FormatError, match="index order"):
        export_bundle(ledger, out, entries(ledger, [4, 3]), selection={}, layout="chunks")
    assert not out.exists()
    assert not out.with_name("b.zip.partial").exists()
