"""RFC 8785 (JCS) canonical JSON, with a fast path that is provably the same bytes.

The pure-Python ``rfc8785`` package is the reference. orjson with sorted keys emits the
same bytes when (a) no key or string needs UTF-16 ordering that differs from code point
order, which only characters outside the BMP cause (UTF-8 lead bytes 0xF0-0xF4), (b) no
number is a float (ES6 number formatting differs from orjson's), and (c) every integer
is within JCS's IEEE 754 domain, which ``OPT_STRICT_INTEGER`` enforces. In orjson's
compact output a number starts right after ``:``, ``,`` or ``[``, so a float always
matches ``[:,[]-?[0-9]+[.eE]`` (or is the whole value). Such a match can also come from
inside a string (a timestamp's ``:00.123``), and orjson writes the non-finite floats,
which have no JCS form, as ``null``; in those cases the value itself is searched for a
float before the fast path is trusted. Otherwise :func:`canonicalize` falls back to
``rfc8785``; a property test keeps the two in step.

Input must be the JSON data model: dict with str keys, list, str, int, float, bool, None.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import rfc8785

from trailseal.errors import EntryError

_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_STRICT_INTEGER
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_NON_BMP = re.compile(rb"[\xf0-\xf4]")
_FLOAT = re.compile(rb"[:,\[]-?[0-9]+[.eE]")
_NUMBER_START = frozenset(b"-0123456789")


def _fast_path_is_exact(value: Any, data: bytes) -> bool:
    if not data.isascii() and _NON_BMP.search(data):
        return False
    # Only walk the value when the bytes hint at a float: a number-like token (which a
    # fractional-second timestamp inside a string also looks like), a bare number, or a
    # null (orjson silently writes NaN and ±Infinity as null; rfc8785 rejects them).
    if data[0] in _NUMBER_START or b"null" in data or _FLOAT.search(data):
        return not _contains_float(value)
    return True


def _contains_float(value: Any) -> bool:
    """Whether a float (finite or not) is anywhere inside ``value``."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float):
            return True
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return False


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of ``value``; :class:`EntryError` if it has none."""
    try:
        data = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: unsupported type or integer out of range
        data = None
    if data is not None and _fast_path_is_exact(value, data):
        return data
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise EntryError(f"value has no RFC 8785 canonical form: {e}") from e


def canonicalize_reference(value: Any) -> bytes:
    """The reference implementation alone, for tests and for doubt."""
    return rfc8785.dumps(value)
