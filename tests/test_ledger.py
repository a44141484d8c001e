"""The ledger on every storage backend: appending, idempotency, checkpoints, proofs,
receipts, key rotation, group commit and its failure modes; then SQLite-only cases
(two processes on one file, a tampered edge tile)."""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import leaf_hash, root_from_leaf_hashes, verify_consistency
from trailseal.core.note import NoteSigner
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.core.tiles import TileChunk, TileKey
from trailseal.errors import (
    EntryError,
    NotFoundError,
    OverloadedError,
    ProofError,
    SignatureError,
    StorageError,
    TamperError,
)
from trailseal.ledger import Clock, Ledger
from trailseal.storage import (
    KeyEvent,
    LogInfo,
    NewEntry,
    SqliteStorage,
    Storage,
    StoredCheckpoint,
    StoredEntry,
    WriteTransaction,
)

if TYPE_CHECKING:
    from conftest import LogChecker

CREATED = "2025-01-01T00:00:00.000000Z"
ORIGIN = "test.example/main"
WAIT = 30.0  # seconds; only ever reached if a test is broken


@pytest.fixture
def log(storage: Storage) -> LogInfo:
    return storage.create_log("main", ORIGIN, CREATED)


@pytest.fixture
def ledger(storage: Storage, log: LogInfo, signer: NoteSigner, clock: Clock) -> Ledger:
    return Ledger(storage, log, [signer], clock=clock)


def checkpoint_sizes(ledger: Ledger) -> list[int]:
    return [c.tree_size for c in ledger.storage.checkpoints(ledger.log.id)]


def nothing_written(ledger: Ledger) -> bool:
    return (
        ledger.storage.entry_count(ledger.log.id) == 0
        and ledger.storage.latest_checkpoint(ledger.log.id) is None
        and list(ledger.storage.tile_chunks(ledger.log.id)) == []
    )


# -- controlling the write path from tests -------------------------------------------------


class _FailingTx:
    """A write transaction whose ``append`` writes, then fails (a failure mid-batch)."""

    def __init__(self, tx: WriteTransaction) -> None:
        self._tx = tx

    def tree_size(self) -> int:
        return self._tx.tree_size()

    def read_tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return self._tx.read_tiles(keys)

    def find_entries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StoredEntry]:
        return self._tx.find_entries(keys)

    def append(
        self,
        first_index: int,
        entries: Sequence[NewEntry],
        chunks: Sequence[TileChunk],
        checkpoint: StoredCheckpoint,
    ) -> None:
        self._tx.append(first_index, entries, chunks, checkpoint)
        raise StorageError("injected failure after writing the batch")


class WriteGate:
    """Wraps ``storage.write``: the first transaction waits until :meth:`open` is called,
    so that other callers pile up in the ledger's queue; transactions numbered in
    ``fail`` (0-based) fail inside ``append``."""

    def __init__(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch, fail: frozenset[int] = frozenset()
    ) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self.transactions = 0
        real = storage.write

        @contextmanager
        def write(log_id: int) -> Iterator[WriteTransaction]:
            n = self.transactions  # only the ledger's leader writes: no race here
            self.transactions += 1
            if n == 0:
                self.entered.set()
                assert self._open.wait(WAIT), "the gate was never opened"
            with real(log_id) as tx:
                yield _FailingTx(tx) if n in fail else tx

        monkeypatch.setattr(storage, "write", write)

    def open(self) -> None:
        self._open.set()


def spawn(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn`` in a daemon thread. Unlike a thread pool, whose threads are joined at
    exit, a caller stuck forever by a ledger bug fails the test (``result(timeout)``)
    instead of hanging the run."""
    fut: Future[Any] = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # handed to the test through the future
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def wait_queued(ledger: Ledger, requests: int) -> None:
    """Block until ``requests`` append calls wait in the ledger's queue."""
    with ledger._cond:
        assert ledger._cond.wait_for(lambda: len(ledger._queue) == requests, timeout=WAIT)


# -- appending ----------------------------------------------------------------------------


def test_append_returns_indexes_in_order(ledger: Ledger) -> None:
    first = [{"n": i, "text": f"message {i}"} for i in range(5)]
    res = ledger.append(first)
    assert [r.index for r in res] == [0, 1, 2, 3, 4]
    assert {r.status for r in res} == {"appended"}
    assert {r.tree_size for r in res} == {5}
    assert [r.leaf_hash for r in res] == [leaf_hash(canonicalize(x)) for x in first]

    res = ledger.append([{"n": 5}, {"n": 6}, {"n": 7}])
    assert [(r.index, r.tree_size) for r in res] == [(5, 8), (6, 8), (7, 8)]
    assert ledger.tree_size() == 8
    for i, rec in enumerate(first):
        assert ledger.entry(i).data == canonicalize(rec)
    assert ledger.append([]) == []
    assert checkpoint_sizes(ledger) == [5, 8]
    with pytest.raises(NotFoundError):
        ledger.entry(8)
    with pytest.raises(NotFoundError):
        ledger.entry(-1)


def test_same_key_same_bytes_is_a_duplicate(ledger: Ledger) -> None:
    rec = {"source": "slack", "id": "evt-1", "text": "hello", "n": 1}
    (orig,) = ledger.append([rec])
    ledger.append([{"other": True}])
    # Same canonical bytes, even with the keys in another order.
    (dup,) = ledger.append([{"n": 1, "text": "hello", "id": "evt-1", "source": "slack"}])
    assert dup.status == "duplicate"
    assert (dup.index, dup.leaf_hash) == (0, orig.leaf_hash)
    assert ledger.storage.entry_count(ledger.log.id) == 2
    assert checkpoint_sizes(ledger) == [1, 2]  # a batch of duplicates signs nothing
    assert ledger.find("evt-1", "slack").data == canonicalize(rec)


def test_same_key_other_bytes_is_a_conflict(ledger: Ledger) -> None:
    rec = {"source": "slack", "id": "evt-1", "text": "hello"}
    (orig,) = ledger.append([rec])
    res = ledger.append([{"source": "slack", "id": "evt-1", "text": "HELLO"}, {"fresh": 1}])
    assert [(r.index, r.status) for r in res] == [(0, "conflict"), (1, "appended")]
    assert res[0].leaf_hash == orig.leaf_hash  # the original's, not the rejected record's
    assert ledger.entry(0).data == canonicalize(rec)  # the original is kept
    assert ledger.storage.entry_count(ledger.log.id) == 2


def test_duplicates_and_conflicts_within_one_batch(ledger: Ledger) -> None:
    res = ledger.append(
        [
            {"id": "a", "v": 1},
            {"id": "a", "v": 1},
            {"id": "a", "v": 2},
            {"id": "a", "v": 1, "source": "github"},  # another source: another key
            {"id": "b"},
            {"id": "b"},
        ]
    )
    assert [(r.index, r.status) for r in res] == [
        (0, "appended"),
        (0, "duplicate"),
        (0, "conflict"),
        (1, "appended"),
        (2, "appended"),
        (2, "duplicate"),
    ]
    assert {r.tree_size for r in res} == {3}
    assert res[2].leaf_hash == res[0].leaf_hash
    assert ledger.storage.entry_count(ledger.log.id) == 3
    assert ledger.find("a").index == 0
    assert ledger.find("a", "github").index == 1


def test_records_without_id_are_never_deduplicated(ledger: Ledger) -> None:
    res = ledger.append([{"a": 1}, {"a": 1}]) + ledger.append([{"a": 1}])
    assert [(r.index, r.status) for r in res] == [(0, "appended"), (1, "appended"), (2, "appended")]
    assert ledger.storage.entry_count(ledger.log.id) == 3


def test_integer_ids(ledger: Ledger) -> None:
    res = ledger.append([{"id": 42, "source": "jira"}, {"id": 0}, {"id": -7}])
    assert [r.status for r in res] == ["appended"] * 3
    again = ledger.append([{"id": 42, "source": "jira"}, {"id": 0, "x": 1}])
    assert [(r.index, r.status) for r in again] == [(0, "duplicate"), (1, "conflict")]
    assert ledger.find("42", "jira").data == canonicalize({"id": 42, "source": "jira"})
    assert ledger.find("0").index == 1
    assert ledger.find("-7").index == 2
    with pytest.raises(NotFoundError):
        ledger.find("42")  # source "" is another key


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"id": True}, id="bool-id"),
        pytest.param({"id": False}, id="false-id"),
        pytest.param({"id": 1.5}, id="float-id"),
        pytest.param({"id": ["x"]}, id="list-id"),
        pytest.param({"id": "x", "source": 5}, id="int-source"),
        pytest.param({"id": "x", "source": None}, id="null-source"),
        pytest.param(["not", "an", "object"], id="list-record"),
        pytest.param("text", id="str-record"),
        pytest.param(None, id="null-record"),
        pytest.param({"x": float("nan")}, id="nan"),
        pytest.param({"p": "x" * (0xFFFF - 7)}, id="65536-bytes"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(ledger: Ledger, bad: Any) -> None:
    with pytest.raises(EntryError):
        ledger.append([{"fine": 1}, bad, {"fine": 2}])
    assert nothing_written(ledger)
    assert ledger.append([{"fine": 1}])[0].index == 0


def test_largest_entry_fits(ledger: Ledger) -> None:
    rec = {"p": "x" * (0xFFFF - 8)}
    assert len(canonicalize(rec)) == 0xFFFF
    (res,) = ledger.append([rec])
    assert ledger.entry(res.index).data == canonicalize(rec)


def test_no_signers_refuses_to_append(storage: Storage, log: LogInfo, clock: Clock) -> None:
    ledger = Ledger(storage, log, [], clock=clock)
    with pytest.raises(StorageError, match="no signing key"):
        ledger.append([{"a": 1}])
    assert nothing_written(ledger)
    assert ledger.tree_size() == 0
    assert ledger.checkpoint() is None


# -- checkpoints, receipts, proofs --------------------------------------------------------

BATCHES = (1, 1, 3, 10, 241, 1, 255, 300)  # sizes 1 2 5 15 256 257 512 812: tile edges


@pytest.fixture
def grown(ledger: Ledger) -> Ledger:
    n = 0
    for size in BATCHES:
        ledger.append([{"n": n + i, "source": "s", "id": f"e{n + i}"} for i in range(size)])
        n += size
    return ledger


def test_one_signed_checkpoint_per_batch(grown: Ledger, signer: NoteSigner) -> None:
    sizes = list(itertools.accumulate(BATCHES))
    stored = list(grown.storage.checkpoints(grown.log.id))
    assert [c.tree_size for c in stored] == sizes
    assert all(a < b for a, b in itertools.pairwise(sizes))
    for n, c in enumerate(stored):
        signed = verify_checkpoint(c.note, [signer.verifier], ORIGIN)
        assert (signed.tree_size, signed.root_hash) == (c.tree_size, c.root_hash)
        # The injected clock, one tick per signed batch.
        assert c.signed_at == f"2025-01-01T00:00:{n:02d}.000000Z"
    latest = grown.checkpoint()
    assert latest is not None
    assert latest.tree_size == sizes[-1]
    assert grown.checkpoint_at(257).tree_size == 257
    with pytest.raises(NotFoundError):
        grown.checkpoint_at(258)


def test_receipts_verify_for_every_index_at_every_size(grown: Ledger, signer: NoteSigner) -> None:
    entries = list(grown.storage.read_entries(grown.log.id, 0, 10_000))
    leaves = [leaf_hash(e.data) for e in entries]
    for size in itertools.accumulate(BATCHES):
        root = root_from_leaf_hashes(leaves[:size])
        for i in range(size):
            receipt = grown.receipt(i, size)
            signed = verify_receipt(
                receipt, [signer.verifier], origin=ORIGIN, entry=entries[i].data
            )
            assert (signed.tree_size, signed.root_hash) == (size, root)
        # Spot checks: text round trip, leaf-hash form, and a wrong entry.
        receipt = grown.receipt(size - 1, size)
        parsed = Receipt.from_text(receipt.to_text())
        verify_receipt(parsed, [signer.verifier], origin=ORIGIN, entry_leaf_hash=leaves[size - 1])
        with pytest.raises(ProofError):
            verify_receipt(receipt, [signer.verifier], origin=ORIGIN, entry=b"{}")
    latest = grown.receipt(811)
    verify_receipt(latest, [signer.verifier], origin=ORIGIN, entry=entries[811].data)
    with pytest.raises(NotFoundError):
        grown.receipt(812)
    with pytest.raises(NotFoundError):
        grown.receipt(0, 3)  # no checkpoint at size 3


def test_a_batchs_receipts_come_from_what_it_just_committed(
    ledger: Ledger, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.append([{"n": i, "source": "s", "id": f"a{i}"} for i in range(300)])
    results = ledger.append([{"n": i, "source": "s", "id": f"b{i}"} for i in range(40)])
    size = results[0].tree_size
    reads: list[str] = []
    for name in ("read_tiles", "checkpoint_at"):
        real = getattr(ledger.storage, name)
        monkeypatch.setattr(
            ledger.storage, name, lambda *a, _n=name, _r=real: (reads.append(_n), _r(*a))[1]
        )
    receipts = ledger.receipts([r.index for r in results], size)
    assert reads == []  # the new checkpoint and the edge tiles were in memory
    for r, receipt in zip(results, receipts, strict=True):
        signed = verify_receipt(
            receipt, [signer.verifier], origin=ORIGIN, entry=ledger.entry(r.index).data
        )
        assert signed.tree_size == size


def test_receipts_are_right_when_another_writer_grew_the_tree(
    storage: Storage, log: LogInfo, signer: NoteSigner, clock: Clock
) -> None:
    # Two writers on one store (two processes, or two nodes): A's memory of the edge is
    # older than the tree B signed; A's receipts into B's tree must read the store.
    a = Ledger(storage, log, [signer], clock=clock)
    b = Ledger(storage, log, [signer], clock=clock)
    a.append([{"n": i, "source": "s", "id": f"a{i}"} for i in range(200)])
    grown = b.append([{"n": i, "source": "s", "id": f"b{i}"} for i in range(150)])
    size = grown[0].tree_size
    indexes = [0, 199, 200, 255, 256, 349]
    for index, receipt in zip(indexes, a.receipts(indexes, size), strict=True):
        signed = verify_receipt(
            receipt, [signer.verifier], origin=ORIGIN, entry=a.entry(index).data
        )
        assert signed.tree_size == size == 350


def test_consistency_between_every_pair_of_checkpoints(grown: Ledger) -> None:
    stored = list(grown.storage.checkpoints(grown.log.id))
    for old, new in itertools.combinations_with_replacement(stored, 2):
        proof = grown.consistency_proof(old.tree_size, new.tree_size)
        verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash)
        if old.tree_size < new.tree_size:
            with pytest.raises(ProofError):
                verify_consistency(
                    old.tree_size, new.tree_size, proof, new.root_hash, new.root_hash
                )
    # To the latest by default, and the sizes that are not allowed.
    verify_consistency(
        5, 812, grown.consistency_proof(5), stored[2].root_hash, stored[-1].root_hash
    )
    with pytest.raises(ProofError):
        grown.consistency_proof(0, 5)
    with pytest.raises(ProofError):
        grown.consistency_proof(6, 5)
    with pytest.raises(NotFoundError):
        grown.consistency_proof(5, 813)


def test_consistency_proof_to_a_checkpoint_the_ledger_returned(grown: Ledger) -> None:
    latest = grown.checkpoint()
    assert latest is not None
    older = grown.checkpoint_at(list(grown.storage.checkpoints(grown.log.id))[2].tree_size)
    for target in (latest, older):
        for size1 in (1, 5, older.tree_size):
            proof = grown.consistency_proof_to(size1, target)
            assert proof == grown.consistency_proof(size1, target.tree_size)
            old_root = root_from_leaf_hashes([grown.leaf_hash(i) for i in range(size1)])
            verify_consistency(size1, target.tree_size, proof, old_root, target.root_hash)
    with pytest.raises(ProofError):
        grown.consistency_proof_to(older.tree_size + 1, older)
    with pytest.raises(ProofError):
        grown.consistency_proof_to(0, latest)


def test_key_rotation_checkpoints_verify_with_either_key(
    storage: Storage,
    log: LogInfo,
    signer: NoteSigner,
    signer2: NoteSigner,
    clock: Clock,
    check_log: LogChecker,
) -> None:
    old, new = signer, signer2
    stranger = NoteSigner.generate("test.example/stranger")
    for s in (old, new):
        storage.add_key_event(log.id, KeyEvent(s.verifier.to_string(), "added", CREATED))
    both = Ledger(storage, log, [old, new], clock=clock)
    for n in (3, 4, 300):
        both.append([{"n": i} for i in range(n)])
    for c in storage.checkpoints(log.id):
        for key in (old, new):
            assert verify_checkpoint(c.note, [key.verifier], ORIGIN).tree_size == c.tree_size
        with pytest.raises(SignatureError):
            verify_checkpoint(c.note, [stranger.verifier], ORIGIN)
    (res,) = both.append([{"last": "co-signed"}])
    verify_receipt(
        both.receipt(res.index), [old.verifier], origin=ORIGIN, entry_leaf_hash=res.leaf_hash
    )
    verify_receipt(
        both.receipt(res.index), [new.verifier], origin=ORIGIN, entry_leaf_hash=res.leaf_hash
    )

    # The old key retires: a ledger holding only the new key carries the same log on.
    storage.add_key_event(log.id, KeyEvent(old.verifier.to_string(), "retired", CREATED))
    rotated = Ledger(storage, log, [new], clock=clock)
    rotated.append([{"after": "rotation"}])
    latest = storage.latest_checkpoint(log.id)
    assert latest is not None
    assert latest.tree_size == 309
    verify_checkpoint(latest.note, [new.verifier], ORIGIN)
    with pytest.raises(SignatureError):
        verify_checkpoint(latest.note, [old.verifier], ORIGIN)
    assert {v.to_string() for v in rotated.verifiers()} == {
        old.verifier.to_string(),
        new.verifier.to_string(),
    }
    check_log(rotated, rotated.verifiers())  # consistent across the rotation


# -- group commit --------------------------------------------------------------------------


def test_group_commit_under_concurrency(
    ledger: Ledger, signer: NoteSigner, check_log: LogChecker
) -> None:
    threads, calls = 16, 500
    start = threading.Barrier(threads)

    def worker(t: int) -> list[tuple[list[dict[str, Any]], list[Any]]]:
        rng = random.Random(t)
        out = []
        start.wait(WAIT)
        for c in range(calls):
            recs = [
                {"source": "load", "id": f"{t}-{c}-{j}", "t": t, "c": c}
                for j in range(rng.randint(1, 5))
            ]
            out.append((recs, ledger.append(recs)))
        return out

    workers = [spawn(worker, t) for t in range(threads)]
    per_thread = [w.result(4 * WAIT) for w in workers]

    calls_made = [call for thread in per_thread for call in thread]
    total = sum(len(recs) for recs, _ in calls_made)
    indexes = []
    for thread in per_thread:
        last = -1
        for recs, res in thread:
            idx = [r.index for r in res]
            assert idx == list(range(idx[0], idx[0] + len(recs)))  # one call: contiguous
            assert idx[0] > last  # a thread's calls: in order
            last = idx[-1]
            assert all(r.status == "appended" and r.tree_size > idx[-1] for r in res)
            indexes += idx
    assert sorted(indexes) == list(range(total))

    storage, log_id = ledger.storage, ledger.log.id
    assert ledger.tree_size() == storage.entry_count(log_id) == total
    for recs, res in calls_made:
        for rec, r in zip(recs, res, strict=True):
            found = storage.find_entry(log_id, "load", rec["id"])
            assert found is not None
            assert (found.index, found.data) == (r.index, canonicalize(rec))
    entries = list(storage.read_entries(log_id, 0, total))
    assert len({e.event_id for e in entries}) == total  # each record exactly once

    n_checkpoints = len(checkpoint_sizes(ledger))
    assert n_checkpoints < len(calls_made), "no batching happened"
    latest = storage.latest_checkpoint(log_id)
    assert latest is not None
    assert latest.root_hash == root_from_leaf_hashes([leaf_hash(e.data) for e in entries])
    check_log(ledger, [signer.verifier])


def test_failure_mid_batch_fails_every_caller_and_stores_nothing(
    storage: Storage,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    signer: NoteSigner,
    check_log: LogChecker,
) -> None:
    gate = WriteGate(storage, monkeypatch, fail=frozenset({1}))
    waiting = 6
    first = spawn(ledger.append, [{"id": "first"}])
    assert gate.entered.wait(WAIT)
    batch = [
        spawn(ledger.append, [{"id": f"b{i}-{j}"} for j in range(i % 3 + 1)])
        for i in range(waiting)
    ]
    wait_queued(ledger, waiting)
    gate.open()
    assert first.result(WAIT)[0].index == 0
    errors = [f.exception(WAIT) for f in batch]
    assert gate.transactions == 2  # the six callers were one batch, one transaction
    for e in errors:
        assert isinstance(e, StorageError)
        assert "injected failure" in str(e)

    log_id = ledger.log.id
    assert storage.entry_count(log_id) == 1
    assert checkpoint_sizes(ledger) == [1]
    assert [c.index for c in storage.tile_chunks(log_id)] == [0]
    assert storage.read_tiles(log_id, [(0, 0)])[(0, 0)] == ledger.leaf_hash(0)
    assert all(storage.find_entry(log_id, "", f"b{i}-0") is None for i in range(waiting))

    (res,) = ledger.append([{"id": "after"}])
    assert (res.index, res.tree_size, res.status) == (1, 2, "appended")
    retried = ledger.append([{"id": "b0-0"}])  # the failed records can simply be retried
    assert (retried[0].index, retried[0].status) == (2, "appended")
    check_log(ledger, [signer.verifier])


def test_batches_respect_max_batch_entries(
    storage: Storage,
    log: LogInfo,
    signer: NoteSigner,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger(storage, log, [signer], clock=clock, max_batch_entries=6)
    gate = WriteGate(storage, monkeypatch)
    first = spawn(ledger.append, [{"first": 1}])
    assert gate.entered.wait(WAIT)
    queued = []
    for i in range(5):  # queued one at a time, so their order is known
        queued.append(spawn(ledger.append, [{"r": i, "k": k} for k in range(3)]))
        wait_queued(ledger, i + 1)
    gate.open()
    first.result(WAIT)
    results = [f.result(WAIT) for f in queued]
    assert [[r.index for r in res] for res in results] == [
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
        [10, 11, 12],
        [13, 14, 15],
    ]
    # Two 3-entry requests per batch at most: sizes 1, then 7, 13, 16.
    assert checkpoint_sizes(ledger) == [1, 7, 13, 16]
    assert [res[0].tree_size for res in results] == [7, 7, 13, 13, 16]


def test_overloaded_when_the_queue_is_full(
    storage: Storage,
    log: LogInfo,
    signer: NoteSigner,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger(storage, log, [signer], clock=clock, max_queue_entries=10)
    with pytest.raises(OverloadedError) as info:
        ledger.append([{"n": i} for i in range(11)])  # can never fit
    assert info.value.retry_after_s > 0
    assert nothing_written(ledger)

    gate = WriteGate(storage, monkeypatch)
    first = spawn(ledger.append, [{"first": 1}])  # taken by the leader, not queued
    assert gate.entered.wait(WAIT)
    queued = [spawn(ledger.append, [{"q": i, "k": k} for k in range(3)]) for i in range(3)]
    wait_queued(ledger, 3)  # 9 entries wait
    try:
        with pytest.raises(OverloadedError):
            ledger.append([{"over": 1}, {"over": 2}])  # 9 + 2 > 10
    finally:
        gate.open()
    first.result(WAIT)
    for f in queued:
        f.result(WAIT)
    assert ledger.tree_size() == storage.entry_count(log.id) == 10
    assert ledger.append([{"over": 1}, {"over": 2}])[0].index == 10  # room again


def test_two_ledgers_on_one_storage(
    storage: Storage, log: LogInfo, signer: NoteSigner, clock: Clock, check_log: LogChecker
) -> None:
    a = Ledger(storage, log, [signer], clock=clock)
    b = Ledger(storage, log, [signer], clock=clock)
    expected = 0
    for i in range(12):
        res = (a if i % 3 else b).append([{"i": i, "j": j} for j in range(i + 1)])
        assert [r.index for r in res] == list(range(expected, expected + i + 1))
        expected += i + 1
    check_log(a, [signer.verifier])


def test_ledger_keeps_its_edge_and_rereads_it_only_when_the_tree_moved(
    storage: Storage,
    log: LogInfo,
    signer: NoteSigner,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    real = storage.write

    @contextmanager
    def counting(log_id: int) -> Iterator[WriteTransaction]:
        with real(log_id) as tx:
            real_read = tx.read_tiles

            def read_tiles(keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
                reads.append(tx.tree_size())
                return real_read(keys)

            monkeypatch.setattr(tx, "read_tiles", read_tiles)
            yield tx

    monkeypatch.setattr(storage, "write", counting)
    a = Ledger(storage, log, [signer], clock=clock)
    b = Ledger(storage, log, [signer], clock=clock)
    for n in (3, 300, 2):
        a.append([{"n": i} for i in range(n)])
    assert reads == [0]  # read once, then carried in memory
    b.append([{"b": 1}])
    assert reads == [0, 305]  # b had never seen the log
    a.append([{"a": 1}])
    assert reads == [0, 305, 306]  # a notices b moved the tree
    a.append([{"a": 2}])
    assert reads == [0, 305, 306]


# -- SQLite: two processes, tampering -----------------------------------------------------


def _two_sqlite_ledgers(
    path: Path, signer: NoteSigner, clock: Clock
) -> tuple[SqliteStorage, SqliteStorage, Ledger, Ledger]:
    s1 = SqliteStorage(path)
    s2 = SqliteStorage(path)
    log = s1.create_log("main", ORIGIN, CREATED)
    return (
        s1,
        s2,
        Ledger(s1, log, [signer], clock=clock),
        Ledger(s2, s2.get_log("main"), [signer], clock=clock),
    )


def test_two_processes_on_one_sqlite_file(
    tmp_path: Path, signer: NoteSigner, clock: Clock, check_log: LogChecker
) -> None:
    s1, s2, a, b = _two_sqlite_ledgers(tmp_path / "t.db", signer, clock)
    try:
        expected = 0
        for i in range(30):
            ledger = a if i % 3 else b  # uneven turns: sometimes one ledger twice in a row
            n = i % 4 + 1
            res = ledger.append([{"i": i, "j": j} for j in range(n)])
            assert [r.index for r in res] == list(range(expected, expected + n))
            assert res[0].tree_size == expected + n
            expected += n
            if i == 20:  # cross a tile boundary on the other process's edge
                (a if i % 2 else b).append([{"bulk": k} for k in range(300)])
                expected += 300
        # Idempotency holds across processes too.
        (orig,) = a.append([{"id": "x", "v": 1}])
        (dup,) = b.append([{"id": "x", "v": 1}])
        assert (dup.index, dup.status) == (orig.index, "duplicate")
        assert a.tree_size() == b.tree_size() == expected + 1
        check_log(a, [signer.verifier])
        check_log(b, [signer.verifier])
    finally:
        s1.close()
        s2.close()


def test_two_processes_appending_concurrently(
    tmp_path: Path, signer: NoteSigner, clock: Clock, check_log: LogChecker
) -> None:
    s1, s2, a, b = _two_sqlite_ledgers(tmp_path / "t.db", signer, clock)
    try:

        def worker(t: int) -> list[int]:
            ledger = a if t % 2 else b
            out = []
            for c in range(40):
                out += [
                    r.index
                    for r in ledger.append([{"t": t, "c": c, "k": k} for k in range(t % 3 + 1)])
                ]
            return out

        workers = [spawn(worker, t) for t in range(8)]
        indexes = [i for w in workers for i in w.result(4 * WAIT)]
        assert sorted(indexes) == list(range(len(indexes)))
        check_log(a, [signer.verifier])
    finally:
        s1.close()
        s2.close()


@pytest.mark.parametrize("how", ["hashes", "start"])
def test_tampered_edge_tile_refuses_to_sign(
    tmp_path: Path, signer: NoteSigner, clock: Clock, how: str
) -> None:
    path = tmp_path / "t.db"
    store = SqliteStorage(path)
    try:
        log = store.create_log("main", ORIGIN, CREATED)
        Ledger(store, log, [signer], clock=clock).append([{"n": i} for i in range(10)])
        Ledger(store, log, [signer], clock=clock).append([{"n": i} for i in range(10, 15)])

        def state() -> tuple[object, ...]:
            return (
                list(store.checkpoints(log.id)),
                list(store.read_entries(log.id, 0, 100)),
                len(list(store.tile_chunks(log.id))),
            )

        before = state()
        latest = store.latest_checkpoint(log.id)
        assert latest is not None

        # The edge tile 0/0 holds 15 hashes in two chunks, at 0 and at 10.
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("DROP TRIGGER tiles_no_update")
            where = " WHERE log_id = ? AND level = 0 AND idx = 0 AND start = 10"
            if how == "hashes":
                (hashes,) = conn.execute("SELECT hashes FROM tiles" + where, (log.id,)).fetchone()
                forged = bytes([hashes[0] ^ 1]) + hashes[1:]
                conn.execute("UPDATE tiles SET hashes = ?" + where, (forged, log.id))
            else:
                conn.execute("UPDATE tiles SET start = 11" + where, (log.id,))

        # A restarted process (a fresh ledger, even a fresh storage) must refuse to sign.
        for s in (store, SqliteStorage(path)):
            try:
                fresh = Ledger(s, s.get_log("main"), [signer], clock=clock)
                with pytest.raises(TamperError) as info:
                    fresh.append([{"n": 15}])
                if how == "hashes":
                    assert info.value.expected == latest.root_hash
                    assert info.value.found not in (None, latest.root_hash)
            finally:
                if s is not store:
                    s.close()
        assert state() == before
    finally:
        store.close()
