"""C2SP tlog-tiles: tile coordinates, paths, entry bundles, and tree integration.

A tile at level ``L`` holds up to 256 hashes of tree level ``8 * L``: level 0 holds leaf
hashes, level 1 the roots of complete 256-leaf subtrees, and so on. A tile that is not
full is *partial* and is addressed with its width (``.p/<W>``).

:func:`integrate` is the pure heart of appending: handed the right-edge partial tiles of
the current tree and the new leaf hashes, it returns the hashes to append to each tile
and the new root. Storage owns the transaction that writes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from trailseal.core.merkle import EMPTY_ROOT, HASH_SIZE, Node, fold_right, node_hash
from trailseal.errors import FormatError

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_SIZE = 0xFFFF
"""Entry bundles prefix each entry with a big-endian uint16 length (C2SP tlog-tiles)."""

TileKey = tuple[int, int]
"""``(level, index)`` of a tile."""

CompactRange = tuple[tuple[int, bytes], ...]
"""The roots of the perfect subtrees a tree is made of, as ``(height, hash)``, largest
first: one per set bit of the tree size. The tree's root is their right fold."""


@dataclass(frozen=True, slots=True)
class TileChunk:
    """Hashes to append to tile ``(level, index)`` from position ``start`` on."""

    level: int
    index: int
    start: int
    hashes: bytes

    @property
    def width(self) -> int:
        """The tile's width once this chunk is written."""
        return self.start + len(self.hashes) // HASH_SIZE


@dataclass(frozen=True, slots=True)
class Integration:
    """What appending a batch of leaves produces."""

    tree_size: int
    root_hash: bytes
    chunks: list[TileChunk]
    edge: dict[TileKey, bytes]
    """The right-edge partial tiles of the new tree, to hand to the next integration."""
    compact: CompactRange
    """The new tree's compact range, to hand to the next integration."""


def hashes_at_level(tree_size: int, level: int) -> int:
    """How many complete hashes tile level ``level`` holds for a tree of ``tree_size``."""
    return tree_size >> (TILE_HEIGHT * level)


def edge_tiles(tree_size: int) -> list[tuple[int, int, int]]:
    """The partial tiles ``(level, index, width)`` on the right edge of a tree."""
    out = []
    level = 0
    while (count := hashes_at_level(tree_size, level)) > 0:
        width = count % TILE_WIDTH
        if width:
            out.append((level, count // TILE_WIDTH, width))
        level += 1
    return out


def _perfect_root(hashes: bytes) -> bytes:
    """MTH of a power-of-two number of concatenated hashes."""
    layer = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
    while len(layer) > 1:
        layer = [node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def compact_range(tree_size: int, edge: Mapping[TileKey, bytes]) -> CompactRange:
    """The tree's compact range, computed from its right-edge partial tiles alone."""
    roots: list[tuple[int, bytes]] = []
    for level, index, width in reversed(edge_tiles(tree_size)):
        tile = edge[(level, index)]
        pos = 0
        for bit in reversed(range(TILE_HEIGHT)):
            if width & (1 << bit):
                n = 1 << bit
                part = tile[pos * HASH_SIZE : (pos + n) * HASH_SIZE]
                roots.append((TILE_HEIGHT * level + bit, _perfect_root(part)))
                pos += n
    return tuple(roots)


def _root(compact: CompactRange) -> bytes:
    return fold_right([h for _, h in compact]) if compact else EMPTY_ROOT


def tree_root(tree_size: int, edge: Mapping[TileKey, bytes]) -> bytes:
    """The root hash of a tree from its right-edge partial tiles alone."""
    return _root(compact_range(tree_size, edge))


def _extend(compact: CompactRange, leaf_hashes: Sequence[bytes]) -> CompactRange:
    """Append leaves to a compact range: about one hash per leaf, amortized."""
    stack = list(compact)
    for leaf in leaf_hashes:
        height, node = 0, leaf
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
    return tuple(stack)


def integrate(
    tree_size: int,
    edge: Mapping[TileKey, bytes],
    leaf_hashes: Sequence[bytes],
    compact: CompactRange | None = None,
) -> Integration:
    """Append ``leaf_hashes`` to a tree of ``tree_size`` whose edge tiles are ``edge``.

    ``edge`` must hold every tile that :func:`edge_tiles` names for ``tree_size``, each
    at exactly its width. ``compact``, the previous integration's compact range, saves
    rehashing the edge (it is derived from ``edge`` when not given). Returns the chunks
    to append to tiles and the new root.
    """
    for level, index, width in edge_tiles(tree_size):
        have = edge.get((level, index))
        if have is None or len(have) != width * HASH_SIZE:
            raise ValueError(f"edge tile {level}/{index} must hold {width} hashes")
    new_edge: dict[TileKey, bytes] = {}
    chunks: list[TileChunk] = []
    pending: list[bytes] = list(leaf_hashes)
    level = 0
    while pending:
        count = hashes_at_level(tree_size, level)
        index, width = divmod(count, TILE_WIDTH)
        current = edge.get((level, index), b"") if width else b""
        promoted: list[bytes] = []
        pos = 0
        while pos < len(pending):
            take = min(TILE_WIDTH - width, len(pending) - pos)
            added = b"".join(pending[pos : pos + take])
            chunks.append(TileChunk(level, index, width, added))
            current += added
            width += take
            pos += take
            if width == TILE_WIDTH:
                promoted.append(_perfect_root(current))
                index, width, current = index + 1, 0, b""
        if width:
            new_edge[(level, index)] = current
        pending = promoted
        level += 1
    new_size = tree_size + len(leaf_hashes)
    # Levels above the ones this batch touched keep their partial tiles unchanged.
    for level, index, width in edge_tiles(new_size):
        if (level, index) not in new_edge:
            new_edge[(level, index)] = edge[(level, index)][: width * HASH_SIZE]
    start = compact_range(tree_size, edge) if compact is None else compact
    new_compact = _extend(start, leaf_hashes)
    return Integration(new_size, _root(new_compact), chunks, new_edge, new_compact)


def node_tile(node: Node) -> tuple[TileKey, int, int]:
    """Where a tree node lives: its tile, the first hash in it, and how many hashes it spans."""
    level, index = node
    tile_level, sub = divmod(level, TILE_HEIGHT)
    first = index << sub
    return (tile_level, first // TILE_WIDTH), first % TILE_WIDTH, 1 << sub


def tile_pyramid(tile: bytes) -> list[bytes]:
    """Every level of a full tile's subtree: the 256 hashes, their 128 parents, ..., root.

    A node ``(sub, offset)`` inside the tile is ``pyramid[sub][32*offset : 32*offset+32]``.
    """
    levels = [tile]
    layer = tile
    while len(layer) > HASH_SIZE:
        layer = b"".join(
            node_hash(layer[i : i + HASH_SIZE], layer[i + HASH_SIZE : i + 2 * HASH_SIZE])
            for i in range(0, len(layer), 2 * HASH_SIZE)
        )
        levels.append(layer)
    return levels


def read_nodes_from_tiles(
    nodes: Iterable[Node], read_tiles: Callable[[list[TileKey]], Mapping[TileKey, bytes]]
) -> dict[Node, bytes]:
    """Hashes of tree nodes, computed from the tiles that hold them (one read for all)."""
    placed = [(node, *node_tile(node)) for node in nodes]
    tiles = read_tiles(sorted({key for _, key, _, _ in placed}))
    out: dict[Node, bytes] = {}
    for node, key, first, span in placed:
        tile = tiles.get(key, b"")
        part = tile[first * HASH_SIZE : (first + span) * HASH_SIZE]
        if len(part) != span * HASH_SIZE:
            raise FormatError(f"tile {key[0]}/{key[1]} is too short to hold node {node}")
        out[node] = _perfect_root(part)
    return out


def _encode_index(n: int) -> str:
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` (C2SP tlog-tiles); ``level="entries"`` for entry bundles."""
    path = f"tile/{level}/{_encode_index(index)}"
    if width < TILE_WIDTH:
        path += f".p/{width}"
    return path


_TILE_PATH = re.compile(
    r"^tile/(entries|[0-9]|[1-5][0-9]|6[0-3])/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([0-9]{1,3}))?$"
)


def parse_tile_path(path: str) -> tuple[int | str, int, int]:
    """Inverse of :func:`tile_path`: ``(level, index, width)``."""
    m = _TILE_PATH.fullmatch(path)  # not .match: "$" also matches before a final "\n"
    if not m:
        raise FormatError(f"not a tlog-tiles path: {path!r}")
    level: int | str = m.group(1) if m.group(1) == "entries" else int(m.group(1))
    index = int(m.group(2).replace("x", "").replace("/", ""))
    if _encode_index(index) != m.group(2):
        raise FormatError(f"tile index has leading zero elements (x000) in {path!r}")
    width = int(m.group(3)) if m.group(3) else TILE_WIDTH
    if not 1 <= width <= TILE_WIDTH or (m.group(3) and width == TILE_WIDTH):
        raise FormatError(f"bad partial tile width in {path!r}")
    if m.group(3) and str(width) != m.group(3):
        raise FormatError(f"partial tile width has leading zeroes in {path!r}")
    return level, index, width


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Entries as big-endian uint16 length-prefixed data (C2SP tlog-tiles entry bundle)."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise FormatError(f"entry of {len(entry)} bytes does not fit an entry bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle back into entries."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise FormatError("entry bundle ends inside a length prefix")
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + size > len(data):
            raise FormatError("entry bundle ends inside an entry")
        entries.append(data[pos : pos + size])
        pos += size
    return entries
