"""C2SP tlog-tiles: integration into a tile store, node reads, tile paths, entry bundles."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailseal.core.merkle import HASH_SIZE, root_from_leaf_hashes
from trailseal.core.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    Integration,
    TileChunk,
    TileKey,
    decode_entry_bundle,
    edge_tiles,
    encode_entry_bundle,
    integrate,
    node_tile,
    parse_tile_path,
    read_nodes_from_tiles,
    tile_path,
    tree_root,
)
from trailseal.errors import FormatError

Store = dict[TileKey, bytes]


def _leaf_hashes(start: int, count: int) -> list[bytes]:
    """Stand-in leaf hashes: distinct, deterministic, cheap."""
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, start + count)]


def _apply(store: Store, chunks: Sequence[TileChunk]) -> None:
    """Write chunks the way storage does: each must start exactly where its tile ends."""
    for c in chunks:
        key = (c.level, c.index)
        have = store.get(key, b"")
        assert c.start == len(have) // HASH_SIZE, f"chunk for {key} starts at {c.start}"
        assert c.hashes
        assert len(c.hashes) % HASH_SIZE == 0
        assert c.width <= TILE_WIDTH
        store[key] = have + c.hashes
        assert c.width == len(store[key]) // HASH_SIZE


def _edge_from_store(store: Store, size: int) -> Store:
    return {(lv, ix): store[(lv, ix)][: w * HASH_SIZE] for lv, ix, w in edge_tiles(size)}


def _expected_tiles(leaves: Sequence[bytes]) -> Store:
    """Tiles computed straight from the definition, without the tile code.

    Tile level L holds the hashes of tree level 8L: hash j is the MTH of leaves
    [j * 256**L, (j + 1) * 256**L), for every such range that is complete.
    """
    tiles: Store = {}
    level = 0
    while (span := TILE_WIDTH**level) <= len(leaves):
        count = len(leaves) // span
        if level == 0:
            hashes = list(leaves)
        else:
            hashes = [
                root_from_leaf_hashes(leaves[j * span : (j + 1) * span]) for j in range(count)
            ]
        for t in range(0, count, TILE_WIDTH):
            tiles[(level, t // TILE_WIDTH)] = b"".join(hashes[t : t + TILE_WIDTH])
        level += 1
    return tiles


def _append(store: Store, leaves: list[bytes], batch: list[bytes]) -> Integration:
    """Integrate a batch against the store's edge, apply it and check the invariants."""
    size = len(leaves)
    edge = _edge_from_store(store, size)
    integ = integrate(size, edge, batch)
    _apply(store, integ.chunks)
    leaves.extend(batch)
    assert integ.tree_size == len(leaves)
    assert integ.root_hash == root_from_leaf_hashes(leaves)
    assert integ.edge == _edge_from_store(store, integ.tree_size)
    assert set(integ.edge) == {(lv, ix) for lv, ix, _ in edge_tiles(integ.tree_size)}
    assert tree_root(integ.tree_size, integ.edge) == integ.root_hash
    return integ


def _node_hash(leaves: Sequence[bytes], level: int, index: int) -> bytes:
    return root_from_leaf_hashes(leaves[index << level : (index + 1) << level])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 700), min_size=1, max_size=10), st.data())
def test_integrate_in_random_batches_matches_independent_tiles(
    batches: list[int], data: st.DataObject
) -> None:
    store: Store = {}
    leaves: list[bytes] = []
    for count in batches:
        _append(store, leaves, _leaf_hashes(len(leaves), count))
        assert store == _expected_tiles(leaves)
    if not leaves:
        return
    # A handful of nodes, read back through the tiles.
    size = len(leaves)
    nodes = set()
    for _ in range(10):
        level = data.draw(st.integers(0, size.bit_length() - 1), label="level")
        index = data.draw(st.integers(0, (size >> level) - 1), label="index")
        nodes.add((level, index))
    got = read_nodes_from_tiles(sorted(nodes), lambda keys: {k: store[k] for k in keys})
    assert got == {(lv, ix): _node_hash(leaves, lv, ix) for lv, ix in nodes}


def test_integrate_70000_leaves_reaches_level_two() -> None:
    store: Store = {}
    leaves: list[bytes] = []
    # The 1 after 65,535 leaves completes the first level-2 hash by itself.
    for count in (1, 255, 1, 511, 0, 1000, 30_000, 33_767, 1, 4_465):
        _append(store, leaves, _leaf_hashes(len(leaves), count))
    assert len(leaves) == 70_001
    assert edge_tiles(70_001) == [(0, 273, 113), (1, 1, 17), (2, 0, 1)]
    expected = _expected_tiles(leaves)
    assert store == expected
    assert store[(2, 0)] == root_from_leaf_hashes(leaves[:65_536])
    assert len(store[(1, 0)]) == TILE_WIDTH * HASH_SIZE
    assert len(store[(1, 1)]) == 17 * HASH_SIZE

    reads: list[list[TileKey]] = []

    def read_tiles(keys: list[TileKey]) -> Store:
        reads.append(keys)
        return {k: store[k] for k in keys if k in store}

    nodes = [
        (0, 0), (0, 70_000), (1, 34_999), (3, 8_749), (7, 545), (8, 0), (8, 272),
        (9, 135), (12, 16), (15, 1), (16, 0), (5, 2_100), (10, 67), (11, 33),
    ]  # fmt: skip
    got = read_nodes_from_tiles(nodes, read_tiles)
    assert got == {(lv, ix): _node_hash(leaves, lv, ix) for lv, ix in nodes}
    assert len(reads) == 1  # one read for all nodes
    assert reads[0] == sorted(set(reads[0]))

    with pytest.raises(FormatError, match="too short to hold node"):
        read_nodes_from_tiles([(0, 70_001)], read_tiles)  # the next leaf, not there yet
    with pytest.raises(FormatError, match="too short to hold node"):
        read_nodes_from_tiles([(8, 273)], read_tiles)  # an incomplete 256-leaf subtree


def test_integrate_rejects_an_incomplete_edge() -> None:
    store: Store = {}
    leaves: list[bytes] = []
    _append(store, leaves, _leaf_hashes(0, 300))
    with pytest.raises(ValueError, match=r"edge tile 0/1 must hold 44 hashes"):
        integrate(300, {(1, 0): store[(1, 0)]}, _leaf_hashes(300, 1))
    with pytest.raises(ValueError, match=r"edge tile 1/0 must hold 1 hashes"):
        integrate(300, {(0, 1): store[(0, 1)], (1, 0): b""}, _leaf_hashes(300, 1))


def test_edge_tiles_and_node_tile_known_answers() -> None:
    assert edge_tiles(0) == []
    assert edge_tiles(1) == [(0, 0, 1)]
    assert edge_tiles(256) == [(1, 0, 1)]
    assert edge_tiles(257) == [(0, 1, 1), (1, 0, 1)]
    assert edge_tiles(65_536) == [(2, 0, 1)]
    assert tree_root(0, {}) == hashlib.sha256(b"").digest()
    # node (level, index) -> (tile key, first hash in the tile, hashes spanned)
    assert node_tile((0, 300)) == ((0, 1), 44, 1)
    assert node_tile((3, 40)) == ((0, 1), 64, 8)
    assert node_tile((8, 5)) == ((1, 0), 5, 1)
    assert node_tile((9, 130)) == ((1, 1), 4, 2)
    assert node_tile((16, 0)) == ((2, 0), 0, 1)


# -- tile paths ---------------------------------------------------------------------


def test_tile_path_known_answers() -> None:
    # The examples of c2sp.org/tlog-tiles.
    assert tile_path(0, 1_234_067) == "tile/0/x001/x234/067"
    assert tile_path(1, 1_234_067, 8) == "tile/1/x001/x234/067.p/8"
    assert tile_path("entries", 1_234_067) == "tile/entries/x001/x234/067"
    assert tile_path("entries", 1_234_067, 8) == "tile/entries/x001/x234/067.p/8"
    assert tile_path(0, 0) == "tile/0/000"
    assert tile_path(2, 999, 255) == "tile/2/999.p/255"
    assert tile_path(0, 1000) == "tile/0/x001/000"
    assert tile_path(63, 1_000_000, 1) == "tile/63/x001/x000/000.p/1"
    assert parse_tile_path("tile/0/x001/x234/067") == (0, 1_234_067, 256)
    assert parse_tile_path("tile/1/x001/x234/067.p/8") == (1, 1_234_067, 8)
    assert parse_tile_path("tile/entries/x001/x234/067.p/8") == ("entries", 1_234_067, 8)


levels = st.one_of(st.integers(0, 63), st.just("entries"))


@settings(max_examples=200, deadline=None)
@given(levels, st.integers(0, 1 << 40), st.integers(1, TILE_WIDTH))
def test_tile_path_round_trips_both_ways(level: int | str, index: int, width: int) -> None:
    path = tile_path(level, index, width)
    assert parse_tile_path(path) == (level, index, width)
    assert tile_path(*parse_tile_path(path)) == path
    assert path.endswith(".p/" + str(width)) == (width < TILE_WIDTH)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/000.p/08",  # leading zero in the width
        "tile/0/000.p/000",
        "tile/0/000.p/0",  # width 0
        "tile/0/000.p/256",  # a full tile is never addressed as partial
        "tile/0/000.p/257",
        "tile/0/000.p/",
        "tile/0/001/234",  # missing x prefix
        "tile/0/x001/x234",  # the last element has no x
        "tile/0/x1/234",
        "tile/0/1234",
        "tile/0/12",
        "tile/0/x000/001",  # leading zero element: not the encoding of 1
        "tile/64/000",  # level 64
        "tile/00/000",
        "tile/07/000",
        "tile/-1/000",
        "tile/data/000",
        "tile/0/000\n",  # "$" alone would accept a trailing newline
        "tile/0/000/",
        "/tile/0/000",
        "tile/0/000.p/8/",
        "tile/0/000 ",
        "tile/0/\u0660\u0660\u0660",  # Arabic-Indic digits are digits, but not ASCII ones
        "tile/entries/000.p/256",
        "",
    ],
)
def test_parse_tile_path_rejects_malformed_paths(path: str) -> None:
    with pytest.raises(FormatError):
        parse_tile_path(path)


# -- entry bundles ------------------------------------------------------------------


bundle_entries = st.lists(st.binary(max_size=300), max_size=20)


@settings(max_examples=150, deadline=None)
@given(bundle_entries)
def test_entry_bundle_round_trips(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    assert len(data) == sum(2 + len(e) for e in entries)
    assert decode_entry_bundle(data) == entries
    assert encode_entry_bundle(decode_entry_bundle(data)) == data


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64))
def test_entry_bundle_decodes_arbitrary_bytes_exactly_or_not_at_all(data: bytes) -> None:
    try:
        entries = decode_entry_bundle(data)
    except FormatError:
        return
    assert encode_entry_bundle(entries) == data


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_entry_bundle_truncated_inside_an_entry_is_rejected(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    boundaries = {0}
    pos = 0
    for e in entries:
        pos += 2 + len(e)
        boundaries.add(pos)
    for cut in range(len(data)):
        if cut in boundaries:
            k = sorted(boundaries).index(cut)
            assert decode_entry_bundle(data[:cut]) == entries[:k]
        else:
            with pytest.raises(FormatError, match="entry bundle ends inside"):
                decode_entry_bundle(data[:cut])


def test_entry_bundle_known_answer_and_size_limit() -> None:
    assert encode_entry_bundle([]) == b""
    assert decode_entry_bundle(b"") == []
    assert encode_entry_bundle([b"", b"ab"]) == b"\x00\x00\x00\x02ab"
    assert decode_entry_bundle(b"\x01\x00" + b"z" * 256) == [b"z" * 256]
    biggest = b"x" * MAX_ENTRY_SIZE
    assert decode_entry_bundle(encode_entry_bundle([biggest])) == [biggest]
    assert encode_entry_bundle([biggest])[:2] == b"\xff\xff"
    with pytest.raises(FormatError, match="entry of 65536 bytes does not fit"):
        encode_entry_bundle([b"a", biggest + b"x"])
    with pytest.raises(FormatError, match="ends inside a length prefix"):
        decode_entry_bundle(b"\x00")
    with pytest.raises(FormatError, match="ends inside an entry"):
        decode_entry_bundle(b"\x00\x05abc")
