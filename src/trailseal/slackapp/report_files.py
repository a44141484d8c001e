"""The files of an audit report: rows as CSV and JSON (streamed), an HTML summary, and
Slack Block Kit blocks.

Rows are written as they are read, so a report of any size costs one row of memory;
only the summary's counters grow, and those are capped (:data:`MAX_DISTINCT`).

Every file is written to ``<name>.partial`` with mode 0600 and renamed when complete, so
a reader never sees half a report.
"""

from __future__ import annotations

import csv
import html
import io
import os
from collections import Counter
from pathlib import Path
from typing import IO, Any

import orjson

COLUMNS = (
    "index",
    "leaf_hash",
    "time",
    "action",
    "class",
    "source",
    "event_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_team",
    "external",
    "targets",
    "channel",
    "workspace",
    "app",
    "result",
    "correlation_id",
)
"""CSV columns, in order; JSON rows use the same keys."""

MAX_DISTINCT = 100_000
"""Distinct actors counted by name in the summary; the rest are counted together."""

_FORMULA_START = frozenset("=+-@\t\r")


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab or
    carriage return, OWASP's list) gets a leading apostrophe."""
    if type(value) is str:  # the common case first: this runs for every cell
        return "'" + value if value[:1] in _FORMULA_START else value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text[:1] in _FORMULA_START else text


def open_private(path: Path) -> IO[bytes]:
    """``path`` opened for writing, created 0600 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


class RowWriter:
    """CSV and JSON side by side, plus the summary counters, one row at a time."""

    def __init__(self, csv_path: Path, json_path: Path, header: dict[str, Any]) -> None:
        self.csv_path, self.json_path = csv_path, json_path
        self._csv_raw = open_private(_partial(csv_path))
        self._csv_text = io.TextIOWrapper(self._csv_raw, encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_text)
        self._csv.writerow(COLUMNS)
        self._json = open_private(_partial(json_path))
        head = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
        self._json.write(b'{"report":' + head + b',"rows":[\n')
        self.rows = 0
        self.by_action: Counter[str] = Counter()
        self.by_actor: Counter[str] = Counter()
        self.other_actors = 0
        self.external_actors: Counter[str] = Counter()

    def write(self, row: dict[str, Any]) -> None:
        """One row to both files; counted in the summary."""
        self._csv.writerow([csv_cell(row[c]) for c in COLUMNS])
        if self.rows:
            self._json.write(b",\n")
        self._json.write(orjson.dumps(row))
        self.rows += 1
        self.by_action[str(row.get("action"))] += 1
        actor = _actor_label(row)
        if actor in self.by_actor or len(self.by_actor) < MAX_DISTINCT:
            self.by_actor[actor] += 1
        else:
            self.other_actors += 1
        if row.get("external") and len(self.external_actors) < MAX_DISTINCT:
            self.external_actors[actor] += 1

    def finish(self, summary: dict[str, Any]) -> None:
        """Close the row list with the summary, flush and rename both files."""
        self._json.write(b'\n],\n"summary":')
        self._json.write(orjson.dumps(summary, option=orjson.OPT_SORT_KEYS))
        self._json.write(b"}\n")
        for stream in (self._csv_text, self._json):
            stream.flush()
            os.fsync(stream.fileno())
            stream.close()
        _partial(self.csv_path).replace(self.csv_path)
        _partial(self.json_path).replace(self.json_path)

    def abort(self) -> None:
        """Close and remove the partial files after a failure."""
        for stream in (self._csv_text, self._json):
            stream.close()
        for path in (self.csv_path, self.json_path):
            _partial(path).unlink(missing_ok=True)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _actor_label(row: dict[str, Any]) -> str:
    actor = str(row.get("actor_id") or "unknown")
    name = row.get("actor_name")
    return f"{name} ({actor})" if name and name != actor else actor


def write_private(path: Path, data: bytes) -> None:
    """A small file, written 0600 to ``.partial`` and renamed."""
    with open_private(_partial(path)) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _partial(path).replace(path)


# -- HTML ------------------------------------------------------------------------------

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#1d1c1d}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;"
    "padding:.25rem .6rem;text-align:left}th{background:#f4f4f4}code,pre{background:#f4f4f4;"
    "padding:.1rem .3rem;overflow-wrap:anywhere}pre{padding:.6rem}.note{color:#8a6d00}"
)


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_html(summary: dict[str, Any], header: dict[str, Any], files: dict[str, str]) -> str:
    """A readable, self-contained document (no scripts, no external resources); every
    value from the log or from Slack is escaped."""
    e = html.escape
    request, scope = header["request"], header["request"]["scope"]
    checkpoint = header["checkpoint"]
    scope_rows = [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in scope.items()]
    slack = summary.get("slack") or {}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Audit report {e(request['id'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Audit report: {e(scope['kind'])} audit</h1>",
        _table(
            ("", ""),
            [
                ("Request", request["id"]),
                ("Requested by", request["requester"]),
                ("Purpose", request["purpose"]),
                ("Requested at", request["requested_at"]),
                ("Generated at", header["generated_at"]),
            ],
        ),
        "<h2>Scope</h2>",
        _table(("field", "value"), scope_rows),
        f"<h2>Results</h2><p>{summary['rows']} events in scope; "
        f"{summary['excluded_external_rows']} events by external (Slack Connect) members "
        f"{'included' if scope['include_external'] else 'left out'}.</p>",
        "<h3>By action</h3>",
        _table(("action", "events"), summary["by_action"]),
        "<h3>By actor</h3>",
        _table(("actor", "events"), summary["by_actor"]),
        "<h3>External members</h3>",
        _table(("actor", "events"), summary["external_actors"])
        if summary["external_actors"]
        else "<p>None seen.</p>",
    ]
    if slack:
        parts.append("<h2>From Slack</h2>")
        team = slack.get("team") or {}
        if team:
            parts.append(f"<p>Workspace: {e(str(team.get('name')))} ({e(str(team.get('id')))})</p>")
        channel_rows = [
            (c["id"], c.get("name"), c.get("is_ext_shared"), c.get("members"), c.get("external"))
            for c in slack.get("channels", [])
        ]
        if channel_rows:
            headers = ("channel", "name", "Slack Connect", "members listed", "external members")
            parts.append(_table(headers, channel_rows))
        if slack.get("apps") is not None:
            parts.append(_table(("app", "name"), [(a["id"], a["name"]) for a in slack["apps"]]))
        parts += [f"<p class=note>{e(n)}</p>" for n in slack.get("notes", [])]
    parts += [
        "<h2>Evidence</h2>",
        _table(
            ("", ""),
            [
                ("Log origin", header["log"]["origin"]),
                ("Checkpoint tree size", checkpoint["tree_size"]),
                ("Checkpoint root hash (base64)", checkpoint["root_hash"]),
                ("Log entries in the bundle", summary["bundle_entries"]),
            ],
        ),
        _table(("file", "SHA-256"), sorted(files.items())),
        "<h3>How to verify</h3><p>Obtain the log's verifier key from a source you trust "
        "(not from this report), then run:</p>",
        f"<pre>trailseal verify-bundle {e(summary['bundle_file'])} --key '&lt;verifier key&gt;'"
        "</pre><p>The bundle holds every log entry this report is made of, with RFC 9162 "
        "inclusion proofs into the signed checkpoint above; it checks offline. Each row's "
        "<code>leaf_hash</code> is SHA-256(0x00 || entry bytes) of the entry at its "
        "<code>index</code>.</p>",
        "<p>Verifier keys recorded by the log (informational):</p>",
        "".join(f"<pre>{e(k)}</pre>" for k in header["log"]["verifier_keys"]),
        "</body></html>\n",
    ]
    return "".join(parts)


# -- Slack blocks ------------------------------------------------------------------------

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150


def _mrkdwn(text: Any) -> str:
    """Slack's three escapes for text that is not markup (& < >)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_TEXT)}}


def summary_blocks(summary: dict[str, Any], header: dict[str, Any]) -> list[dict[str, Any]]:
    """Block Kit blocks within Slack's limits (50 blocks, 3,000 characters a section,
    10 fields of 2,000, a 150-character header)."""
    request, scope = header["request"], header["request"]["scope"]
    fields = [
        f"*Events*\n{summary['rows']:,}",
        f"*Time range*\n{_mrkdwn(scope['start'])} to {_mrkdwn(scope['end'])}",
        f"*External members*\n{'included' if scope['include_external'] else 'left out'}"
        f" ({summary['excluded_external_rows']:,} events)",
        f"*Checkpoint*\ntree size {header['checkpoint']['tree_size']:,}",
    ]
    title = f"Audit report: {scope['kind']} audit {request['id']}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, MAX_HEADER_TEXT)}},
        _section(
            f"Requested by <@{_mrkdwn(request['requester'])}> · "
            f"purpose: {_mrkdwn(request['purpose'])}"
        ),
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _clip(f, MAX_FIELD_TEXT)} for f in fields],
        },
    ]
    if summary["by_action"]:
        lines = [f"• `{_mrkdwn(a)}` {n:,}" for a, n in summary["by_action"][:10]]
        blocks.append(_section("*Top actions*\n" + "\n".join(lines)))
    if summary["by_actor"]:
        lines = [f"• {_mrkdwn(a)} {n:,}" for a, n in summary["by_actor"][:10]]
        blocks.append(_section("*Top actors*\n" + "\n".join(lines)))
    notes = (summary.get("slack") or {}).get("notes") or []
    if notes:
        blocks.append(_section("*Notes*\n" + "\n".join(f"• {_mrkdwn(n)}" for n in notes[:10])))
    blocks += [
        {"type": "divider"},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _clip(
                        f"Root `{header['checkpoint']['root_hash']}` · verify offline: "
                        f"`trailseal verify-bundle {_mrkdwn(summary['bundle_file'])} "
                        "--key '&lt;verifier key&gt;'`",
                        MAX_SECTION_TEXT,
                    ),
                }
            ],
        },
    ]
    return blocks[:MAX_BLOCKS]
