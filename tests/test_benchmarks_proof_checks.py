"""The proof benchmark's client-side checks (``benchmarks/http_proofs.py``) refuse wrong
answers, so a run that measures wrong answers aborts instead of reporting their speed.

The answers are built here as the HTTP routes build them, from a real ledger, then
altered one way at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from trailseal.core.note import NoteSigner, b64encode
from trailseal.errors import Error
from trailseal.ledger import Ledger
from trailseal.storage import KeyEvent, SqliteStorage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import http_proofs  # noqa: E402  (a script beside its helpers, not a package)

FILLED = 600  # two full tiles and a partial one
ORIGIN = "bench.example/proof-checks"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, http_proofs.Filled]:
    storage = SqliteStorage(tmp_path_factory.mktemp("proofs") / "log.db")
    info = storage.create_log("bench", ORIGIN, "2026-01-01T00:00:00Z")
    signer = NoteSigner.generate(ORIGIN)
    storage.add_key_event(
        info.id, KeyEvent(signer.verifier.to_string(), "added", "2026-01-01T00:00:00Z")
    )
    ledger = Ledger(storage, info, [signer])
    for start in range(0, FILLED, 200):
        ledger.append([{"id": f"e{i}", "n": i} for i in range(start, start + 200)])
    leaves = [ledger.leaf_hash(i) for i in range(FILLED)]
    ledger.append([{"id": "access", "n": -1}])  # the access event a proof appends
    tree = http_proofs.KnownTree(leaves)
    return ledger, http_proofs.Filled(tree, [signer.verifier], ORIGIN, 1.0)


def inclusion(ledger: Ledger, index: int) -> dict[str, Any]:
    receipt = ledger.receipt(index)
    return {
        "index": index,
        "tree_size": ledger.tree_size(),
        "proof": [b64encode(h) for h in receipt.proof],
        "receipt": receipt.to_text(),
    }


def consistency(ledger: Ledger, first: int) -> dict[str, Any]:
    checkpoint = ledger.checkpoint()
    assert checkpoint is not None
    return {
        "first": first,
        "second": checkpoint.tree_size,
        "proof": [b64encode(h) for h in ledger.consistency_proof(first)],
        "checkpoint": checkpoint.to_bytes().decode(),
    }


def tile(ledger: Ledger, index: int) -> bytes:
    return ledger.storage.read_tiles(ledger.log.id, [(0, index)])[(0, index)][: 256 * 32]


def test_right_answers_pass(log: tuple[Ledger, http_proofs.Filled]) -> None:
    ledger, filled = log
    for index in (0, 255, 256, 599):
        http_proofs.check_answer("inclusion", filled, index, orjson.dumps(inclusion(ledger, index)))
    for first in (1, 2, 256, 300, 600):
        body = orjson.dumps(consistency(ledger, first))
        http_proofs.check_answer("consistency", filled, first, body)
    for index in (0, 1):
        http_proofs.check_answer("tile", filled, index, tile(ledger, index))


def flip(text: str) -> str:
    """A base64 hash with its first character changed."""
    return ("B" if text[0] == "A" else "A") + text[1:]


def inclusion_of_another_index(ledger: Ledger) -> bytes:
    return orjson.dumps(inclusion(ledger, 8))


def inclusion_with_a_flipped_hash(ledger: Ledger) -> bytes:
    doc = inclusion(ledger, 7)
    first, *rest = doc["proof"]
    receipt = doc["receipt"].replace(first, flip(first))
    return orjson.dumps({**doc, "proof": [flip(first), *rest], "receipt": receipt})


def consistency_from_another_size(ledger: Ledger) -> bytes:
    return orjson.dumps({**consistency(ledger, 299), "first": 300})


def consistency_with_a_flipped_hash(ledger: Ledger) -> bytes:
    doc = consistency(ledger, 300)
    first, *rest = doc["proof"]
    return orjson.dumps({**doc, "proof": [flip(first), *rest]})


def tile_with_a_flipped_byte(ledger: Ledger) -> bytes:
    data = tile(ledger, 1)
    return bytes([data[0] ^ 1]) + data[1:]


def another_tile(ledger: Ledger) -> bytes:
    return tile(ledger, 0)


WRONG: dict[str, tuple[str, int, Callable[[Ledger], bytes]]] = {
    "inclusion of another index": ("inclusion", 7, inclusion_of_another_index),
    "inclusion with a flipped proof hash": ("inclusion", 7, inclusion_with_a_flipped_hash),
    "consistency from another size": ("consistency", 300, consistency_from_another_size),
    "consistency with a flipped proof hash": ("consistency", 300, consistency_with_a_flipped_hash),
    "a tile with a flipped byte": ("tile", 1, tile_with_a_flipped_byte),
    "another tile": ("tile", 1, another_tile),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_answers_abort(log: tuple[Ledger, http_proofs.Filled], case: str) -> None:
    ledger, filled = log
    mode, param, answer = WRONG[case]
    with pytest.raises((Error, SystemExit)):
        http_proofs.check_answer(mode, filled, param, answer(ledger))


def test_a_checkpoint_signed_by_another_key_aborts(
    log: tuple[Ledger, http_proofs.Filled],
) -> None:
    ledger, filled = log
    stranger = http_proofs.Filled(filled.tree, [NoteSigner.generate(ORIGIN).verifier], ORIGIN, 1)
    body = orjson.dumps(consistency(ledger, 300))
    with pytest.raises(Error):
        http_proofs.check_answer("consistency", stranger, 300, body)
