"""Properties of the RFC 9162 tree, proofs and verifiers against a naive model.

The model below follows the recursive definitions of RFC 9162 §2.1 literally (MTH, PATH,
PROOF/SUBPROOF) with its own hashing, and includes a recursive reference verifier for
each proof type. The code under test uses the iterative algorithms of §2.1.3.2 and
§2.1.4.2, so agreement between the two is meaningful.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailseal.core.merkle import (
    EMPTY_ROOT,
    Node,
    build_proof,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    range_nodes,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from trailseal.errors import ProofError

# -- the naive model ----------------------------------------------------------------


def _leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Model:
    """A tree over concrete entries, with memoized MTH of any leaf range."""

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.leaves = [_leaf(e) for e in entries]
        self.size = len(self.leaves)
        self.mth = functools.cache(self._mth)

    def _mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[start]
        k = _split(n)
        return _node(self.mth(start, start + k), self.mth(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        return self.mth(0, self.size if size is None else size)

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]), leaf side first."""
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b)."""
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = _split(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]

    def read_nodes(self, nodes: list[Node]) -> Mapping[Node, bytes]:
        """What tiles would give: the hash of each perfect subtree, computed naively."""
        out = {}
        for level, index in nodes:
            start, end = index << level, (index + 1) << level
            assert end <= self.size, f"a proof asked for node {(level, index)} outside the tree"
            out[(level, index)] = self.mth(start, end)
        return out


def _path_len(m: int, n: int) -> int:
    """len(PATH(m, D[n]))."""
    if n == 1:
        return 0
    k = _split(n)
    return 1 + (_path_len(m, k) if m < k else _path_len(m - k, n - k))


def reference_inclusion_root(leaf: bytes, m: int, n: int, path: Sequence[bytes]) -> bytes | None:
    """The root a PATH implies, recursively; None when the path cannot have that shape."""
    if not 0 <= m < n or len(leaf) != 32 or any(len(p) != 32 for p in path):
        return None
    if n == 1:
        return None if path else leaf
    if not path:
        return None
    k = _split(n)
    *inner, sibling = path
    if m < k:
        sub = reference_inclusion_root(leaf, m, k, inner)
        return None if sub is None else _node(sub, sibling)
    sub = reference_inclusion_root(leaf, m - k, n - k, inner)
    return None if sub is None else _node(sibling, sub)


def reference_consistency_ok(
    m: int, n: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """Whether a consistency proof holds, by rebuilding both roots from SUBPROOF's shape.

    With trailseal's documented policy: size 0 is rejected and every hash is 32 bytes.
    """
    if len(root1) != 32 or len(root2) != 32 or any(len(p) != 32 for p in proof):
        return False
    if not 0 < m <= n:
        return False
    if m == n:
        return not proof and root1 == root2

    def sub(m: int, n: int, path: list[bytes], b: bool) -> tuple[bytes, bytes] | None:
        """(hash of the first m leaves, hash of all n leaves) of a subtree."""
        if m == n:
            if b:
                return None if path else (root1, root1)
            return (path[0], path[0]) if len(path) == 1 else None
        if not path:
            return None
        k = _split(n)
        *inner, last = path
        if m <= k:
            r = sub(m, k, inner, b)
            return None if r is None else (r[0], _node(r[1], last))
        r = sub(m - k, n - k, inner, False)
        return None if r is None else (_node(last, r[0]), _node(last, r[1]))

    got = sub(m, n, list(proof), True)
    return got is not None and got == (root1, root2)


def _inclusion_ok(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, root)
    except ProofError:
        return False
    return True


def _consistency_ok(m: int, n: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> bool:
    try:
        verify_consistency(m, n, proof, root1, root2)
    except ProofError:
        return False
    return True


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _inclusion_proof(model: Model, index: int) -> list[bytes]:
    return build_proof(inclusion_ranges(index, model.size), model.read_nodes)


def _consistency_proof(model: Model, m: int, n: int) -> list[bytes]:
    return build_proof(consistency_ranges(m, n), model.read_nodes)


# Draw the size first so that trees of every size up to 300 are common, not just tiny ones.
entries = st.integers(1, 300).flatmap(
    lambda n: st.lists(st.binary(max_size=6), min_size=n, max_size=n)
)
# Distinct entries: then no leaf hash repeats, so a proof cannot verify at another index.
distinct_entries = st.integers(1, 300).flatmap(
    lambda n: st.lists(st.binary(min_size=2, max_size=6), min_size=n, max_size=n, unique=True)
)

# -- hashing and roots --------------------------------------------------------------


def test_hashes_are_rfc9162() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert root_from_leaf_hashes([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    # RFC 6962 / transparency-dev known answer: the empty tree and the leaf hash of "".
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@settings(max_examples=150, deadline=None)
@given(entries)
def test_root_matches_naive_mth(data: list[bytes]) -> None:
    model = Model(data)
    assert [leaf_hash(e) for e in data] == model.leaves
    assert root_from_leaf_hashes(model.leaves) == model.root()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 24), st.integers(1, 1 << 12))
def test_range_nodes_are_aligned_perfect_subtrees_covering_the_range(start: int, n: int) -> None:
    pos = start
    for level, index in range_nodes(start, start + n):
        assert index << level == pos
        pos += 1 << level
    assert pos == start + n


# -- inclusion ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(entries)
def test_inclusion_proof_for_every_index_matches_path_and_verifies(data: list[bytes]) -> None:
    model = Model(data)
    n, root = model.size, model.root()
    for i in range(n):
        proof = _inclusion_proof(model, i)
        assert proof == model.path(i, 0, n)
        assert root_from_inclusion_proof(model.leaves[i], i, n, proof) == root
        verify_inclusion(model.leaves[i], i, n, proof, root)


@settings(max_examples=100, deadline=None)
@given(entries, st.data())
def test_inclusion_fails_when_any_single_bit_flips(data: list[bytes], draw: st.DataObject) -> None:
    model = Model(data)
    n, root = model.size, model.root()
    i = draw.draw(st.integers(0, n - 1), label="index")
    leaf = model.leaves[i]
    proof = _inclusion_proof(model, i)
    bit = st.integers(0, 255)
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = _flip(bad[j], draw.draw(bit, label=f"bit of proof[{j}]"))
        with pytest.raises(ProofError, match="leads to root"):
            verify_inclusion(leaf, i, n, bad, root)
    with pytest.raises(ProofError, match="leads to root"):
        verify_inclusion(leaf, i, n, proof, _flip(root, draw.draw(bit, label="bit of root")))
    with pytest.raises(ProofError, match="leads to root"):
        verify_inclusion(_flip(leaf, draw.draw(bit, label="bit of leaf")), i, n, proof, root)


def test_inclusion_fails_for_every_bit_flip_in_one_tree() -> None:
    model = Model([str(k).encode() for k in range(37)])
    n, root, i = model.size, model.root(), 13
    leaf, proof = model.leaves[i], _inclusion_proof(model, i)
    verify_inclusion(leaf, i, n, proof, root)
    for bit in range(256):
        assert not _inclusion_ok(_flip(leaf, bit), i, n, proof, root)
        assert not _inclusion_ok(leaf, i, n, proof, _flip(root, bit))
        for j in range(len(proof)):
            bad = list(proof)
            bad[j] = _flip(bad[j], bit)
            assert not _inclusion_ok(leaf, i, n, bad, root)


@settings(max_examples=100, deadline=None)
@given(distinct_entries, st.data())
def test_inclusion_fails_at_any_other_index(data: list[bytes], draw: st.DataObject) -> None:
    # With distinct leaves, a proof that verified at index j != i would give the tree two
    # different leaf hashes at j: a SHA-256 collision. So every other index must fail.
    model = Model(data)
    n, root = model.size, model.root()
    i = draw.draw(st.integers(0, n - 1), label="index")
    leaf, proof = model.leaves[i], _inclusion_proof(model, i)
    for j in [*range(n), n, n + 1, 2 * n + 7, -1]:
        if j == i:
            continue
        with pytest.raises(ProofError):
            verify_inclusion(leaf, j, n, proof, root)
        assert reference_inclusion_root(leaf, j, n, proof) != root


@settings(max_examples=100, deadline=None)
@given(entries, st.data())
def test_inclusion_with_another_size_agrees_with_reference(
    data: list[bytes], draw: st.DataObject
) -> None:
    # A proof can verify against a different claimed size when the path has the same
    # shape (inclusion proofs alone do not bind the size; the checkpoint does). So compare
    # with the recursive reference verifier, and insist on failure where the shape differs.
    model = Model(data)
    n, root = model.size, model.root()
    i = draw.draw(st.integers(0, n - 1), label="index")
    leaf, proof = model.leaves[i], _inclusion_proof(model, i)
    for size in [*range(max(i - 2, 0), min(2 * n + 3, n + 40)), 0, -1, 1 << 40]:
        if size == n:
            continue
        expected = reference_inclusion_root(leaf, i, size, proof) == root
        assert _inclusion_ok(leaf, i, size, proof, root) is expected, size
        if not 0 <= i < size or _path_len(i, size) != len(proof):
            assert not expected


def test_inclusion_proofs_do_not_bind_the_tree_size() -> None:
    # Documented, not a bug: PATH(0, D[3]) has the shape of PATH(0, D[4]) and folds to the
    # size-3 root either way; verify_checkpoint is what ties a root to its size.
    model = Model([b"a", b"b", b"c"])
    proof = _inclusion_proof(model, 0)
    verify_inclusion(model.leaves[0], 0, 4, proof, model.root())


@settings(max_examples=100, deadline=None)
@given(entries, st.data())
def test_inclusion_fails_for_truncated_extended_or_misshapen_proofs(
    data: list[bytes], draw: st.DataObject
) -> None:
    model = Model(data)
    n, root = model.size, model.root()
    i = draw.draw(st.integers(0, n - 1), label="index")
    leaf, proof = model.leaves[i], _inclusion_proof(model, i)
    extra = draw.draw(st.binary(min_size=32, max_size=32), label="extra hash")
    variants = [[*proof, extra], [extra, *proof], [*proof, root], [*proof, *proof]]
    if proof:
        variants += [proof[:-1], proof[1:], proof[:-1] + proof[:-1]]
    for bad in variants:
        if len(bad) == len(proof):
            continue
        with pytest.raises(ProofError, match=r"(shorter|longer) than the tree is deep"):
            verify_inclusion(leaf, i, n, bad, root)
    if proof:
        j = draw.draw(st.integers(0, len(proof) - 1), label="short hash")
        for cut in (proof[j][:31], proof[j] + b"\x00", b""):
            bad = [*proof[:j], cut, *proof[j + 1 :]]
            with pytest.raises(ProofError, match=f"proof hash {j} is {len(cut)} bytes, not 32"):
                verify_inclusion(leaf, i, n, bad, root)


def test_inclusion_rejects_bad_index_size_and_hash_lengths() -> None:
    model = Model([b"x", b"y", b"z"])
    leaf, proof, root = model.leaves[1], _inclusion_proof(model, 1), model.root()
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(leaf, 3, 3, proof, root)
    with pytest.raises(ProofError, match="must not be negative"):
        verify_inclusion(leaf, -1, 3, proof, root)
    with pytest.raises(ProofError, match="not below tree size 0"):
        verify_inclusion(leaf, 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="leaf hash is 31 bytes"):
        verify_inclusion(leaf[:31], 1, 3, proof, root)
    with pytest.raises(ProofError, match="root hash is 0 bytes"):
        verify_inclusion(leaf, 1, 3, proof, b"")
    with pytest.raises(ProofError, match="outside a tree of size 3"):
        inclusion_ranges(3, 3)
    with pytest.raises(ProofError, match="outside a tree of size 0"):
        inclusion_ranges(0, 0)


# -- consistency --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(entries)
def test_consistency_proof_for_every_older_size_matches_proof_and_verifies(
    data: list[bytes],
) -> None:
    model = Model(data)
    n = model.size
    for m in range(1, n + 1):
        proof = _consistency_proof(model, m, n)
        assert proof == model.subproof(m, 0, n, True)
        verify_consistency(m, n, proof, model.root(m), model.root(n))
        assert reference_consistency_ok(m, n, proof, model.root(m), model.root(n))


@settings(max_examples=150, deadline=None)
@given(entries, st.data())
def test_consistency_fails_when_any_single_bit_flips(
    data: list[bytes], draw: st.DataObject
) -> None:
    model = Model(data)
    n = model.size
    m = draw.draw(st.integers(1, n), label="size1")
    proof, root1, root2 = _consistency_proof(model, m, n), model.root(m), model.root(n)
    bit = st.integers(0, 255)
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = _flip(bad[j], draw.draw(bit, label=f"bit of proof[{j}]"))
        with pytest.raises(ProofError):
            verify_consistency(m, n, bad, root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(m, n, proof, _flip(root1, draw.draw(bit, label="bit of root1")), root2)
    with pytest.raises(ProofError):
        verify_consistency(m, n, proof, root1, _flip(root2, draw.draw(bit, label="bit of root2")))


def test_consistency_fails_for_every_bit_flip_in_one_tree() -> None:
    model = Model([str(k).encode() for k in range(37)])
    for m in (8, 13):  # a power of two (root1 is implied) and not
        proof, root1, root2 = _consistency_proof(model, m, 37), model.root(m), model.root(37)
        verify_consistency(m, 37, proof, root1, root2)
        for bit in range(256):
            assert not _consistency_ok(m, 37, proof, _flip(root1, bit), root2)
            assert not _consistency_ok(m, 37, proof, root1, _flip(root2, bit))
            for j in range(len(proof)):
                bad = list(proof)
                bad[j] = _flip(bad[j], bit)
                assert not _consistency_ok(m, 37, bad, root1, root2)


@settings(max_examples=150, deadline=None)
@given(entries, st.data())
def test_consistency_with_other_sizes_agrees_with_reference(
    data: list[bytes], draw: st.DataObject
) -> None:
    model = Model(data)
    n = model.size
    m = draw.draw(st.integers(1, n), label="size1")
    proof, root1, root2 = _consistency_proof(model, m, n), model.root(m), model.root(n)
    for m2, n2 in [
        (m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1), (m + 1, n + 1), (m - 1, n - 1),
        (2 * m, n), (m, 2 * n), (n, m), (0, n), (m, m), (n, n),
    ]:  # fmt: skip
        if (m2, n2) == (m, n):
            continue
        expected = reference_consistency_ok(m2, n2, proof, root1, root2)
        assert _consistency_ok(m2, n2, proof, root1, root2) is expected, (m2, n2)
    # Swapping the roots never verifies unless they are equal.
    assert _consistency_ok(m, n, proof, root2, root1) is (m == n)


@settings(max_examples=100, deadline=None)
@given(entries, st.data())
def test_consistency_fails_for_truncated_or_extended_proofs(
    data: list[bytes], draw: st.DataObject
) -> None:
    model = Model(data)
    n = model.size
    m = draw.draw(st.integers(1, n), label="size1")
    proof, root1, root2 = _consistency_proof(model, m, n), model.root(m), model.root(n)
    extra = draw.draw(st.binary(min_size=32, max_size=32), label="extra hash")
    variants = [[*proof, extra], [extra, *proof], [root1, *proof], [*proof, root2]]
    if proof:
        variants += [proof[:-1], proof[1:]]
    for bad in variants:
        assert not reference_consistency_ok(m, n, bad, root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(m, n, bad, root1, root2)
    if proof:
        j = draw.draw(st.integers(0, len(proof) - 1), label="short hash")
        bad = [*proof[:j], proof[j][:16], *proof[j + 1 :]]
        with pytest.raises(ProofError, match=f"proof hash {j} is 16 bytes, not 32"):
            verify_consistency(m, n, bad, root1, root2)


def test_consistency_from_size_zero_is_rejected() -> None:
    model = Model([b"a", b"b", b"c"])
    with pytest.raises(ProofError, match="from size 0 proves nothing"):
        verify_consistency(0, 3, [], EMPTY_ROOT, model.root())
    with pytest.raises(ProofError, match="from size 0 proves nothing"):
        verify_consistency(0, 3, [model.root()], EMPTY_ROOT, model.root())
    with pytest.raises(ProofError, match="from size 0 proves nothing"):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match="no consistency proof from size 0"):
        consistency_ranges(0, 3)


def test_consistency_rejects_bad_sizes_and_equal_size_cases() -> None:
    model = Model([b"a", b"b", b"c"])
    r2, r3 = model.root(2), model.root(3)
    with pytest.raises(ProofError, match="second size 2 is smaller than first size 3"):
        verify_consistency(3, 2, [], r3, r2)
    with pytest.raises(ProofError, match="no consistency proof from size 3 to size 2"):
        consistency_ranges(3, 2)
    verify_consistency(3, 3, [], r3, r3)
    assert consistency_ranges(3, 3) == []
    with pytest.raises(ProofError, match="proof must be empty"):
        verify_consistency(3, 3, [r3], r3, r3)
    with pytest.raises(ProofError, match="roots differ"):
        verify_consistency(3, 3, [], r2, r3)
    with pytest.raises(ProofError, match="consistency proof is empty"):
        verify_consistency(2, 3, [], r2, r3)
    with pytest.raises(ProofError, match="second root is 31 bytes"):
        verify_consistency(3, 3, [], r3, r3[:31])
