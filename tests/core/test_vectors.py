"""Known-answer vectors from transparency-dev/merkle (inclusion and consistency proofs).

Each JSON file says whether a correct verifier must reject it (``wantErr``). The vectors
live in the shared checkout beside the repository (``../shared/vectors``), not in it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trailseal.core.merkle import verify_consistency, verify_inclusion
from trailseal.errors import ProofError

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "transparency-dev-merkle"
FILES = sorted(VECTORS.rglob("*.json")) if VECTORS.is_dir() else []

# The one case where trailseal deliberately differs from the vectors (see
# shared/vectors/README.md): both sizes are 1 and both "roots" are the same 12 bytes
# ("don't care 2"). The upstream verifier short-circuits equal sizes by comparing the
# roots and never looks at their length; trailseal checks that every hash is exactly 32
# bytes before anything else, so a 12-byte root is rejected. Accepting it would let a
# checkpoint with a malformed root pass a consistency check against itself.
KNOWN_DIFFERENCE = "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"

# 196 files at the time of writing (98 inclusion, 98 consistency). The floor makes a
# broken path or a half-copied directory fail loudly instead of passing on no vectors.
MIN_VECTOR_FILES = 190

pytestmark = pytest.mark.skipif(
    not VECTORS.is_dir(),
    reason=f"transparency-dev-merkle vectors not found at {VECTORS} "
    "(the shared/ checkout must sit beside the repository)",
)


def _b64(text: str | None) -> bytes:
    """Strict base64; a vector field that is missing or null is the empty hash."""
    return base64.b64decode(text or "", validate=True)


def _prepare(vector: dict[str, Any]) -> Callable[[], None]:
    """Decode a vector into a call of the matching verifier (raises binascii.Error)."""
    proof = [_b64(h) for h in vector["proof"] or []]
    if "leafIdx" in vector:
        leaf, root = _b64(vector["leafHash"]), _b64(vector["root"])
        index, size = vector["leafIdx"], vector["treeSize"]
        return lambda: verify_inclusion(leaf, index, size, proof, root)
    root1, root2 = _b64(vector["root1"]), _b64(vector["root2"])
    size1, size2 = vector["size1"], vector["size2"]
    return lambda: verify_consistency(size1, size2, proof, root1, root2)


def _rel(path: Path) -> str:
    return path.relative_to(VECTORS).as_posix()


def test_vector_directory_is_complete() -> None:
    assert len(FILES) >= MIN_VECTOR_FILES, f"only {len(FILES)} vector files under {VECTORS}"
    kinds = {_rel(p).split("/")[0] for p in FILES}
    assert kinds == {"inclusion", "consistency"}
    happy = [p for p in FILES if not json.loads(p.read_text())["wantErr"]]
    assert len(happy) >= 10  # every size directory has a happy path
    assert KNOWN_DIFFERENCE in {_rel(p) for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[_rel(p) for p in FILES])
def test_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    assert isinstance(vector["wantErr"], bool)
    try:
        call = _prepare(vector)
    except binascii.Error:
        # The test's own decoding failed: the case counts as rejected.
        assert vector["wantErr"], f"{_rel(path)} should verify but is not valid base64"
        return

    if _rel(path) == KNOWN_DIFFERENCE:
        assert vector["wantErr"] is False  # upstream still expects acceptance
        with pytest.raises(ProofError, match="first root is 12 bytes, not 32"):
            call()
        return

    if vector["wantErr"]:
        # Only ProofError counts: any other exception escapes and fails the test.
        with pytest.raises(ProofError):
            call()
    else:
        call()
