"""Evidence bundles: a ZIP an auditor can check offline with nothing but a verifier key.

Two layouts. ``trailseal-evidence-bundle/v1`` (``layout="entries"``, the default of
``trailseal export``) keeps one file per entry and per receipt, which any reader of
c2sp.org/tlog-proof can check by hand::

    manifest.json                 what is inside, with the SHA-256 of every other file
    checkpoint                    the signed checkpoint every receipt proves into
    entries/<index>.json          each selected entry's exact canonical bytes
    proofs/<index>.tlog-proof     a c2sp.org/tlog-proof@v1 receipt per entry
    checkpoints/<size>            older checkpoints the auditor may already hold
    consistency/<size>-<size>     RFC 9162 consistency proofs, one base64 hash a line
    keys/verifier.txt             the log's verifier keys (informational: trust yours)
    REPORT.md                     a readable summary

``trailseal-evidence-bundle/v2`` (``layout="chunks"``, used by audit reports) is for
selections of any size: a million entries as a million ZIP members would hold the ZIP's
central directory, the manifest's entry list and a million copies of the checkpoint in
memory and on disk. It groups the entries instead, so writing and checking it take
memory bounded by one chunk::

    manifest.json                 as above, with ``chunks`` instead of ``entries``
    checkpoint                    the one signed checkpoint every entry is proven into
    chunks/<n>.entries            up to 4,096 entries, a line each: ``<index> <bytes>``
                                  (RFC 8785 output never holds a raw newline)
    chunks/<n>.proof              ``<start> <end> <base64 hash>`` lines: the RFC 9162
                                  subtree hashes the chunk's inclusion proofs use, once
                                  each (neighbouring entries share most of them)
    checkpoints/, consistency/, keys/verifier.txt, REPORT.md   as in v1

Each entry's inclusion proof is the list of its ``inclusion_ranges`` looked up in the
chunk's proof file; the checker verifies every entry against the checkpoint's root with
the same RFC 9162 §2.1.3.2 algorithm as a receipt.

The proofs, not the manifest, carry the trust: :func:`verify_bundle` checks every
receipt, checkpoint signature and consistency proof against keys the caller supplies.
The manifest's hashes only catch accidental damage to the other files.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from trailseal.bundle_chunks import MAX_BUNDLE_MEMBER, check_chunks, proof_ranges
from trailseal.bundle_chunks import read_member as _read
from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trailseal.core.merkle import leaf_hash, proof_nodes, range_hash, verify_consistency
from trailseal.core.note import NoteVerifier, b64decode, b64encode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.errors import EntryError, Error, FormatError, NotFoundError, TamperError
from trailseal.ledger import Ledger, rfc3339
from trailseal.storage.base import StoredCheckpoint, StoredEntry

BUNDLE_FORMAT = "trailseal-evidence-bundle/v1"
CHUNKED_BUNDLE_FORMAT = "trailseal-evidence-bundle/v2"
CHUNK_ENTRIES = 4096
CHUNK_BYTES = 16 << 20
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

Progress = Callable[[int], None]
__all__ = [
    "BUNDLE_FORMAT",
    "CHUNKED_BUNDLE_FORMAT",
    "MAX_BUNDLE_MEMBER",
    "BundleReport",
    "ExportSummary",
    "export_bundle",
    "parse_entry",
    "proof_ranges",
    "verify_bundle",
]
Layout = Literal["entries", "chunks"]


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What went into a bundle."""

    path: Path
    entries: int
    tree_size: int
    root_hash: bytes
    since_size: int | None


def _write(zf: zipfile.ZipFile, name: str, data: bytes, hashes: dict[str, str]) -> None:
    info = zipfile.ZipInfo(name, _ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)
    hashes[name] = hashlib.sha256(data).hexdigest()


def export_bundle(
    ledger: Ledger,
    out: Path,
    entries: Iterable[StoredEntry],
    *,
    selection: dict[str, Any],
    since_size: int | None = None,
    progress: Progress | None = None,
    layout: Layout = "entries",
    checkpoint: StoredCheckpoint | None = None,
) -> ExportSummary:
    """Write an evidence bundle for ``entries`` proven into the latest checkpoint (or
    ``checkpoint``, when the caller chose its entries below that checkpoint's size).

    ``layout="chunks"`` writes the v2 layout, whose memory use does not grow with the
    number of entries. The bundle appears at ``out`` only when complete; on any failure
    nothing is left.
    """
    stored = checkpoint or ledger.storage.latest_checkpoint(ledger.log.id)
    if stored is None:
        raise FormatError(f"log {ledger.log.name!r} is empty; there is nothing to export")
    tmp = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            bundle = _BundleWriter(ledger, zf, stored, layout)
            for entry in entries:
                if entry.index >= stored.tree_size:
                    break
                bundle.add(entry)
                if progress:
                    progress(1)
            bundle.finish(selection, since_size)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return ExportSummary(out, bundle.count, stored.tree_size, stored.root_hash, since_size)


class _BundleWriter:
    """Writes entries into an open ZIP in either layout, then the closing files."""

    def __init__(
        self, ledger: Ledger, zf: zipfile.ZipFile, stored: StoredCheckpoint, layout: Layout
    ) -> None:
        self.ledger = ledger
        self.zf = zf
        self.stored = stored
        self.layout = layout
        self.hashes: dict[str, str] = {}
        self.listed: list[dict[str, Any]] = []  # v1 only: the manifest lists every entry
        self.chunks: list[dict[str, Any]] = []  # v2: one record per 4,096 entries
        self.pending: list[StoredEntry] = []
        self.pending_bytes = 0
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        _write(zf, "checkpoint", stored.note, self.hashes)

    def add(self, entry: StoredEntry) -> None:
        """One selected entry (in index order)."""
        if self.last is not None and entry.index <= self.last:
            raise FormatError(f"entries must be exported in index order ({entry.index})")
        self.count += 1
        self.first = entry.index if self.first is None else self.first
        self.last = entry.index
        if self.layout == "chunks":
            self.pending.append(entry)
            self.pending_bytes += len(entry.data)
            if len(self.pending) >= CHUNK_ENTRIES or self.pending_bytes >= CHUNK_BYTES:
                self._flush_chunk()
            return
        leaf = leaf_hash(entry.data)
        committed = self.ledger.leaf_hash(entry.index)
        _check_leaf(entry.index, leaf, committed)
        receipt = self.ledger.receipt(entry.index, self.stored.tree_size)
        _write(self.zf, f"entries/{entry.index}.json", entry.data, self.hashes)
        _write(self.zf, f"proofs/{entry.index}.tlog-proof", receipt.to_text().encode(), self.hashes)
        self.listed.append(
            {
                "index": entry.index,
                "leaf_hash": b64encode(leaf),
                "source": entry.source,
                "id": entry.event_id,
            }
        )

    def _flush_chunk(self) -> None:
        """Write the pending entries and the subtree hashes their proofs need, once each."""
        if not self.pending:
            return
        tree_size = self.stored.tree_size
        indexes = [e.index for e in self.pending]
        ranges = proof_ranges(indexes, tree_size)
        nodes = self.ledger.read_nodes(proof_nodes(ranges) + [(0, i) for i in indexes])
        for entry in self.pending:
            _check_leaf(entry.index, leaf_hash(entry.data), nodes[(0, entry.index)])
        name = f"chunks/{len(self.chunks):06d}"
        lines = b"".join(b"%d %s\n" % (e.index, e.data) for e in self.pending)
        _write(self.zf, f"{name}.entries", lines, self.hashes)
        proof = "".join(f"{s} {e} {b64encode(range_hash(s, e, nodes))}\n" for s, e in ranges)
        _write(self.zf, f"{name}.proof", proof.encode(), self.hashes)
        self.chunks.append(
            {"name": name, "entries": len(indexes), "first": indexes[0], "last": indexes[-1]}
        )
        self.pending = []
        self.pending_bytes = 0

    def finish(self, selection: dict[str, Any], since_size: int | None) -> None:
        """Consistency proof, keys, REPORT.md and the manifest."""
        self._flush_chunk()
        ledger, zf, hashes = self.ledger, self.zf, self.hashes
        tree_size = self.stored.tree_size
        consistency = []
        if since_size is not None and 0 < since_size < tree_size:
            old = ledger.storage.checkpoint_at(ledger.log.id, since_size)
            if old is None:
                raise NotFoundError(
                    f"log {ledger.log.name!r} has no checkpoint at size {since_size}; "
                    "`trailseal checkpoint --size N` shows which sizes exist"
                )
            _write(zf, f"checkpoints/{since_size}", old.note, hashes)
            proof = ledger.consistency_proof(since_size, tree_size)
            text = "".join(b64encode(h) + "\n" for h in proof).encode()
            _write(zf, f"consistency/{since_size}-{tree_size}", text, hashes)
            consistency.append({"from": since_size, "to": tree_size})
        keys = [v.to_string() for v in ledger.verifiers()]
        _write(zf, "keys/verifier.txt", ("\n".join(keys) + "\n").encode(), hashes)
        span = (self.first, self.last) if self.first is not None and self.last is not None else None
        report = _report(
            ledger,
            self.stored.root_hash,
            tree_size,
            self.count,
            span,
            selection,
            consistency,
            self.layout == "chunks",
        )
        _write(zf, "REPORT.md", report.encode(), hashes)
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT if self.layout == "entries" else CHUNKED_BUNDLE_FORMAT,
            "origin": ledger.origin,
            "tree_size": tree_size,
            "root_hash": b64encode(self.stored.root_hash),
            "created_at": rfc3339(ledger.clock()),
            "selection": selection,
            "verifier_keys": keys,
            "consistency": consistency,
            "files": hashes,
        }
        if self.layout == "entries":
            manifest["entries"] = self.listed
        else:
            manifest["entry_count"] = self.count
            manifest["chunks"] = self.chunks
        info = zipfile.ZipInfo("manifest.json", _ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _check_leaf(index: int, found: bytes, expected: bytes) -> None:
    if found != expected:
        raise TamperError(
            f"entry {index} does not match the tree; run `trailseal verify`",
            index=index,
            expected=expected,
            found=found,
        )


def _report(
    ledger: Ledger,
    root: bytes,
    tree_size: int,
    count: int,
    span: tuple[int, int] | None,
    selection: dict[str, Any],
    consistency: list[dict[str, int]],
    chunked: bool,
) -> str:
    lines = [
        "# trailseal evidence bundle",
        "",
        f"- Log origin: `{ledger.origin}`",
        f"- Checkpoint: tree size {tree_size}, root `{b64encode(root)}`",
        f"- Entries: {count}" + (f" (indexes {span[0]} to {span[1]})" if span else ""),
        f"- Selection: `{orjson.dumps(selection).decode()}`",
    ]
    for c in consistency:
        lines.append(f"- Consistency proof from size {c['from']} to {c['to']} included")
    lines += [
        "",
        "## How to check it",
        "",
        "Obtain the log's verifier key from a source you trust (not from this bundle), then:",
        "",
        "    trailseal verify-bundle THIS.zip --key '<verifier key>'",
        "",
        *(
            [
                "Each `proofs/<index>.tlog-proof` is a standard c2sp.org/tlog-proof@v1 receipt",
                "and each `entries/<index>.json` holds the exact RFC 8785 bytes whose RFC 9162",
                "leaf hash it proves, so any RFC 9162 implementation can check them without",
                "trailseal.",
            ]
            if not chunked
            else [
                "Each line of `chunks/<n>.entries` is `<index> <exact RFC 8785 bytes>`; the",
                "RFC 9162 inclusion proof of an entry is the hash of each of its proof ranges",
                "(`<start> <end> <hash>` lines of `chunks/<n>.proof`), checked against the",
                "root of `checkpoint`, so any RFC 9162 implementation can check them without",
                "trailseal.",
            ]
        ),
        "",
    ]
    return "\n".join(lines)


@dataclass
class BundleReport:
    """What :func:`verify_bundle` checked."""

    origin: str
    tree_size: int
    entries_checked: int = 0
    consistency_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.problems


def _check_entry(
    zf: zipfile.ZipFile, index: int, signed: SignedCheckpoint, verifiers: list[NoteVerifier]
) -> str | None:
    """One entry: canonical bytes, and a receipt that proves them into a trusted checkpoint."""
    try:
        data = _read(zf, f"entries/{index}.json")
        if canonicalize(orjson.loads(data)) != data:
            raise FormatError("entry bytes are not RFC 8785 canonical JSON")
        receipt = Receipt.from_text(_read(zf, f"proofs/{index}.tlog-proof").decode())
        if receipt.index != index:
            raise FormatError(f"receipt is for index {receipt.index}")
        verify_receipt(receipt, verifiers, origin=signed.origin, entry=data)
    except (Error, orjson.JSONDecodeError, UnicodeDecodeError) as e:
        return f"entry {index}: {e.diagnostics() if isinstance(e, Error) else e}"
    return None


def _check_consistency(
    zf: zipfile.ZipFile,
    first: int,
    second: int,
    signed: SignedCheckpoint,
    verifiers: list[NoteVerifier],
) -> str | None:
    """An older checkpoint and the consistency proof from it to the bundle's checkpoint."""
    try:
        old = verify_checkpoint(_read(zf, f"checkpoints/{first}"), verifiers, signed.origin)
        text = _read(zf, f"consistency/{first}-{second}").decode()
        proof = [b64decode(line, "consistency proof hash") for line in text.split()]
        if second != signed.tree_size or old.tree_size != first:
            raise FormatError("consistency proof sizes do not match the checkpoints")
        verify_consistency(first, second, proof, old.root_hash, signed.root_hash)
    except (Error, UnicodeDecodeError) as e:
        return f"consistency {first}->{second}: {e.diagnostics() if isinstance(e, Error) else e}"
    return None


def verify_bundle(
    path: Path, verifiers: list[NoteVerifier], progress: Progress | None = None
) -> BundleReport:
    """Check an evidence bundle offline against trusted verifier keys."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FormatError(f"{path} is not a readable evidence bundle: {e}") from e
    with zf:
        try:
            manifest = orjson.loads(_read(zf, "manifest.json"))
        except orjson.JSONDecodeError as e:
            raise FormatError(f"bundle manifest is not JSON: {e}") from e
        formats = (BUNDLE_FORMAT, CHUNKED_BUNDLE_FORMAT)
        if not isinstance(manifest, dict) or manifest.get("format") not in formats:
            raise FormatError(f"bundle manifest is not {' or '.join(formats)}")
        origin = manifest.get("origin")
        if not isinstance(origin, str):
            raise FormatError("bundle manifest has no origin")
        signed = verify_checkpoint(_read(zf, "checkpoint"), verifiers, origin)
        report = BundleReport(origin, signed.tree_size)
        files = manifest.get("files", {})
        for name, digest in sorted(files.items()):
            if hashlib.sha256(_read(zf, name)).hexdigest() != digest:
                report.problems.append(f"{name} does not match its hash in the manifest")
        if manifest["format"] == CHUNKED_BUNDLE_FORMAT:
            report.entries_checked += check_chunks(zf, manifest, signed, report.problems, progress)
        for item in manifest.get("entries", []) if manifest["format"] == BUNDLE_FORMAT else []:
            problem = _check_entry(zf, int(item["index"]), signed, verifiers)
            if problem:
                report.problems.append(problem)
            report.entries_checked += 1
            if progress:
                progress(1)
        for c in manifest.get("consistency", []):
            problem = _check_consistency(zf, int(c["from"]), int(c["to"]), signed, verifiers)
            if problem:
                report.problems.append(problem)
            report.consistency_checked += 1
        return report


def parse_entry(data: bytes) -> Any:
    """An entry's JSON value (for filters and display)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise EntryError(f"stored entry is not JSON: {e}") from e
