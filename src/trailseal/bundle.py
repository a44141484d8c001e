"""Evidence bundles: a ZIP an auditor can check offline with nothing but a verifier key.

Layout (format ``trailseal-evidence-bundle/v1``)::

    manifest.json                 what is inside, with the SHA-256 of every other file
    checkpoint                    the signed checkpoint every receipt proves into
    entries/<index>.json          each selected entry's exact canonical bytes
    proofs/<index>.tlog-proof     a c2sp.org/tlog-proof@v1 receipt per entry
    checkpoints/<size>            older checkpoints the auditor may already hold
    consistency/<size>-<size>     RFC 9162 consistency proofs, one base64 hash a line
    keys/verifier.txt             the log's verifier keys (informational: trust yours)
    REPORT.md                     a readable summary

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
from typing import Any

import orjson

from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trailseal.core.merkle import leaf_hash, verify_consistency
from trailseal.core.note import NoteVerifier, b64decode, b64encode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.errors import EntryError, Error, FormatError, NotFoundError, TamperError
from trailseal.ledger import Ledger, rfc3339
from trailseal.storage.base import StoredCheckpoint, StoredEntry

BUNDLE_FORMAT = "trailseal-evidence-bundle/v1"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MAX_BUNDLE_MEMBER = 64 << 20

Progress = Callable[[int], None]


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
) -> ExportSummary:
    """Write an evidence bundle for ``entries`` proven into the latest checkpoint.

    The bundle appears at ``out`` only when complete; on any failure nothing is left.
    """
    stored = ledger.storage.latest_checkpoint(ledger.log.id)
    if stored is None:
        raise FormatError(f"log {ledger.log.name!r} is empty; there is nothing to export")
    listed: list[dict[str, Any]] = []
    tmp = out.with_name(out.name + ".partial")
    try:
        _write_bundle(ledger, tmp, entries, stored, selection, since_size, progress, listed)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return ExportSummary(out, len(listed), stored.tree_size, stored.root_hash, since_size)


def _write_bundle(
    ledger: Ledger,
    tmp: Path,
    entries: Iterable[StoredEntry],
    stored: StoredCheckpoint,
    selection: dict[str, Any],
    since_size: int | None,
    progress: Progress | None,
    listed: list[dict[str, Any]],
) -> None:
    tree_size = stored.tree_size
    hashes: dict[str, str] = {}
    with zipfile.ZipFile(tmp, "w") as zf:
        _write(zf, "checkpoint", stored.note, hashes)
        for entry in entries:
            if entry.index >= tree_size:
                break
            leaf = leaf_hash(entry.data)
            committed = ledger.leaf_hash(entry.index)
            if leaf != committed:
                raise TamperError(
                    f"entry {entry.index} does not match the tree; run `trailseal verify`",
                    index=entry.index,
                    expected=committed,
                    found=leaf,
                )
            receipt = ledger.receipt(entry.index, tree_size)
            _write(zf, f"entries/{entry.index}.json", entry.data, hashes)
            _write(zf, f"proofs/{entry.index}.tlog-proof", receipt.to_text().encode(), hashes)
            listed.append(
                {
                    "index": entry.index,
                    "leaf_hash": b64encode(leaf),
                    "source": entry.source,
                    "id": entry.event_id,
                }
            )
            if progress:
                progress(1)
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
        report = _report(ledger, stored.root_hash, tree_size, listed, selection, consistency)
        _write(zf, "REPORT.md", report.encode(), hashes)
        manifest = {
            "format": BUNDLE_FORMAT,
            "origin": ledger.origin,
            "tree_size": tree_size,
            "root_hash": b64encode(stored.root_hash),
            "created_at": rfc3339(ledger.clock()),
            "selection": selection,
            "verifier_keys": keys,
            "entries": listed,
            "consistency": consistency,
            "files": hashes,
        }
        info = zipfile.ZipInfo("manifest.json", _ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _report(
    ledger: Ledger,
    root: bytes,
    tree_size: int,
    listed: list[dict[str, Any]],
    selection: dict[str, Any],
    consistency: list[dict[str, int]],
) -> str:
    lines = [
        "# trailseal evidence bundle",
        "",
        f"- Log origin: `{ledger.origin}`",
        f"- Checkpoint: tree size {tree_size}, root `{b64encode(root)}`",
        f"- Entries: {len(listed)}"
        + (f" (indexes {listed[0]['index']} to {listed[-1]['index']})" if listed else ""),
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
        "Each `proofs/<index>.tlog-proof` is a standard c2sp.org/tlog-proof@v1 receipt and",
        "each `entries/<index>.json` holds the exact RFC 8785 bytes whose RFC 9162 leaf hash it",
        "proves, so any RFC 9162 implementation can check them without trailseal.",
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


def _read(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError as e:
        raise FormatError(f"bundle has no {name}") from e
    if info.file_size > MAX_BUNDLE_MEMBER:
        raise FormatError(f"bundle member {name} is larger than {MAX_BUNDLE_MEMBER} bytes")
    return zf.read(info)


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
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise FormatError(f"bundle manifest is not {BUNDLE_FORMAT}")
        origin = manifest.get("origin")
        if not isinstance(origin, str):
            raise FormatError("bundle manifest has no origin")
        signed = verify_checkpoint(_read(zf, "checkpoint"), verifiers, origin)
        report = BundleReport(origin, signed.tree_size)
        files = manifest.get("files", {})
        for name, digest in sorted(files.items()):
            if hashlib.sha256(_read(zf, name)).hexdigest() != digest:
                report.problems.append(f"{name} does not match its hash in the manifest")
        for item in manifest.get("entries", []):
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
