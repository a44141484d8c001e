"""C2SP signed notes with Ed25519 keys: signing, verification, key strings, parsing."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailseal.core.note import (
    MAX_SIGNATURES,
    SIGNATURE_PREFIX,
    Note,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    b64decode,
    b64encode,
    key_id,
    open_note,
    parse_note,
    sign_note,
)
from trailseal.errors import FormatError, SignatureError

TEXT = "example.com/log\n42\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"

# The example of golang.org/x/mod/sumdb/note, which c2sp.org/signed-note follows.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()

# A few keys, generated once: Ed25519 key generation is cheap but not free.
SIGNERS = [NoteSigner.generate(f"signer{i}.example") for i in range(20)]
STRANGERS = [NoteSigner.generate(f"stranger{i}.example") for i in range(16)]


def _sig_line(name: str, kid: int, sig: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(kid.to_bytes(4, 'big') + sig).decode()}\n"


# -- known answers ------------------------------------------------------------------


def test_go_sumdb_note_example() -> None:
    signer = NoteSigner.from_string(GO_SKEY)
    verifier = NoteVerifier.from_string(GO_VKEY)
    assert signer.verifier == verifier
    assert signer.to_string() == GO_SKEY
    assert verifier.to_string() == GO_VKEY
    # Ed25519 signatures are deterministic, so signing reproduces the published note.
    assert sign_note(GO_TEXT, [signer]).to_bytes() == GO_NOTE
    note, signed_by = open_note(GO_NOTE, [verifier])
    assert note.text == GO_TEXT
    assert signed_by == [verifier]


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    for signer in [*SIGNERS[:3], NoteSigner.from_string(GO_SKEY)]:
        public = signer.verifier.public_key
        digest = hashlib.sha256(signer.name.encode() + b"\x0a\x01" + public).digest()
        expected = int.from_bytes(digest[:4], "big")
        assert signer.key_id == expected == key_id(signer.name, 0x01, public)
        assert signer.verifier.to_string().split("+")[1] == digest[:4].hex()
    assert NoteVerifier.from_string(GO_VKEY).key_id == 0xC74F20A3


# -- signing and verification -------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.data())
def test_any_subset_of_signers_verifies(count: int, data: st.DataObject) -> None:
    signers = SIGNERS[:count]
    note_bytes = sign_note(TEXT, signers).to_bytes()
    subset = data.draw(
        st.lists(st.sampled_from(signers), min_size=1, unique_by=lambda s: s.name), label="subset"
    )
    note, signed_by = open_note(note_bytes, [s.verifier for s in subset])
    assert note.text == TEXT
    assert len(note.signatures) == count
    # Reported in the note's signature order.
    assert signed_by == [s.verifier for s in signers if s in subset]


def test_unknown_signers_are_ignored() -> None:
    data = sign_note(TEXT, [SIGNERS[0], STRANGERS[0], SIGNERS[1]]).to_bytes()
    _, signed_by = open_note(data, [SIGNERS[1].verifier, SIGNERS[5].verifier])
    assert signed_by == [SIGNERS[1].verifier]


def test_sixteen_unknown_signatures_and_one_known() -> None:
    data = sign_note(TEXT, [*STRANGERS, SIGNERS[0]]).to_bytes()
    note, signed_by = open_note(data, [SIGNERS[0].verifier])
    assert len(note.signatures) == 17
    assert signed_by == [SIGNERS[0].verifier]


def test_same_name_different_key_is_unknown_not_bad() -> None:
    impostor = NoteSigner.generate(SIGNERS[0].name)
    data = sign_note(TEXT, [impostor, SIGNERS[1]]).to_bytes()
    _, signed_by = open_note(data, [SIGNERS[0].verifier, SIGNERS[1].verifier])
    assert signed_by == [SIGNERS[1].verifier]


def test_known_key_with_bad_signature_rejects_the_note() -> None:
    good = sign_note(TEXT, [SIGNERS[0], SIGNERS[1]])
    s0, s1 = good.signatures
    broken = bytearray(s1.signature)
    broken[10] ^= 0x01
    bad = Note(TEXT, (s0, NoteSignature(s1.name, s1.key_id, bytes(broken))))
    # The other key verifies, but a trusted key that fails is fatal.
    with pytest.raises(SignatureError, match=f"signature by {s1.name} .* does not verify"):
        open_note(bad.to_bytes(), [SIGNERS[0].verifier, SIGNERS[1].verifier])
    # Trusting only the good key, the bad signature is someone else's business.
    open_note(bad.to_bytes(), [SIGNERS[0].verifier])
    # A signature over other text, and a truncated one, are bad signatures too.
    other = sign_note(TEXT + "x\n", [SIGNERS[1]]).signatures[0]
    for sig in (other, NoteSignature(s1.name, s1.key_id, s1.signature[:32])):
        with pytest.raises(SignatureError, match="does not verify"):
            open_note(Note(TEXT, (sig,)).to_bytes(), [SIGNERS[1].verifier])


def test_altered_text_fails_every_known_key() -> None:
    data = sign_note(TEXT, [SIGNERS[0]]).to_bytes()
    tampered = data.replace(b"\n42\n", b"\n43\n")
    with pytest.raises(SignatureError, match="does not verify"):
        open_note(tampered, [SIGNERS[0].verifier])


def test_no_known_key_rejects_the_note() -> None:
    data = sign_note(TEXT, [STRANGERS[0], STRANGERS[1]]).to_bytes()
    with pytest.raises(SignatureError, match=r"not signed by a trusted key.*stranger0\.example"):
        open_note(data, [SIGNERS[0].verifier])
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        open_note(data, [])


def test_a_known_key_signing_twice_rejects_the_note() -> None:
    sig = sign_note(TEXT, [SIGNERS[0]]).signatures[0]
    with pytest.raises(SignatureError, match="signed twice"):
        open_note(Note(TEXT, (sig, sig)).to_bytes(), [SIGNERS[0].verifier])


def test_sign_note_requires_signers_and_a_final_newline() -> None:
    with pytest.raises(SignatureError, match="at least one signer"):
        sign_note(TEXT, [])
    with pytest.raises(FormatError, match="end with a newline"):
        sign_note("no newline", [SIGNERS[0]])
    with pytest.raises(FormatError, match="control characters"):
        sign_note("tab\there\n", [SIGNERS[0]])


# -- key strings --------------------------------------------------------------------


def test_key_strings_round_trip_both_ways() -> None:
    for signer in SIGNERS[:5]:
        skey, vkey = signer.to_string(), signer.verifier.to_string()
        again = NoteSigner.from_string(skey)
        assert again.to_string() == skey
        assert again.verifier == signer.verifier
        assert again.name == signer.name
        assert again.key_id == signer.key_id
        assert NoteVerifier.from_string(vkey) == signer.verifier
        assert NoteVerifier.from_string(vkey).to_string() == vkey
        # A key parsed from its string signs what the original verifies.
        open_note(sign_note(TEXT, [again]).to_bytes(), [NoteVerifier.from_string(vkey)])


@settings(max_examples=50, deadline=None)
@given(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="+"), min_size=1).filter(
        lambda s: not any(c.isspace() for c in s)
    )
)
def test_any_valid_name_round_trips(name: str) -> None:
    signer = NoteSigner.generate(name)
    assert NoteSigner.from_string(signer.to_string()).verifier == signer.verifier
    assert NoteVerifier.from_string(signer.verifier.to_string()) == signer.verifier


def test_key_strings_whose_base64_holds_a_plus_parse() -> None:
    # Standard base64 uses '+': only the first two (verifier) or four (signer) '+' split.
    # From transparency-dev/formats note/note_cosigv1_test.go.
    plus_key = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
    verifier = NoteVerifier.from_string(plus_key)
    assert (verifier.name, verifier.key_id) == ("TEST", 0x7997405C)
    assert verifier.to_string() == plus_key
    signer = next(
        s
        for s in (NoteSigner.generate("plus.example") for _ in range(500))
        if "+" in s.to_string().split("+", 4)[4] and "+" in s.verifier.to_string().split("+", 2)[2]
    )
    assert NoteSigner.from_string(signer.to_string()).verifier == signer.verifier
    assert NoteVerifier.from_string(signer.verifier.to_string()) == signer.verifier


def _vkey_parts(signer: NoteSigner) -> tuple[str, str, bytes]:
    name, hex_id, b64 = signer.verifier.to_string().split("+", 2)
    return name, hex_id, base64.b64decode(b64)


def test_verifier_key_strings_reject_mismatches_and_malformed_input() -> None:
    name, hex_id, raw = _vkey_parts(SIGNERS[0])
    b64 = base64.b64encode(raw).decode()
    other_id = f"{(int(hex_id, 16) ^ 1):08x}"
    type2 = base64.b64encode(b"\x02" + raw[1:]).decode()
    short = base64.b64encode(raw[:-1]).decode()
    long = base64.b64encode(raw + b"\x00").decode()
    cases = {
        f"{name}+{other_id}+{b64}": "does not match",
        f"{SIGNERS[1].name}+{hex_id}+{b64}": "does not match",  # key ID is over the name
        f"{name}+{hex_id}+{type2}": "only Ed25519",
        f"{name}+{hex_id}+{short}": "only Ed25519",
        f"{name}+{hex_id}+{long}": "only Ed25519",
        f"{name}+{hex_id}+{b64[:-1]}": "not valid base64",
        f"{name}+{hex_id}+{b64}=": "not valid base64",
        f"{name}+{hex_id}+!{b64[1:]}": "not valid base64",
        f"{name}+{hex_id}+{b64[:10]}é{b64[11:]}": "not valid base64",
        f"{name}+{hex_id[:7]}+{b64}": "8 lowercase hex digits",
        f"{name}+{hex_id}0+{b64}": "8 lowercase hex digits",
        f"{name}+zzzzzzzz+{b64}": "8 lowercase hex digits",
        f"{name}+{hex_id}": "reads <name>",
        f"a+{name}+{hex_id}+{b64}": "8 lowercase hex digits",  # a name cannot hold '+'
        "": "reads <name>",
        f"bad name+{hex_id}+{b64}": "without spaces",
        f"+{hex_id}+{b64}": "non-empty",
    }
    for vkey, message in cases.items():
        with pytest.raises(FormatError, match=message):
            NoteVerifier.from_string(vkey)


def test_signer_key_strings_reject_mismatches_and_malformed_input() -> None:
    skey = SIGNERS[0].to_string()
    _, _, name, hex_id, b64 = skey.split("+", 4)
    raw = base64.b64decode(b64)
    other_id = f"{(int(hex_id, 16) ^ 1):08x}"
    type2 = base64.b64encode(b"\x02" + raw[1:]).decode()
    short = base64.b64encode(raw[:-1]).decode()
    cases = {
        f"PRIVATE+KEY+{name}+{other_id}+{b64}": "does not match",
        f"PRIVATE+KEY+{SIGNERS[1].name}+{hex_id}+{b64}": "does not match",
        f"PRIVATE+KEY+{name}+{hex_id}+{type2}": "only Ed25519",
        f"PRIVATE+KEY+{name}+{hex_id}+{short}": "only Ed25519",
        f"PRIVATE+KEY+{name}+{hex_id}+{b64[:-2]}": "not valid base64",
        f"PRIVATE+KEY+{name}+{hex_id}+#{b64[1:]}": "not valid base64",
        f"PRIVATE+KEY+bad name+{hex_id}+{b64}": "without spaces",
        f"PRIVATE+KEY+a+b+{hex_id}+{b64}": "not valid base64",  # a name cannot hold '+'
        f"PRIVATE+KEY+{name}+{hex_id}": "reads PRIVATE",
        f"PUBLIC+KEY+{name}+{hex_id}+{b64}": "reads PRIVATE",
        f"{name}+{hex_id}+{b64}": "reads PRIVATE",
    }
    for bad, message in cases.items():
        with pytest.raises(FormatError, match=message):
            NoteSigner.from_string(bad)


@pytest.mark.parametrize("name", ["", "a b", "a\tb", "a\nb", "a+b", "+", " "])
def test_key_names_with_spaces_or_plus_are_rejected(name: str) -> None:
    with pytest.raises(FormatError, match="without spaces or '\\+'"):
        NoteSigner.generate(name)


def test_signer_repr_hides_the_private_key() -> None:
    signer = SIGNERS[0]
    secret = signer.to_string()
    seed_b64 = secret.rsplit("+", 1)[1]
    for text in (repr(signer), str(signer), f"{signer!r}", repr([signer])):
        assert secret not in text
        assert seed_b64 not in text
        assert seed_b64[:12] not in text
        assert signer.name in text
    assert "key=***" in repr(signer)


# -- parsing ------------------------------------------------------------------------


def _signed(text: str = TEXT) -> bytes:
    return sign_note(text, [SIGNERS[0]]).to_bytes()


def test_parse_note_round_trips() -> None:
    note = sign_note(TEXT, [SIGNERS[0], STRANGERS[0]])
    parsed = parse_note(note.to_bytes())
    assert parsed == note
    assert parsed.to_bytes() == note.to_bytes()
    assert note.to_bytes().decode().split("\n\n")[1].startswith(SIGNATURE_PREFIX)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff" + _signed(), "not valid UTF-8"),
        (_signed().replace(b"example.com", b"example\xc0.com"), "not valid UTF-8"),
        (_signed().replace(b"\n42\n", b"\n4\x002\n"), "control characters"),
        (_signed().replace(b"\n42\n", b"\n4\r2\n"), "control characters"),
        (_signed().replace(b"\n42\n", b"\n4\t2\n"), "control characters"),
        (_signed().replace(b"\n\n", b"\n"), "no blank line"),
        (_signed()[:-1], "end with a newline"),
        (TEXT.encode() + b"\n", "must each end with a newline"),
        (TEXT.encode() + "\n\u2014 nameonly\n".encode(), "too short"),
        (TEXT.encode() + b"\n- name AAAAAAA=\n", "does not start with"),
        (TEXT.encode() + "\n\u2014 name AAAA\n".encode(), "too short"),
        (TEXT.encode() + "\n\u2014 bad+name AAAAAAA=\n".encode(), "without spaces"),
        (TEXT.encode() + "\n\u2014 name not-base64!\n".encode(), "not valid base64"),
        (_signed() + b"\n", "must each end with a newline"),
    ],
)
def test_parse_note_rejects_malformed_notes(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_note(data)
    with pytest.raises(FormatError, match=message):
        open_note(data, [SIGNERS[0].verifier])


def test_parse_note_limits_the_number_of_signatures() -> None:
    sig = sign_note(TEXT, [STRANGERS[0]]).signatures[0]
    at_limit = Note(TEXT, (sig,) * MAX_SIGNATURES).to_bytes()
    assert len(parse_note(at_limit).signatures) == MAX_SIGNATURES
    over = Note(TEXT, (sig,) * (MAX_SIGNATURES + 1)).to_bytes()
    with pytest.raises(FormatError, match=f"more than {MAX_SIGNATURES} signatures"):
        parse_note(over)
    # Even with a trusted signature among them.
    over_known = Note(TEXT, (*([sig] * MAX_SIGNATURES), *_parse_sigs(_signed()))).to_bytes()
    with pytest.raises(FormatError, match="more than"):
        open_note(over_known, [SIGNERS[0].verifier])


def _parse_sigs(data: bytes) -> tuple[NoteSignature, ...]:
    return parse_note(data).signatures


def test_signature_line_format() -> None:
    sig = NoteSignature("name.example", 0x01020304, b"\xaa" * 64)
    assert sig.to_line() == _sig_line("name.example", 0x01020304, b"\xaa" * 64)
    assert sig.to_line().startswith("\u2014 name.example AQIDBKqq")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", True),
        ("AA==", True),
        ("AAA=", True),
        ("AAAA", True),
        ("AB==", False),  # non-zero padding bits
        ("AAB=", False),
        ("AAAA=", False),  # excess padding
        ("AAAA====", False),
        ("AA=", False),
        ("AA", False),
        ("AA==\n", False),
        (" AA==", False),
        ("AA-_", False),  # URL-safe alphabet
        ("\u00c5A==", False),
    ],
)
def test_b64decode_accepts_only_canonical_standard_base64(text: str, ok: bool) -> None:
    if ok:
        assert b64encode(b64decode(text, "x")) == text
    else:
        with pytest.raises(FormatError, match="x is not valid base64"):
            b64decode(text, "x")


def test_signature_in_non_canonical_base64_is_rejected() -> None:
    data = _signed().decode()
    name_and_blob = data.rsplit(" ", 1)
    with pytest.raises(FormatError, match="not valid base64"):
        parse_note((name_and_blob[0] + " " + name_and_blob[1][:-1] + "=\n").encode())
