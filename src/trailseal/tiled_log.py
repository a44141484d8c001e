"""Verify any C2SP tlog-tiles log, ours or another implementation's, from a directory or URL.

Given the log's verifier key, it fetches ``checkpoint``, checks its signature, fetches
every entry bundle (``tile/entries/<N>[.p/<W>]``), hashes each entry as an RFC 9162 leaf,
rebuilds the tree with the same pure integration the ledger uses, compares every hash
tile the log serves (``tile/<L>/<N>[.p/<W>]``) with the rebuilt one, and finally the
root with the checkpoint's.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from trailseal.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trailseal.core.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash
from trailseal.core.note import NoteVerifier
from trailseal.core.tiles import (
    TILE_WIDTH,
    CompactRange,
    TileKey,
    decode_entry_bundle,
    integrate,
    tile_path,
)
from trailseal.errors import Error, FormatError, NotFoundError, StorageError
from trailseal.verify import Problem

Progress = Callable[[int], None]


class TileSource(Protocol):
    """Where a tiled log's files come from."""

    def fetch(self, path: str) -> bytes | None:
        """The file at ``path`` (relative, e.g. ``tile/0/000``), or None if absent."""
        ...


class DirectorySource:
    """A tiled log laid out in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def fetch(self, path: str) -> bytes | None:
        target = self.root / path
        try:
            return target.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {target}: {e}") from e


class HttpSource:
    """A tiled log served over HTTP(S)."""

    def __init__(
        self, base_url: str, timeout_s: float = 30.0, headers: dict[str, str] | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.headers = {"User-Agent": "trailseal-verify", **(headers or {})}

    def fetch(self, path: str) -> bytes | None:
        url = self.base_url + path
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310 (scheme checked by open_source)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise StorageError(f"GET {url} answered HTTP {e.code}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise StorageError(f"GET {url} failed: {e}") from e


def open_source(location: str, headers: dict[str, str] | None = None) -> TileSource:
    """A directory path or an http(s) URL (sent with ``headers``, e.g. Authorization)."""
    if location.startswith(("http://", "https://")):
        return HttpSource(location, headers=headers)
    if "://" in location:
        raise FormatError(f"unsupported location {location!r}: give a directory or an http(s) URL")
    root = Path(location)
    if not root.is_dir():
        raise NotFoundError(f"{location} is not a directory")
    return DirectorySource(root)


@dataclass
class TiledLogReport:
    """What :func:`verify_tiled_log` checked and found."""

    checkpoint: SignedCheckpoint
    entries_checked: int = 0
    tiles_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems


def _fetch_tile(source: TileSource, level: int | str, index: int, width: int) -> bytes | None:
    """A tile at ``width``; a full tile may stand in for a partial one (C2SP tlog-tiles)."""
    data = source.fetch(tile_path(level, index, width))
    if data is None and width < TILE_WIDTH:
        data = source.fetch(tile_path(level, index))
    return data


def verify_tiled_log(
    source: TileSource,
    verifiers: list[NoteVerifier],
    origin: str | None = None,
    progress: Progress | None = None,
) -> TiledLogReport:
    """Verify a whole tiled log against its verifier keys."""
    raw = source.fetch("checkpoint")
    if raw is None:
        raise NotFoundError("the log has no checkpoint file")
    signed = verify_checkpoint(raw, verifiers, origin)
    report = TiledLogReport(signed)
    size, edge, compact = 0, dict[TileKey, bytes](), CompactRange()
    building: dict[TileKey, bytes] = {}

    def compare(key: TileKey, rebuilt: bytes) -> None:
        level, index = key
        width = len(rebuilt) // HASH_SIZE
        served = _fetch_tile(source, level, index, width)
        report.tiles_checked += 1
        if served is None:
            path = tile_path(level, index, width)
            report.problems.append(Problem("missing", f"tile {path} is missing"))
            return
        served = served[: len(rebuilt)]
        if served != rebuilt:
            pos = next(
                i
                for i in range(0, len(rebuilt), HASH_SIZE)
                if served[i : i + HASH_SIZE] != rebuilt[i : i + HASH_SIZE]
            )
            report.problems.append(
                Problem(
                    "tile",
                    f"tile {tile_path(level, index, width)} hash {pos // HASH_SIZE} differs "
                    "from the hash rebuilt from the entries",
                    index=index * TILE_WIDTH + pos // HASH_SIZE if level == 0 else None,
                    expected=rebuilt[pos : pos + HASH_SIZE],
                    found=served[pos : pos + HASH_SIZE] or None,
                )
            )

    bundles = (signed.tree_size + TILE_WIDTH - 1) // TILE_WIDTH
    for n in range(bundles):
        width = min(TILE_WIDTH, signed.tree_size - n * TILE_WIDTH)
        data = _fetch_tile(source, "entries", n, width)
        if data is None:
            report.problems.append(
                Problem(
                    "missing",
                    f"entry bundle {tile_path('entries', n, width)} is missing",
                    index=n * TILE_WIDTH,
                )
            )
            return report
        try:
            entries = decode_entry_bundle(data)
        except FormatError as e:
            report.problems.append(Problem("entry", f"entry bundle {n}: {e}", index=n * TILE_WIDTH))
            return report
        if len(entries) < width:
            report.problems.append(
                Problem(
                    "missing",
                    f"entry bundle {n} holds {len(entries)} entries, the checkpoint needs {width}",
                    index=n * TILE_WIDTH + len(entries),
                )
            )
            return report
        integ = integrate(size, edge, [leaf_hash(e) for e in entries[:width]], compact)
        size, edge, compact = integ.tree_size, integ.edge, integ.compact
        for c in integ.chunks:
            key = (c.level, c.index)
            building[key] = building.get(key, b"") + c.hashes
            if c.width == TILE_WIDTH:
                compare(key, building.pop(key))
        report.entries_checked += width
        if progress:
            progress(width)
    for key, rebuilt in sorted(building.items()):
        compare(key, rebuilt)
    root = integ.root_hash if bundles else EMPTY_ROOT
    if root != signed.root_hash:
        report.problems.append(
            Problem(
                "checkpoint-root",
                "the entries do not hash to the checkpoint's root",
                expected=signed.root_hash,
                found=root,
            )
        )
    return report


__all__ = [
    "DirectorySource",
    "Error",
    "HttpSource",
    "TiledLogReport",
    "open_source",
    "verify_tiled_log",
]
