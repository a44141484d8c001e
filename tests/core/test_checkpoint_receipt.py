"""C2SP checkpoints (text, signing, key rotation) and tlog-proof@v1 receipts from a real log."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailseal.core.checkpoint import (
    Checkpoint,
    parse_signed_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from trailseal.core.merkle import leaf_hash, root_from_leaf_hashes
from trailseal.core.note import NoteSigner, NoteVerifier
from trailseal.core.receipt import RECEIPT_HEADER, Receipt, verify_receipt
from trailseal.errors import FormatError, ProofError, SignatureError
from trailseal.ledger import Ledger
from trailseal.storage.memory import MemoryStorage

ORIGIN = "example.com/log"
ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
OLD_KEY = NoteSigner.generate(ORIGIN)
NEW_KEY = NoteSigner.generate("example.com/log-2026")
STRANGER = NoteSigner.generate(ORIGIN)  # same name, other key: not trusted

line_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n"), min_size=1)


# -- checkpoint text ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    line_text,
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(line_text, max_size=4),
)
def test_checkpoint_text_round_trips_both_ways(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    text = cp.to_text()
    assert Checkpoint.from_text(text) == cp
    written = "\n".join([origin, str(size), base64.b64encode(root).decode(), *extensions]) + "\n"
    assert written == text
    assert Checkpoint.from_text(written).to_text() == written


def test_checkpoint_text_known_answer() -> None:
    cp = Checkpoint(ORIGIN, 50, ROOT, ("ext one",))
    assert cp.to_text() == f"{ORIGIN}\n50\n{ROOT_B64}\next one\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n007\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n00\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n-1\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n+1\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n 1\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n1.0\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n1_000\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n\u0661\n{ROOT_B64}\n", "not a plain decimal"),  # ARABIC-INDIC DIGIT ONE
        (f"o\n\n{ROOT_B64}\n", "not a plain decimal"),
        (f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", "is 31 bytes, not 32"),
        (f"o\n1\n{base64.b64encode(ROOT + b'!').decode()}\n", "is 33 bytes, not 32"),
        ("o\n1\n\n", "is 0 bytes, not 32"),
        (f"o\n1\n{ROOT_B64[:-1]}\n", "not valid base64"),
        (f"o\n1\n{ROOT_B64}=\n", "not valid base64"),  # excess padding
        (f"o\n1\n{ROOT_B64[:-2]}B=\n", "not valid base64"),  # non-zero padding bits
        (f"\n1\n{ROOT_B64}\n", "origin is empty"),
        (f"o\n1\n{ROOT_B64}\n\next\n", "extension lines must not be empty"),
        (f"o\n1\n{ROOT_B64}\next\n\n", "extension lines must not be empty"),
        (f"o\n1\n{ROOT_B64}", "must end with a newline"),
        (f"o\n1\n{ROOT_B64}\next", "must end with a newline"),
        ("o\n1\n", "needs origin, tree size and root hash"),
        ("", "must end with a newline"),
    ],
)
def test_checkpoint_text_rejects_malformed_input(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Checkpoint.from_text(text)


# -- signed checkpoints -------------------------------------------------------------


def test_signed_checkpoint_verifies_with_origin_check() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT)
    signed = sign_checkpoint(cp, [OLD_KEY])
    data = signed.to_bytes()
    assert parse_signed_checkpoint(data) == signed
    assert data.startswith(cp.to_text().encode() + "\n\u2014 ".encode())
    got = verify_checkpoint(data, [OLD_KEY.verifier], ORIGIN)
    assert got == signed
    assert (got.origin, got.tree_size, got.root_hash) == (ORIGIN, 7, ROOT)
    assert verify_checkpoint(data, [OLD_KEY.verifier]) == signed  # no origin check asked
    with pytest.raises(
        SignatureError, match=r"for origin 'example\.com/log', expected 'other\.example/log'"
    ):
        verify_checkpoint(data, [OLD_KEY.verifier], "other.example/log")
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        verify_checkpoint(data, [STRANGER.verifier], ORIGIN)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_checkpoint(data.replace(b"\n7\n", b"\n8\n"), [OLD_KEY.verifier], ORIGIN)


def test_signed_checkpoint_rejects_a_note_that_is_not_a_checkpoint() -> None:
    from trailseal.core.note import sign_note

    data = sign_note(f"{ORIGIN}\nseven\n{ROOT_B64}\n", [OLD_KEY]).to_bytes()
    with pytest.raises(FormatError, match="not a plain decimal"):
        verify_checkpoint(data, [OLD_KEY.verifier], ORIGIN)
    with pytest.raises(FormatError, match="not a plain decimal"):
        parse_signed_checkpoint(data)


def test_key_rotation_co_signed_checkpoint_verifies_with_either_key() -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 9, ROOT), [OLD_KEY, NEW_KEY])
    data = signed.to_bytes()
    for trusted in ([OLD_KEY.verifier], [NEW_KEY.verifier], [NEW_KEY.verifier, OLD_KEY.verifier]):
        assert verify_checkpoint(data, trusted, ORIGIN) == signed
    with pytest.raises(SignatureError):
        verify_checkpoint(data, [STRANGER.verifier], ORIGIN)
    # After the rotation only the new key signs; a verifier trusting both still accepts.
    later = sign_checkpoint(Checkpoint(ORIGIN, 10, ROOT), [NEW_KEY]).to_bytes()
    verify_checkpoint(later, [OLD_KEY.verifier, NEW_KEY.verifier], ORIGIN)
    with pytest.raises(SignatureError):
        verify_checkpoint(later, [OLD_KEY.verifier], ORIGIN)


# -- receipts from a real log -------------------------------------------------------


@dataclass(frozen=True)
class Log:
    ledger: Ledger
    verifiers: list[NoteVerifier]
    entries: list[bytes]


@pytest.fixture(scope="module")
def log() -> Iterator[Log]:
    st_ = MemoryStorage()
    info = st_.create_log("main", ORIGIN, "2026-01-01T00:00:00Z")
    signer = NoteSigner.generate(ORIGIN)
    ledger = Ledger(st_, info, [signer])
    # Two batches: checkpoints at sizes 30 and 50.
    ledger.append([{"id": str(i), "source": "t", "n": i} for i in range(30)])
    ledger.append([{"id": str(i), "source": "t", "n": i} for i in range(30, 50)])
    entries = [ledger.entry(i).data for i in range(50)]
    yield Log(ledger, [signer.verifier], entries)
    st_.close()


def test_ledger_receipts_verify_with_entry_bytes_and_with_leaf_hash(log: Log) -> None:
    assert log.ledger.tree_size() == 50
    for i in range(50):
        receipt = log.ledger.receipt(i)
        assert receipt.index == i
        signed = verify_receipt(receipt, log.verifiers, origin=ORIGIN, entry=log.entries[i])
        assert signed.tree_size == 50
        assert signed.root_hash == root_from_leaf_hashes([leaf_hash(e) for e in log.entries])
        verify_receipt(
            receipt, log.verifiers, origin=ORIGIN, entry_leaf_hash=leaf_hash(log.entries[i])
        )


def test_receipt_against_an_older_checkpoint(log: Log) -> None:
    receipt = log.ledger.receipt(12, tree_size=30)
    signed = verify_receipt(receipt, log.verifiers, origin=ORIGIN, entry=log.entries[12])
    assert signed.tree_size == 30
    # An entry appended after that checkpoint cannot be proven into it.
    late = dataclasses.replace(receipt, index=40)
    with pytest.raises(ProofError, match="not below tree size 30"):
        verify_receipt(late, log.verifiers, origin=ORIGIN, entry=log.entries[40])


def test_receipt_text_round_trips_both_ways(log: Log) -> None:
    for i in (0, 1, 17, 49):
        receipt = log.ledger.receipt(i)
        text = receipt.to_text()
        assert text.startswith(f"{RECEIPT_HEADER}\nindex {i}\n")
        assert text.endswith(receipt.checkpoint.decode())
        assert Receipt.from_text(text) == receipt
        assert Receipt.from_text(text).to_text() == text


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=64),
    st.none() | st.binary(max_size=200),
)
def test_receipt_objects_round_trip(index: int, proof: list[bytes], extra: bytes | None) -> None:
    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [OLD_KEY]).to_bytes()
    receipt = Receipt(index, tuple(proof), checkpoint, extra)
    text = receipt.to_text()
    assert Receipt.from_text(text) == receipt
    assert Receipt.from_text(text).to_text() == text
    assert ("\nextra " in text) is (extra is not None)


def test_receipt_extra_data_round_trips_and_is_not_signed(log: Log) -> None:
    for extra in (b"", b"\x00\xff", b"slack event Ev0123 from T0001"):
        receipt = dataclasses.replace(log.ledger.receipt(5), extra=extra)
        text = receipt.to_text()
        assert text.split("\n")[1] == "extra " + base64.b64encode(extra).decode()
        parsed = Receipt.from_text(text)
        assert parsed == receipt
        assert parsed.extra == extra
        verify_receipt(parsed, log.verifiers, origin=ORIGIN, entry=log.entries[5])


def test_receipt_rejects_altered_entry_or_index(log: Log) -> None:
    receipt = log.ledger.receipt(7)
    with pytest.raises(ProofError, match="leads to root"):
        verify_receipt(receipt, log.verifiers, origin=ORIGIN, entry=log.entries[7] + b" ")
    with pytest.raises(ProofError, match="leads to root"):
        verify_receipt(receipt, log.verifiers, origin=ORIGIN, entry=log.entries[8])
    for index in (6, 8, 39):
        moved = dataclasses.replace(receipt, index=index)
        with pytest.raises(ProofError):
            verify_receipt(moved, log.verifiers, origin=ORIGIN, entry=log.entries[7])
    with pytest.raises(ProofError, match="not below tree size 50"):
        verify_receipt(
            dataclasses.replace(receipt, index=50), log.verifiers, origin=ORIGIN,
            entry=log.entries[7],
        )  # fmt: skip
    edited = Receipt.from_text(receipt.to_text().replace("\nindex 7\n", "\nindex 8\n"))
    with pytest.raises(ProofError):
        verify_receipt(edited, log.verifiers, origin=ORIGIN, entry=log.entries[7])


def test_receipt_rejects_any_flipped_proof_bit(log: Log) -> None:
    receipt = log.ledger.receipt(33)
    assert len(receipt.proof) == 6
    for j, h in enumerate(receipt.proof):
        for bit in (0, 77, 255):
            b = bytearray(h)
            b[bit // 8] ^= 1 << (bit % 8)
            proof = (*receipt.proof[:j], bytes(b), *receipt.proof[j + 1 :])
            bad = dataclasses.replace(receipt, proof=proof)
            with pytest.raises(ProofError, match="leads to root"):
                verify_receipt(bad, log.verifiers, origin=ORIGIN, entry=log.entries[33])


def test_receipt_rejects_wrong_origin_and_untrusted_keys(log: Log) -> None:
    receipt = log.ledger.receipt(3)
    with pytest.raises(SignatureError, match=r"expected 'example\.com/other'"):
        verify_receipt(receipt, log.verifiers, origin="example.com/other", entry=log.entries[3])
    for trusted in ([STRANGER.verifier], [OLD_KEY.verifier, NEW_KEY.verifier], []):
        with pytest.raises(SignatureError, match="not signed by a trusted key"):
            verify_receipt(receipt, trusted, origin=ORIGIN, entry=log.entries[3])


def test_receipt_rejects_extra_or_missing_lines(log: Log) -> None:
    receipt = log.ledger.receipt(20)
    text = receipt.to_text()
    head, _, checkpoint = text.partition("\n\n")
    extra_hash = base64.b64encode(b"\x00" * 32).decode()

    def check(t: str) -> None:
        verify_receipt(Receipt.from_text(t), log.verifiers, origin=ORIGIN, entry=log.entries[20])

    check(text)
    # One proof hash too many, or too few: the receipt parses but does not prove.
    with pytest.raises(ProofError, match="longer than the tree is deep"):
        check(f"{head}\n{extra_hash}\n\n{checkpoint}")
    with pytest.raises(ProofError, match="shorter than the tree is deep"):
        check(head.rsplit("\n", 1)[0] + "\n\n" + checkpoint)
    # A line that is not a proof hash.
    with pytest.raises(FormatError, match="not valid base64"):
        check(f"{head}\nnot a hash\n\n{checkpoint}")
    with pytest.raises(FormatError, match="is 16 bytes, not 32"):
        check(f"{head}\n{base64.b64encode(b'x' * 16).decode()}\n\n{checkpoint}")
    # A line after the checkpoint's signatures, or a line added to the signed text.
    with pytest.raises(FormatError, match="does not start with"):
        check(text + "trailing line\n")
    origin_line, rest = checkpoint.split("\n", 1)
    size_line, rest = rest.split("\n", 1)
    root_line, rest = rest.split("\n", 1)
    assert rest.startswith("\n\u2014 ")
    added = f"{origin_line}\n{size_line}\n{root_line}\nsmuggled extension\n{rest}"
    with pytest.raises(SignatureError, match="does not verify"):
        check(f"{head}\n\n{added}")
    # A line before the header.
    with pytest.raises(FormatError, match=r"does not start with 'c2sp\.org/tlog-proof@v1'"):
        check("hello\n" + text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{RECEIPT_HEADER}\nindex 1\n", "no blank line"),
        ("c2sp.org/tlog-proof@v2\nindex 1\n\ncp\n", "does not start with"),
        (f"{RECEIPT_HEADER} \nindex 1\n\ncp\n", "does not start with"),
        (f"{RECEIPT_HEADER}\n\ncp\n", "no index line"),
        (f"{RECEIPT_HEADER}\nextra AA==\n\ncp\n", "no index line"),
        (f"{RECEIPT_HEADER}\nindex 1\nextra AA==\n\ncp\n", "not valid base64"),
        (f"{RECEIPT_HEADER}\nextra !!\nindex 1\n\ncp\n", "extra data is not valid base64"),
        (f"{RECEIPT_HEADER}\nindex 01\n\ncp\n", "not a plain decimal"),
        (f"{RECEIPT_HEADER}\nindex -1\n\ncp\n", "not a plain decimal"),
        (f"{RECEIPT_HEADER}\nindex \n\ncp\n", "not a plain decimal"),
        (f"{RECEIPT_HEADER}\nindex  1\n\ncp\n", "not a plain decimal"),
        (f"{RECEIPT_HEADER}\nindex 1\n\n", "no checkpoint"),
        (f"{RECEIPT_HEADER}\nindex 1\n{ROOT_B64}=\n\ncp\n", "not valid base64"),
    ],
)
def test_receipt_text_rejects_malformed_input(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Receipt.from_text(text)


def test_verify_receipt_needs_exactly_one_of_entry_and_leaf_hash(log: Log) -> None:
    receipt = log.ledger.receipt(0)
    with pytest.raises(ValueError, match="exactly one"):
        verify_receipt(receipt, log.verifiers, origin=ORIGIN)
    with pytest.raises(ValueError, match="exactly one"):
        verify_receipt(
            receipt, log.verifiers, origin=ORIGIN, entry=log.entries[0],
            entry_leaf_hash=leaf_hash(log.entries[0]),
        )  # fmt: skip
