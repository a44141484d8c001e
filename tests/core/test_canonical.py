"""RFC 8785 canonical JSON: the orjson fast path must give the reference's exact bytes."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from trailseal.core import canonical
from trailseal.core.canonical import canonicalize, canonicalize_reference
from trailseal.errors import EntryError

MAX_SAFE = 2**53 - 1

# Characters that stress the differences between orjson and JCS: ASCII with every
# control character, the BMP above the surrogates (sorts after non-BMP in UTF-16), and
# characters outside the BMP (sorts before U+E000..U+FFFF in UTF-16, after in UTF-8).
chars = st.one_of(
    st.characters(max_codepoint=0x7F),
    st.characters(min_codepoint=0x80, max_codepoint=0xD7FF),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF, exclude_categories=("Cs",)),
    st.characters(min_codepoint=0x10000),
    st.sampled_from(["\u2028", "\u2029", "\x7f", '"', "\\", "/", "\x00", "\x1f"]),
)
texts = st.text(chars, max_size=12)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
integers = st.one_of(
    st.integers(-MAX_SAFE, MAX_SAFE),
    st.sampled_from([MAX_SAFE + 1, -MAX_SAFE - 1, 2**63, -(2**63) - 1, 2**64, 10**30]),
)
scalars = st.one_of(st.none(), st.booleans(), integers, finite_floats, texts)


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)
        ),
        max_leaves=25,
    )


json_values = _json(scalars)


def _assert_same_as_reference(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except Exception:  # the reference rejects it: so must we, as EntryError
        with pytest.raises(EntryError, match="no RFC 8785 canonical form"):
            canonicalize(value)
    else:
        assert canonicalize(value) == expected


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonicalize_equals_rfc8785(value: Any) -> None:
    _assert_same_as_reference(value)


@settings(max_examples=100, deadline=None)
@given(_json(st.one_of(scalars, st.sampled_from([math.nan, math.inf, -math.inf]))))
def test_canonicalize_equals_rfc8785_with_non_finite_floats(value: Any) -> None:
    _assert_same_as_reference(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(texts, st.one_of(st.none(), st.booleans(), texts), max_size=8))
def test_objects_without_numbers_equal_rfc8785(value: dict[str, Any]) -> None:
    # The common case for entries: the fast path (when taken) must be exact.
    assert canonicalize(value) == rfc8785.dumps(value) == canonicalize_reference(value)


# -- explicit cases -----------------------------------------------------------------


def test_key_order_is_utf16_not_code_point() -> None:
    value = {"\uffff": 1, "\U0001f600": 2, "\ue000": 3, "a": 4, "\u00e9": 5}
    # UTF-16 code units: a (0061) < é (00E9) < 😀 (D83D DE00) < E000 < FFFF.
    expected = '{"a":4,"\u00e9":5,"\U0001f600":2,"\ue000":3,"\uffff":1}'.encode()
    assert canonicalize(value) == expected == rfc8785.dumps(value)
    nested = {"k": [value, {"\U00010000": None, "\uffff": None}]}
    assert canonicalize(nested) == rfc8785.dumps(nested)
    assert canonicalize(nested).index("\U00010000".encode()) < canonicalize(nested).index(
        b'"\xef\xbf\xbf":null}'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, b"1"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (-0.0, b"0"),
        (0.0, b"0"),
        (1.5e-7, b"1.5e-7"),
        (1e-7, b"1e-7"),
        (0.000001, b"0.000001"),
        (0.1, b"0.1"),
        (-2.5, b"-2.5"),
        (5e-324, b"5e-324"),
        (1.7976931348623157e308, b"1.7976931348623157e+308"),
        ([1.0, -0.0, 1e21], b"[1,0,1e+21]"),
        ({"a": 1.0, "b": [1.5e-7]}, b'{"a":1,"b":[1.5e-7]}'),
        (MAX_SAFE, b"9007199254740991"),
        (-MAX_SAFE, b"-9007199254740991"),
        ({"n": MAX_SAFE}, b'{"n":9007199254740991}'),
        (0, b"0"),
        (True, b"true"),
        (None, b"null"),
        ("s", b'"s"'),
        ([], b"[]"),
        ({}, b"{}"),
    ],
)
def test_numbers_and_scalars(value: Any, expected: bytes) -> None:
    assert canonicalize(value) == expected == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        2**53,
        -(2**53),
        {"a": [2**53]},
        2**64,
        math.nan,
        math.inf,
        -math.inf,
        {"a": math.nan},
        [None, math.inf],
        {"a": None, "b": [1, {"c": -math.inf}]},
    ],
)
def test_values_without_a_canonical_form_are_rejected(value: Any) -> None:
    with pytest.raises(EntryError, match="no RFC 8785 canonical form"):
        canonicalize(value)


def test_nan_is_not_written_as_null() -> None:
    # orjson writes NaN and Infinity as null; a record must never change silently.
    for value in ({"temperature": math.nan}, [math.inf], {"x": [None, -math.inf]}):
        with pytest.raises(EntryError):
            canonicalize(value)


def test_every_control_character_is_escaped_as_jcs_says() -> None:
    short = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    controls = "".join(chr(c) for c in range(0x20))
    expected = "".join(short.get(c, f"\\u{ord(c):04x}") for c in controls)
    assert canonicalize(controls) == f'"{expected}"'.encode()
    assert canonicalize({controls: controls}) == f'{{"{expected}":"{expected}"}}'.encode()
    for c in controls:
        assert canonicalize(c) == rfc8785.dumps(c)
    # Not escaped: U+2028, U+2029, DEL and '/'; escaped: '"' and '\'.
    assert canonicalize('\u2028\u2029\x7f/"\\') == '"\u2028\u2029\x7f/\\"\\\\"'.encode()
    assert canonicalize("\u2028") == rfc8785.dumps("\u2028")


def test_lone_surrogates_are_rejected() -> None:
    with pytest.raises(EntryError):
        canonicalize({"a": "\ud800"})
    with pytest.raises(EntryError):
        canonicalize({"\udfff": 1})


def test_fast_path_is_taken_for_plain_records(monkeypatch: pytest.MonkeyPatch) -> None:
    def reference_must_not_run(value: Any) -> bytes:
        raise AssertionError(f"slow path taken for {value!r}")

    monkeypatch.setattr(canonical.rfc8785, "dumps", reference_must_not_run)
    record = {"id": "Ev01", "source": "slack", "n": 42, "ok": True, "user": None, "tags": ["a"]}
    assert canonicalize(record) == (
        b'{"id":"Ev01","n":42,"ok":true,"source":"slack","tags":["a"],"user":null}'
    )
    assert (
        canonicalize({"text": "caf\u00e9 \u2028 \uffff"})
        == '{"text":"caf\u00e9 \u2028 \uffff"}'.encode()
    )
