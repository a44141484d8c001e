"""RFC 9162 Merkle tree hashing, proofs and their verification.

Pure functions only. Proof *generation* is expressed over perfect subtrees ("nodes"):
the functions here say which nodes a proof needs (:func:`inclusion_ranges`,
:func:`consistency_ranges`) and how to fold them (:func:`range_hash`), and the caller
reads the node hashes from wherever it keeps them (tiles, memory).

A node is ``(level, index)``: the root of the perfect subtree over leaves
``[index << level, (index + 1) << level)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from trailseal.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]
"""``(level, index)`` of a perfect subtree."""

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)`` (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (RFC 9162 §2.1.1), iteratively."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # Keep a stack of perfect subtree roots (a compact range) and fold it at the end.
    stack: list[tuple[int, bytes]] = []
    for h in leaf_hashes:
        level, cur = 0, h
        while stack and stack[-1][0] == level:
            cur = node_hash(stack.pop()[1], cur)
            level += 1
        stack.append((level, cur))
    return fold_right([h for _, h in stack])


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Fold descending perfect subtree roots into the hash of their concatenated range."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """Decompose leaves ``[start, end)`` into perfect subtrees, left to right.

    For the ranges RFC 9162 proofs use, ``start`` is aligned to a power of two at least
    ``end - start``, so the subtrees come out in descending size and
    :func:`fold_right` of their hashes is the range's MTH.
    """
    nodes: list[Node] = []
    while start < end:
        size = start & -start if start else 1 << ((end - start).bit_length() - 1)
        while size > end - start:
            size >>= 1
        nodes.append((size.bit_length() - 1, start // size))
        start += size
    return nodes


def inclusion_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form ``PATH(index, D[tree_size])``, leaf first (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < tree_size:
        raise ProofError(f"index {index} is outside a tree of size {tree_size}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, tree_size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form ``PROOF(size1, D[size2])`` (RFC 9162 §2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, size2, size1, True
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def proof_nodes(ranges: Iterable[tuple[int, int]]) -> list[Node]:
    """Every perfect subtree needed to compute the MTH of each range."""
    seen: dict[Node, None] = {}
    for start, end in ranges:
        for node in range_nodes(start, end):
            seen[node] = None
    return list(seen)


def range_hash(start: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH of leaves ``[start, end)`` from the hashes of its perfect subtrees."""
    return fold_right([nodes[n] for n in range_nodes(start, end)])


def build_proof(
    ranges: Sequence[tuple[int, int]], read_nodes: Callable[[list[Node]], Mapping[Node, bytes]]
) -> list[bytes]:
    """Turn proof ranges into proof hashes, reading all needed nodes in one call."""
    nodes = read_nodes(proof_nodes(ranges))
    return [range_hash(s, e, nodes) for s, e in ranges]


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2)."""
    if index < 0 or tree_size < 0:
        raise ProofError("index and tree size must not be negative")
    if index >= tree_size:
        raise ProofError(f"index {index} is not below tree size {tree_size}")
    _check_hash("leaf hash", leaf)
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p)
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``leaf`` is at ``index`` in the tree with ``root``."""
    _check_hash("root hash", root)
    computed = root_from_inclusion_proof(leaf, index, tree_size, proof)
    if computed != root:
        raise ProofError(
            f"inclusion proof for index {index} in tree size {tree_size} leads to root "
            f"{computed.hex()}, expected {root.hex()}"
        )


def verify_consistency(  # noqa: PLR0912 (RFC 9162 §2.1.4.2, step by step)
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise :class:`ProofError` unless tree ``size2`` extends tree ``size1`` (RFC 9162 §2.1.4.2).

    Stricter than the RFC in two documented ways: a consistency proof from size 0 is
    rejected (it proves nothing), and every hash must be 32 bytes even when the sizes
    are equal.
    """
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p)
    if size1 <= 0:
        raise ProofError("a consistency proof from size 0 proves nothing and is rejected")
    if size2 < size1:
        raise ProofError(f"second size {size2} is smaller than first size {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal, so the proof must be empty")
        if root1 != root2:
            raise ProofError(f"sizes are equal ({size1}) but roots differ")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than expected")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than expected")
    if fr != root1:
        raise ProofError(
            f"consistency proof leads to first root {fr.hex()}, expected {root1.hex()}"
        )
    if sr != root2:
        raise ProofError(
            f"consistency proof leads to second root {sr.hex()}, expected {root2.hex()}"
        )
