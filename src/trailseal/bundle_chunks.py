"""Chunked evidence bundles (``trailseal-evidence-bundle/v2``): the proof side.

Which subtree hashes a chunk's inclusion proofs need (:func:`proof_ranges`), and how a
checker verifies every entry of every chunk against one trusted checkpoint
(:func:`check_chunks`). The layout is described in :mod:`trailseal.bundle`.
"""

from __future__ import annotations

import bisect
import re
import zipfile
from collections.abc import Callable
from typing import Any

import orjson

from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import SignedCheckpoint
from trailseal.core.merkle import inclusion_ranges, leaf_hash, verify_inclusion
from trailseal.core.note import b64decode
from trailseal.errors import Error, FormatError

MAX_BUNDLE_MEMBER = 64 << 20
_CHUNK_NAME = re.compile(r"chunks/[0-9]{6}")


def proof_ranges(indexes: list[int], tree_size: int) -> list[tuple[int, int]]:
    """The union of ``inclusion_ranges(i, tree_size)`` over sorted ``indexes``, sorted.

    The same walk as :func:`~trailseal.core.merkle.inclusion_ranges` (RFC 9162
    §2.1.3.1), done once for all indexes: each subtree on some index's path is visited
    once, instead of once per index.
    """
    out: list[tuple[int, int]] = []
    stack = [(0, tree_size, 0, len(indexes))]
    while stack:
        start, end, lo, hi = stack.pop()
        if end - start <= 1 or lo == hi:
            continue
        k = 1 << ((end - start - 1).bit_length() - 1)
        mid = bisect.bisect_left(indexes, start + k, lo, hi)
        if mid > lo:  # indexes on the left need the right subtree's hash
            out.append((start + k, end))
            stack.append((start, start + k, lo, mid))
        if hi > mid:
            out.append((start, start + k))
            stack.append((start + k, end, mid, hi))
    out.sort()
    return out


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError as e:
        raise FormatError(f"bundle has no {name}") from e
    if info.file_size > MAX_BUNDLE_MEMBER:
        raise FormatError(f"bundle member {name} is larger than {MAX_BUNDLE_MEMBER} bytes")
    return zf.read(info)


def _chunk_proof(zf: zipfile.ZipFile, name: str) -> dict[tuple[int, int], bytes]:
    hashes: dict[tuple[int, int], bytes] = {}
    for line in read_member(zf, f"{name}.proof").decode().splitlines():
        start, end, value = line.split(" ")
        hashes[(int(start), int(end))] = b64decode(value, "proof hash")
    return hashes


def check_chunks(
    zf: zipfile.ZipFile,
    manifest: dict[str, Any],
    signed: SignedCheckpoint,
    problems: list[str],
    progress: Callable[[int], None] | None,
) -> int:
    """v2: every entry of every chunk, proven into the (already verified) checkpoint;
    appends what fails to ``problems`` and returns how many entries were checked."""
    chunks = manifest.get("chunks")
    if not isinstance(chunks, list):
        raise FormatError("bundle manifest has no chunk list")
    last = -1
    checked = 0
    for chunk in chunks:
        name = chunk.get("name") if isinstance(chunk, dict) else None
        if not isinstance(name, str) or not _CHUNK_NAME.fullmatch(name):
            raise FormatError(f"bundle manifest names an invalid chunk {name!r}")
        try:
            nodes = _chunk_proof(zf, name)
            lines = read_member(zf, f"{name}.entries").split(b"\n")
        except (Error, ValueError, UnicodeDecodeError) as e:
            problems.append(f"{name}: {e.diagnostics() if isinstance(e, Error) else e}")
            continue
        if lines[-1] != b"" or len(lines) - 1 != chunk.get("entries"):
            problems.append(f"{name}: does not hold the {chunk.get('entries')} entries listed")
        for line in lines[:-1]:
            number, _, data = line.partition(b" ")
            try:
                index = int(number)
            except ValueError:
                problems.append(f"{name}: a line does not start with an entry index")
                continue
            if index <= last:
                problems.append(f"entry {index}: listed out of order")
            last = max(last, index)
            problem = _check_chunk_entry(index, data, nodes, signed)
            if problem:
                problems.append(problem)
            checked += 1
            if progress:
                progress(1)
    if checked != manifest.get("entry_count"):
        problems.append(
            f"the manifest lists {manifest.get('entry_count')} entries; the chunks hold {checked}"
        )
    return checked


def _check_chunk_entry(
    index: int, data: bytes, nodes: dict[tuple[int, int], bytes], signed: SignedCheckpoint
) -> str | None:
    """One v2 entry: canonical bytes, and its RFC 9162 inclusion proof into the checkpoint."""
    try:
        if canonicalize(orjson.loads(data)) != data:
            raise FormatError("entry bytes are not RFC 8785 canonical JSON")
        ranges = inclusion_ranges(index, signed.tree_size)
        missing = [r for r in ranges if r not in nodes]
        if missing:
            raise FormatError(f"the chunk's proof lacks the hash of leaves {missing[0]}")
        proof = [nodes[r] for r in ranges]
        verify_inclusion(leaf_hash(data), index, signed.tree_size, proof, signed.root_hash)
    except (Error, orjson.JSONDecodeError) as e:
        return f"entry {index}: {e.diagnostics() if isinstance(e, Error) else e}"
    return None
