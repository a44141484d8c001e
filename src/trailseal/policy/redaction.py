"""Built-in secret detectors, applied to every string of an event before it is hashed.

A match is replaced by ``[REDACTED:<detector>]`` and recorded in the event's
``redaction`` list as ``{"path": <JSON pointer>, "mode": "mask", "detector": <name>}``,
so the leaf says what was removed and where without keeping the secret.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

DETECTORS: dict[str, re.Pattern[str]] = {
    # Slack bot/user/app-level tokens and refresh tokens (xoxb-, xoxp-, xoxa-, xoxe-, ...).
    "slack_token": re.compile(r"\bxox[abposre](?:\.xox[a-z]?)?-[A-Za-z0-9-]{8,}"),
    "slack_app_token": re.compile(r"\bxapp-\d-[A-Za-z0-9-]{8,}"),
    "slack_webhook": re.compile(
        r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]+"
    ),
    "bearer_token": re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "aws_secret_key": re.compile(
        r"(?i)(?<![A-Za-z0-9/+=])(?:aws_secret_access_key|secret_access_key)[\"']?\s*[:=]\s*"
        r"[\"']?[A-Za-z0-9/+=]{40}"
    ),
    "trailseal_api_key": re.compile(r"\btsk_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "password": re.compile(r"(?i)\b(?:password|passwd)[\"']?\s*[:=]\s*[\"']?[^\s\"',;&]{4,}"),
    "private_key": re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
        r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    ),
}
"""Detector name → pattern. Names appear in ``redaction`` records; never the match."""

_QUICK_PATTERN = (
    r"xox|xapp|hooks\.slack|tsk_|gh[pousr]_|github_pat_|AKIA|ASIA|AGPA|AIDA|AROA|PRIVATE KEY"
    r"|(?i:bearer|secret|passw)"
)
_QUICK = re.compile(_QUICK_PATTERN)
"""Every detector's match contains one of these: a string without one has no secret."""
_QUICK_JSON = re.compile(_QUICK_PATTERN.encode())


def _pointer(path: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _mask(text: str) -> tuple[str, list[str]]:
    found: list[str] = []
    if not _QUICK.search(text):
        return text, found
    for name, pattern in DETECTORS.items():
        text, n = pattern.subn(f"[REDACTED:{name}]", text)
        if n:
            found.append(name)
    return text, found


def redact(value: Any, path: list[str | int] | None = None) -> tuple[Any, list[dict[str, str]]]:
    """Mask secrets in every string (keys included) of ``value``; returns the new value and
    the redaction records (``value`` itself when nothing was found).

    Most events hold no secret, so the value's JSON is searched once for the quick
    pattern first. That is exact: no quick alternative contains a character JSON escapes
    (a quote, a backslash, a control character) and orjson writes everything else as is,
    so a string holding one holds it in the JSON too; only then is every string walked.
    """
    try:
        clean = not _QUICK_JSON.search(orjson.dumps(value))
    except TypeError:  # orjson.JSONEncodeError: a value JSON cannot hold; walk it
        clean = False
    return (value, []) if clean else _redact(value, path or [])


def _redact(value: Any, path: list[str | int]) -> tuple[Any, list[dict[str, str]]]:
    records: list[dict[str, str]] = []
    if isinstance(value, str):
        masked, found = _mask(value)
        records += [{"path": _pointer(path), "mode": "mask", "detector": d} for d in found]
        return masked, records
    if isinstance(value, list):
        out_list = []
        for i, item in enumerate(value):
            new, recs = _redact(item, [*path, i])
            out_list.append(new)
            records += recs
        return out_list, records
    if isinstance(value, dict):
        out_dict = {}
        for key, item in value.items():
            new_key, key_found = _mask(key)
            records += [
                {"path": _pointer([*path, new_key]), "mode": "mask", "detector": d}
                for d in key_found
            ]
            new, recs = _redact(item, [*path, new_key])
            out_dict[new_key] = new
            records += recs
        return out_dict, records
    return value, records
