"""The storage contract: every backend in ``STORAGE_FACTORIES`` must pass all of this.

The tests drive the :class:`~trailseal.storage.base.Storage` protocol directly (no
ledger), writing real C2SP tiles from :func:`trailseal.core.tiles.integrate` and real
signed checkpoints, and check what comes back against independent oracles
(:func:`trailseal.core.merkle.root_from_leaf_hashes`, plain slicing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest

from trailseal.core.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from trailseal.core.merkle import HASH_SIZE, leaf_hash, root_from_leaf_hashes
from trailseal.core.note import NoteSigner
from trailseal.core.tiles import TILE_WIDTH, TileChunk, TileKey, edge_tiles, integrate
from trailseal.errors import AlreadyExistsError, NotFoundError, StorageError
from trailseal.storage import (
    KeyEvent,
    LogInfo,
    NewEntry,
    Storage,
    StoredCheckpoint,
    StoredEntry,
    WriteTransaction,
)

CREATED = "2025-01-01T00:00:00.000000Z"


# -- helpers ------------------------------------------------------------------------------


def make_entries(
    n: int, tag: str, *, start: int = 0, keyed: bool = True, source: str = "slack"
) -> list[NewEntry]:
    """``n`` distinct entries; keyed ones carry the idempotency key ``(source, tag-i)``."""
    out = []
    for i in range(start, start + n):
        data = f'{{"i":{i},"tag":"{tag}"}}'.encode()
        out.append(NewEntry(data, source, f"{tag}-{i}") if keyed else NewEntry(data))
    return out


def read_edge(
    read_tiles: Callable[[Sequence[TileKey]], Mapping[TileKey, bytes]], size: int
) -> dict[TileKey, bytes]:
    """The right-edge partial tiles of a stored tree of ``size``, as ``integrate`` wants."""
    edges = edge_tiles(size)
    tiles = read_tiles([(level, index) for level, index, _ in edges])
    return {
        (level, index): tiles[(level, index)][: width * HASH_SIZE] for level, index, width in edges
    }


def stored_checkpoint(
    log: LogInfo, size: int, root: bytes, signer: NoteSigner, signed_at: str
) -> StoredCheckpoint:
    note = sign_checkpoint(Checkpoint(log.origin, size, root), [signer]).to_bytes()
    return StoredCheckpoint(0, size, root, note, signed_at)


def append(
    storage: Storage,
    log: LogInfo,
    entries: Sequence[NewEntry],
    signer: NoteSigner,
    signed_at: str = "2025-01-01T00:00:01.000000Z",
) -> tuple[StoredCheckpoint, list[TileChunk]]:
    """What the ledger does, minus batching: one transaction, real tiles, signed checkpoint."""
    with storage.write(log.id) as tx:
        size = tx.tree_size()
        integ = integrate(
            size, read_edge(tx.read_tiles, size), [leaf_hash(e.data) for e in entries]
        )
        cp = stored_checkpoint(log, integ.tree_size, integ.root_hash, signer, signed_at)
        tx.append(size, entries, integ.chunks, cp)
    return cp, integ.chunks


class Boom(Exception):
    """Raised inside a write transaction by the tests."""


def append_then_raise(
    storage: Storage, log: LogInfo, entries: Sequence[NewEntry], signer: NoteSigner
) -> None:
    """Like :func:`append`, but the block raises :class:`Boom` after ``tx.append``."""
    with storage.write(log.id) as tx:
        size = tx.tree_size()
        integ = integrate(
            size, read_edge(tx.read_tiles, size), [leaf_hash(e.data) for e in entries]
        )
        cp = stored_checkpoint(log, integ.tree_size, integ.root_hash, signer, CREATED)
        tx.append(size, entries, integ.chunks, cp)
        raise Boom


def all_entries(storage: Storage, log: LogInfo) -> list[StoredEntry]:
    return list(storage.read_entries(log.id, 0, 1 << 30))


def same_checkpoint(a: StoredCheckpoint | None, b: StoredCheckpoint) -> bool:
    """Equal except for the row id, which the store assigns."""
    assert a is not None
    return (a.tree_size, a.root_hash, a.note, a.signed_at) == (
        b.tree_size,
        b.root_hash,
        b.note,
        b.signed_at,
    )


def snapshot(storage: Storage, log: LogInfo) -> tuple[object, ...]:
    """Everything a log holds, for before/after comparisons."""
    return (
        all_entries(storage, log),
        storage.entry_count(log.id),
        list(storage.tile_chunks(log.id)),
        list(storage.checkpoints(log.id)),
        storage.latest_checkpoint(log.id),
    )


@pytest.fixture
def log(storage: Storage) -> LogInfo:
    return storage.create_log("main", "test.example/main", CREATED)


# -- logs -----------------------------------------------------------------------------------


def test_fresh_store_has_no_logs(storage: Storage) -> None:
    assert storage.list_logs() == []


def test_create_get_and_list_logs(storage: Storage) -> None:
    a = storage.create_log("alpha", "test.example/alpha", CREATED)
    b = storage.create_log("beta", "test.example/beta", "2025-01-02T00:00:00.000000Z")
    assert (a.name, a.origin, a.created_at) == ("alpha", "test.example/alpha", CREATED)
    assert a.id != b.id
    assert storage.get_log("alpha") == a
    assert storage.get_log("beta") == b
    assert storage.list_logs() == [a, b]  # oldest first


@pytest.mark.parametrize(
    ("name", "origin"),
    [
        ("alpha", "test.example/other"),  # name taken
        ("other", "test.example/alpha"),  # origin taken
        ("alpha", "test.example/alpha"),  # both taken
    ],
)
def test_duplicate_name_or_origin_is_rejected(storage: Storage, name: str, origin: str) -> None:
    a = storage.create_log("alpha", "test.example/alpha", CREATED)
    with pytest.raises(AlreadyExistsError):
        storage.create_log(name, origin, CREATED)
    assert storage.list_logs() == [a]
    # The store still works after the refusal.
    b = storage.create_log("beta", "test.example/beta", CREATED)
    assert storage.list_logs() == [a, b]


def test_unknown_log_is_not_found(storage: Storage) -> None:
    storage.create_log("alpha", "test.example/alpha", CREATED)
    with pytest.raises(NotFoundError):
        storage.get_log("nope")
    with pytest.raises(NotFoundError):
        storage.get_log("test.example/alpha")  # looked up by name, not origin


# -- keys -----------------------------------------------------------------------------------


def test_key_events_keep_their_order(storage: Storage, signer: NoteSigner) -> None:
    a = storage.create_log("alpha", "test.example/alpha", CREATED)
    b = storage.create_log("beta", "test.example/beta", CREATED)
    assert storage.key_events(a.id) == []
    v1 = signer.verifier.to_string()
    v2 = NoteSigner.generate("test.example/next").verifier.to_string()
    events = [
        KeyEvent(v1, "added", "2025-01-01T00:00:00.000000Z"),
        KeyEvent(v2, "added", "2025-02-01T00:00:00.000000Z"),
        KeyEvent(v1, "retired", "2025-03-01T00:00:00.000000Z"),
    ]
    for ev in events:
        storage.add_key_event(a.id, ev)
    other = KeyEvent(v2, "added", "2025-01-15T00:00:00.000000Z")
    storage.add_key_event(b.id, other)
    assert storage.key_events(a.id) == events
    assert storage.key_events(b.id) == [other]


# -- write transactions ---------------------------------------------------------------------


def test_fresh_log_is_empty(storage: Storage, log: LogInfo) -> None:
    assert storage.latest_checkpoint(log.id) is None
    assert storage.checkpoint_at(log.id, 0) is None
    assert list(storage.checkpoints(log.id)) == []
    assert storage.entry_count(log.id) == 0
    assert list(storage.read_entries(log.id, 0, 10)) == []
    assert list(storage.tile_chunks(log.id)) == []
    assert storage.read_tiles(log.id, [(0, 0)]) == {}
    assert storage.find_entry(log.id, "slack", "x") is None
    with storage.write(log.id) as tx:
        assert tx.tree_size() == 0
        assert tx.read_tiles([(0, 0)]) == {}
        assert tx.find_entries([("slack", "x")]) == {}


def test_write_appends_entries_tiles_and_checkpoint(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    entries = make_entries(3, "k") + make_entries(2, "u", keyed=False)
    cp, chunks = append(storage, log, entries, signer)

    assert all_entries(storage, log) == [
        StoredEntry(i, e.data, e.source, e.event_id) for i, e in enumerate(entries)
    ]
    assert storage.entry_count(log.id) == 5
    assert list(storage.tile_chunks(log.id)) == chunks
    leaves = [leaf_hash(e.data) for e in entries]
    assert storage.read_tiles(log.id, [(0, 0)]) == {(0, 0): b"".join(leaves)}
    # A key asked twice is one tile, not its chunks joined twice.
    assert storage.read_tiles(log.id, [(0, 0), (0, 0)]) == {(0, 0): b"".join(leaves)}

    latest = storage.latest_checkpoint(log.id)
    assert same_checkpoint(latest, cp)
    assert latest is not None
    assert latest.root_hash == root_from_leaf_hashes(leaves)
    verify_checkpoint(latest.note, [signer.verifier], log.origin)
    assert same_checkpoint(storage.checkpoint_at(log.id, 5), cp)
    assert [c.tree_size for c in storage.checkpoints(log.id)] == [5]
    with storage.write(log.id) as tx:
        assert tx.tree_size() == 5


def test_tree_size_in_transaction_follows_checkpoints(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    expected = 0
    for n in (1, 4, 250, 7):
        with storage.write(log.id) as tx:
            assert tx.tree_size() == expected
        append(storage, log, make_entries(n, "e", start=expected), signer)
        expected += n
    with storage.write(log.id) as tx:
        assert tx.tree_size() == expected == 262


def test_tiles_across_tile_boundaries_match_the_tree(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    """Entries crossing 256 and 512 leaves: level-0 and level-1 tiles hold the right hashes."""
    entries: list[NewEntry] = []
    for n in (200, 100, 300, 1):
        batch = make_entries(n, "t", start=len(entries))
        append(storage, log, batch, signer)
        entries += batch
    leaves = [leaf_hash(e.data) for e in entries]
    size = len(leaves)  # 601

    tiles = storage.read_tiles(log.id, [(0, 0), (0, 1), (0, 2), (1, 0), (0, 3)])
    assert set(tiles) == {(0, 0), (0, 1), (0, 2), (1, 0)}
    for k in range(3):
        assert tiles[(0, k)] == b"".join(leaves[k * TILE_WIDTH : (k + 1) * TILE_WIDTH])
    assert tiles[(1, 0)] == b"".join(
        root_from_leaf_hashes(leaves[j * TILE_WIDTH : (j + 1) * TILE_WIDTH]) for j in range(2)
    )

    # tile_chunks: by level, then tile index, then start; and they rebuild the same tiles.
    chunks = list(storage.tile_chunks(log.id))
    assert [(c.level, c.index, c.start) for c in chunks] == sorted(
        (c.level, c.index, c.start) for c in chunks
    )
    rebuilt: dict[TileKey, bytes] = {}
    for c in chunks:
        assert len(rebuilt.get((c.level, c.index), b"")) == c.start * HASH_SIZE
        rebuilt[(c.level, c.index)] = rebuilt.get((c.level, c.index), b"") + c.hashes
    assert {k: v for k, v in rebuilt.items() if k in tiles} == tiles

    edge = read_edge(lambda keys: storage.read_tiles(log.id, keys), size)
    assert integrate(size, edge, []).root_hash == root_from_leaf_hashes(leaves)
    latest = storage.latest_checkpoint(log.id)
    assert latest is not None
    assert (latest.tree_size, latest.root_hash) == (size, root_from_leaf_hashes(leaves))


def test_read_tiles_concatenates_chunks_in_start_order(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    """A tile is its chunks in ``start`` order, however they were handed to ``append``."""
    entries = make_entries(8, "c")
    leaves = [leaf_hash(e.data) for e in entries]
    first = [
        TileChunk(0, 0, 3, b"".join(leaves[3:5])),  # out of order on purpose
        TileChunk(0, 0, 0, b"".join(leaves[0:3])),
    ]
    with storage.write(log.id) as tx:
        cp = stored_checkpoint(log, 5, root_from_leaf_hashes(leaves[:5]), signer, CREATED)
        tx.append(0, entries[:5], first, cp)
    with storage.write(log.id) as tx:
        cp = stored_checkpoint(log, 8, root_from_leaf_hashes(leaves), signer, CREATED)
        tx.append(5, entries[5:], [TileChunk(0, 0, 5, b"".join(leaves[5:]))], cp)

    assert storage.read_tiles(log.id, [(0, 0)]) == {(0, 0): b"".join(leaves)}
    with storage.write(log.id) as tx:
        assert tx.read_tiles([(0, 0)]) == {(0, 0): b"".join(leaves)}
    assert [c.start for c in storage.tile_chunks(log.id)] == [0, 3, 5]


def test_read_tiles_leaves_out_missing_tiles(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    append(storage, log, make_entries(3, "m"), signer)
    got = storage.read_tiles(log.id, [(0, 0), (0, 1), (1, 0), (2, 5)])
    assert list(got) == [(0, 0)]
    assert storage.read_tiles(log.id, []) == {}


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0, []),
        (4, 4, []),
        (6, 3, []),
        (0, 10, list(range(10))),
        (2, 5, [2, 3, 4]),
        (8, 20, [8, 9]),
        (10, 20, []),
        (100, 200, []),
        (-5, 2, [0, 1]),
        (0, 1 << 40, list(range(10))),
        (0, 1 << 41, list(range(10))),
        (0, 1 << 42, list(range(10))),
        (0, 1 << 64, list(range(10))),
        (-(1 << 64), 1, [0]),
    ],
)
def test_read_entries_ranges(
    storage: Storage, signer: NoteSigner, start: int, end: int, expected: list[int]
) -> None:
    # Three logs (odd and even ids): a range must never reach into a neighbour's entries.
    logs = [
        storage.create_log(name, f"test.example/{name}", CREATED)
        for name in ("first", "second", "third")
    ]
    for lg in logs:
        append(storage, lg, make_entries(10, lg.name), signer)

    for lg in logs:
        got = list(storage.read_entries(lg.id, start, end))
        assert [e.index for e in got] == expected, lg
        assert all(f'"tag":"{lg.name}"'.encode() in e.data for e in got)


def test_find_entry_by_idempotency_key(storage: Storage, log: LogInfo, signer: NoteSigner) -> None:
    entries = [
        NewEntry(b'{"a":1}', "slack", "e1"),
        NewEntry(b'{"a":2}', "github", "e1"),  # same event id, other source
        NewEntry(b'{"a":3}', "", "e2"),  # empty source is a source
        NewEntry(b'{"a":4}'),  # no key: never found
    ]
    append(storage, log, entries, signer)

    assert storage.find_entry(log.id, "slack", "e1") == StoredEntry(0, b'{"a":1}', "slack", "e1")
    assert storage.find_entry(log.id, "github", "e1") == StoredEntry(1, b'{"a":2}', "github", "e1")
    assert storage.find_entry(log.id, "", "e2") == StoredEntry(2, b'{"a":3}', "", "e2")
    assert storage.find_entry(log.id, "slack", "e2") is None
    assert storage.find_entry(log.id, "", "e1") is None

    with storage.write(log.id) as tx:
        found = tx.find_entries([("slack", "e1"), ("", "e2"), ("slack", "missing")])
    assert found == {
        ("slack", "e1"): StoredEntry(0, b'{"a":1}', "slack", "e1"),
        ("", "e2"): StoredEntry(2, b'{"a":3}', "", "e2"),
    }


@pytest.mark.parametrize("where", ["stored", "same-append"])
def test_duplicate_idempotency_key_is_refused(
    storage: Storage, log: LogInfo, signer: NoteSigner, where: str
) -> None:
    """The store itself keeps idempotency keys unique per log (the ledger never relies on it)."""
    append(storage, log, [NewEntry(b'{"a":1}', "slack", "e1")], signer)
    before = snapshot(storage, log)
    batch = (
        [NewEntry(b'{"a":2}', "slack", "e1")]
        if where == "stored"
        else [NewEntry(b'{"a":2}', "slack", "e2"), NewEntry(b'{"a":3}', "slack", "e2")]
    )
    with pytest.raises(StorageError):
        append(storage, log, batch, signer)
    assert snapshot(storage, log) == before


def test_entry_count(storage: Storage, log: LogInfo, signer: NoteSigner) -> None:
    other = storage.create_log("other", "test.example/other", CREATED)
    append(storage, log, make_entries(3, "a"), signer)
    append(storage, log, make_entries(4, "a", start=3, keyed=False), signer)
    append(storage, other, make_entries(2, "b"), signer)
    assert storage.entry_count(log.id) == 7
    assert storage.entry_count(other.id) == 2


def test_checkpoints_latest_and_at(storage: Storage, log: LogInfo, signer: NoteSigner) -> None:
    cps = []
    size = 0
    for i, n in enumerate((2, 1, 5)):
        at = f"2025-01-01T00:00:0{i}.000000Z"
        cp, _ = append(storage, log, make_entries(n, "c", start=size), signer, at)
        cps.append(cp)
        size += n
        assert same_checkpoint(storage.latest_checkpoint(log.id), cp)

    stored = list(storage.checkpoints(log.id))
    assert len(stored) == 3
    assert all(same_checkpoint(s, c) for s, c in zip(stored, cps, strict=True))
    assert [s.id for s in stored] == sorted({s.id for s in stored})  # distinct, increasing
    for cp in cps:
        assert same_checkpoint(storage.checkpoint_at(log.id, cp.tree_size), cp)
    assert storage.checkpoint_at(log.id, 0) is None
    assert storage.checkpoint_at(log.id, 4) is None
    assert storage.checkpoint_at(log.id, 9) is None


def test_checkpoint_ties_latest_signed_wins(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    first, _ = append(storage, log, make_entries(3, "t"), signer, "2025-01-01T00:00:01.000000Z")
    # A re-signed checkpoint at the same size (no new entries, e.g. after a key rotation).
    again = stored_checkpoint(
        log, 3, first.root_hash, NoteSigner.generate("test.example/new"), "2025-01-01T00:00:02Z"
    )
    with storage.write(log.id) as tx:
        tx.append(3, [], [], again)
    assert same_checkpoint(storage.latest_checkpoint(log.id), again)
    assert same_checkpoint(storage.checkpoint_at(log.id, 3), first)  # the first at that size
    stored = list(storage.checkpoints(log.id))
    assert same_checkpoint(stored[0], first)
    assert same_checkpoint(stored[1], again)
    assert storage.entry_count(log.id) == 3


@pytest.mark.parametrize("prefill", [0, 3])
def test_exception_inside_write_leaves_nothing(
    storage: Storage, log: LogInfo, signer: NoteSigner, prefill: int
) -> None:
    if prefill:
        append(storage, log, make_entries(prefill, "p"), signer)
    before = snapshot(storage, log)

    new = make_entries(300, "n", start=prefill)  # spans two level-0 tiles and a level-1 hash
    with pytest.raises(Boom):
        append_then_raise(storage, log, new, signer)

    assert snapshot(storage, log) == before
    assert storage.entry_count(log.id) == prefill
    assert storage.find_entry(log.id, "slack", f"n-{prefill}") is None
    assert storage.read_tiles(log.id, [(0, 1), (1, 0)]) == {}
    assert storage.checkpoint_at(log.id, prefill + 300) is None
    # The log is still writable, from where it was.
    with storage.write(log.id) as tx:
        assert tx.tree_size() == prefill
    cp, _ = append(storage, log, make_entries(2, "z"), signer)
    assert cp.tree_size == prefill + 2
    assert [e.index for e in all_entries(storage, log)] == list(range(prefill + 2))


def _append_in(
    tx: WriteTransaction, log: LogInfo, entries: Sequence[NewEntry], signer: NoteSigner, at: str
) -> StoredCheckpoint:
    """One ``append`` inside an open transaction, reading the edge through it."""
    size = tx.tree_size()
    integ = integrate(size, read_edge(tx.read_tiles, size), [leaf_hash(e.data) for e in entries])
    cp = stored_checkpoint(log, integ.tree_size, integ.root_hash, signer, at)
    tx.append(size, entries, integ.chunks, cp)
    return cp


def test_several_appends_in_one_transaction(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    """Each append sees the ones before it in the transaction; all commit together."""
    append(storage, log, make_entries(3, "p"), signer)
    with storage.write(log.id) as tx:
        first = _append_in(tx, log, make_entries(254, "a", start=3), signer, "2025-01-02T00:00:00Z")
        assert tx.tree_size() == 257
        assert len(tx.read_tiles([(0, 0)])[(0, 0)]) == 256 * HASH_SIZE  # the tile it filled
        assert set(tx.find_entries([("slack", "a-3"), ("slack", "a-9")])) == {
            ("slack", "a-3"),
            ("slack", "a-9"),
        }
        with pytest.raises(StorageError):  # the staged append moved the tree on
            tx.append(3, [], [], first)
        # A re-signed checkpoint at the same size, then more entries on top.
        again = stored_checkpoint(log, 257, first.root_hash, signer, "2025-01-02T00:00:01Z")
        tx.append(257, [], [], again)
        last = _append_in(tx, log, make_entries(5, "b", start=257), signer, "2025-01-02T00:00:02Z")
    stored = list(storage.checkpoints(log.id))
    assert [c.tree_size for c in stored] == [3, 257, 257, 262]
    assert all(same_checkpoint(s, c) for s, c in zip(stored[1:], [first, again, last], strict=True))
    assert same_checkpoint(storage.latest_checkpoint(log.id), last)
    entries = all_entries(storage, log)
    assert [e.index for e in entries] == list(range(262))
    assert root_from_leaf_hashes([leaf_hash(e.data) for e in entries]) == last.root_hash
    assert storage.find_entry(log.id, "slack", "b-261") is not None


def test_several_appends_roll_back_together(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    append(storage, log, make_entries(2, "p"), signer)
    before = snapshot(storage, log)

    def two_appends_then_raise() -> None:
        with storage.write(log.id) as tx:
            _append_in(tx, log, make_entries(4, "a", start=2), signer, CREATED)
            _append_in(tx, log, make_entries(300, "b", start=6), signer, CREATED)
            raise Boom

    with pytest.raises(Boom):
        two_appends_then_raise()
    assert snapshot(storage, log) == before
    assert storage.find_entry(log.id, "slack", "a-2") is None
    cp, _ = append(storage, log, make_entries(1, "z", start=2), signer)
    assert cp.tree_size == 3


def test_duplicate_idempotency_key_across_appends_in_one_transaction(
    storage: Storage, log: LogInfo, signer: NoteSigner
) -> None:
    before = snapshot(storage, log)

    def same_key_twice() -> None:
        with storage.write(log.id) as tx:
            _append_in(tx, log, make_entries(2, "a"), signer, CREATED)
            _append_in(tx, log, make_entries(1, "a"), signer, CREATED)  # a-0 again

    with pytest.raises(StorageError):
        same_key_twice()
    assert snapshot(storage, log) == before


def test_logs_are_isolated(storage: Storage, signer: NoteSigner) -> None:
    a = storage.create_log("alpha", "test.example/alpha", CREATED)
    b = storage.create_log("beta", "test.example/beta", CREATED)
    ea = make_entries(5, "same")  # the same idempotency keys in both logs are fine
    eb = [NewEntry(e.data + b" ", e.source, e.event_id) for e in make_entries(3, "same")]
    cpa, chunks_a = append(storage, a, ea, signer)
    cpb, chunks_b = append(storage, b, eb, signer)

    assert [e.data for e in all_entries(storage, a)] == [e.data for e in ea]
    assert [e.data for e in all_entries(storage, b)] == [e.data for e in eb]
    assert (storage.entry_count(a.id), storage.entry_count(b.id)) == (5, 3)
    assert list(storage.tile_chunks(a.id)) == chunks_a
    assert list(storage.tile_chunks(b.id)) == chunks_b
    assert storage.read_tiles(b.id, [(0, 0)])[(0, 0)] == b"".join(leaf_hash(e.data) for e in eb)
    assert [c.tree_size for c in storage.checkpoints(a.id)] == [5]
    assert [c.tree_size for c in storage.checkpoints(b.id)] == [3]
    assert same_checkpoint(storage.latest_checkpoint(a.id), cpa)
    assert same_checkpoint(storage.latest_checkpoint(b.id), cpb)
    assert storage.checkpoint_at(b.id, 5) is None
    found_b = storage.find_entry(b.id, "slack", "same-1")
    assert found_b is not None
    assert found_b.data == eb[1].data
    assert storage.find_entry(b.id, "slack", "same-4") is None

    with storage.write(a.id) as tx:
        assert tx.tree_size() == 5
        assert tx.find_entries([("slack", "same-4")])[("slack", "same-4")].data == ea[4].data
    with storage.write(b.id) as tx:
        assert tx.tree_size() == 3
        assert tx.find_entries([("slack", "same-4")]) == {}
        assert tx.read_tiles([(0, 0)])[(0, 0)] == b"".join(leaf_hash(e.data) for e in eb)

    # A failed write on one log leaves the other alone.
    before_a, before_b = snapshot(storage, a), snapshot(storage, b)
    with pytest.raises(Boom):
        append_then_raise(storage, b, make_entries(2, "x"), signer)
    assert snapshot(storage, a) == before_a
    assert snapshot(storage, b) == before_b


def test_many_logs_in_one_store(storage: Storage, signer: NoteSigner) -> None:
    logs = [storage.create_log(f"log{i}", f"test.example/log{i}", CREATED) for i in range(40)]
    # Interleave the writes so that no log's rows are contiguous in the store.
    for round_ in range(3):
        for i, lg in enumerate(logs):
            n = (i + round_) % 4 + 1
            append(storage, lg, make_entries(n, lg.name, start=storage.entry_count(lg.id)), signer)

    assert storage.list_logs() == logs
    for i, lg in enumerate(logs):
        assert storage.get_log(lg.name) == lg
        expected_n = sum((i + r) % 4 + 1 for r in range(3))
        entries = all_entries(storage, lg)
        assert [e.index for e in entries] == list(range(expected_n))
        assert all(e.event_id is not None and e.event_id.startswith(f"{lg.name}-") for e in entries)
        assert storage.entry_count(lg.id) == expected_n
        leaves = [leaf_hash(e.data) for e in entries]
        latest = storage.latest_checkpoint(lg.id)
        assert latest is not None
        assert (latest.tree_size, latest.root_hash) == (expected_n, root_from_leaf_hashes(leaves))
        assert len(list(storage.checkpoints(lg.id))) == 3
        assert storage.read_tiles(lg.id, [(0, 0)]) == {(0, 0): b"".join(leaves)}
        verify_checkpoint(latest.note, [signer.verifier], lg.origin)
