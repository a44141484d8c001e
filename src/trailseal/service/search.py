"""The search index: derived from the log, rebuilt at will (``search.db``).

Every answer still comes from the log itself: the index only says which indexes match,
and each hit carries its leaf hash so the caller can ask for, or check, a proof. The
index catches up with the log before each query (read-your-writes); delete the file and
it is rebuilt from the entries.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from trailseal.errors import FormatError, StorageError
from trailseal.ledger import Ledger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    log TEXT NOT NULL,
    idx INTEGER NOT NULL,
    time TEXT,
    source TEXT,
    class TEXT,
    action TEXT,
    actor TEXT,
    correlation TEXT,
    event_id TEXT,
    targets TEXT,
    PRIMARY KEY (log, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_time ON events (log, time);
CREATE INDEX IF NOT EXISTS events_action ON events (log, action);
CREATE INDEX IF NOT EXISTS events_actor ON events (log, actor);
CREATE INDEX IF NOT EXISTS events_correlation ON events (log, correlation);
CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5 (body, log UNINDEXED,
    idx UNINDEXED);
"""

MAX_LIMIT = 1000
_BATCH = 2000


def normalize_time(text: str) -> str:
    """RFC 3339 → UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` so that text order is time order."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise FormatError(f"{text!r} is not an RFC 3339 time") from e
    if moment.tzinfo is None:
        raise FormatError(f"{text!r} has no time zone; add Z or an offset")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError as e:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise FormatError(f"{text!r} is out of range as a UTC time") from e
    # isoformat pads the year to four digits (strftime's %Y does not, for years < 1000).
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class Query:
    """Search filters; every given filter must match."""

    since: str | None = None
    until: str | None = None
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    source: str | None = None
    log_class: str | None = None
    correlation: str | None = None
    text: str | None = None


def _strings(value: Any, skip_content: bool = True) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, False)
    elif isinstance(value, dict):
        for k, v in value.items():
            if skip_content and k == "content":
                continue
            yield from _strings(v, False)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _row(log: str, index: int, data: bytes) -> tuple[tuple[Any, ...], str]:
    try:
        rec = orjson.loads(data)
    except orjson.JSONDecodeError:
        rec = {}
    if not isinstance(rec, dict):
        rec = {}
    actor = _dict(rec.get("actor"))
    corr = _dict(rec.get("correlation"))
    targets = rec.get("targets")
    if not isinstance(targets, list):
        targets = []
    time = rec.get("time")
    try:
        time = normalize_time(time) if isinstance(time, str) else None
    except FormatError:
        time = None
    target_ids = " ".join(
        str(t.get("id")) for t in targets if isinstance(t, dict) and t.get("id") is not None
    )
    row = (
        log,
        index,
        time,
        rec.get("source"),
        rec.get("class"),
        rec.get("action"),
        actor.get("id"),
        corr.get("id"),
        rec.get("id"),
        f" {target_ids} " if target_ids else None,
    )
    return row, "\n".join(_strings(rec))


def encode_cursor(index: int) -> str:
    """An opaque cursor for the page after ``index``."""
    return base64.urlsafe_b64encode(orjson.dumps({"before": index})).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The index a cursor points before."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = value["before"]
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
        raise FormatError("the cursor is not one this server issued") from e
    if not isinstance(before, int) or isinstance(before, bool) or not 0 <= before < 1 << 63:
        raise FormatError("the cursor is not one this server issued")
    return before


class SearchIndex:
    """A SQLite + FTS5 index over the logs' entries."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")  # derived data: rebuildable
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open search index {path}: {e}") from e

    def close(self) -> None:
        """Release the connection."""
        self._conn.close()

    def catch_up(self, ledger: Ledger) -> int:
        """Index every entry of the log not indexed yet; returns how many were added."""
        log = ledger.log.name
        size = ledger.tree_size()
        added = 0
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT max(idx) FROM events WHERE log = ?", (log,)
                ).fetchone()
                start = 0 if row[0] is None else row[0] + 1
                while start < size:
                    end = min(start + _BATCH, size)
                    rows, texts = [], []
                    for entry in ledger.storage.read_entries(ledger.log.id, start, end):
                        r, text = _row(log, entry.index, entry.data)
                        rows.append(r)
                        texts.append((text, log, entry.index))
                    self._conn.execute("BEGIN")
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                    )
                    self._conn.executemany(
                        "INSERT INTO events_text (body, log, idx) VALUES (?, ?, ?)", texts
                    )
                    self._conn.execute("COMMIT")
                    added += len(rows)
                    start = end
            except sqlite3.Error as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StorageError(f"search index failed: {e}") from e
        return added

    def text_matches(
        self, log: str, query: Query, after_rowid: int = 0, limit: int = MAX_LIMIT
    ) -> list[tuple[int, int]]:
        """``(rowid, index)`` of entries matching ``query.text`` (and ``since``/``until``),
        in log order, after the text-index row ``after_rowid``: pass the last rowid back
        for the next page.

        Pages through the full-text table in its own row order (a log's entries are
        indexed in index order), so a page costs its own size; :meth:`search` with a
        text filter re-runs the whole match for every page, which is fine for a page of
        an API answer but quadratic for a report of every match.
        """
        if not query.text or "\x00" in query.text:
            raise FormatError("a text match needs a query text without NUL characters")
        where = ["events_text MATCH ?", "events_text.rowid > ?", "events_text.log = ?"]
        args: list[Any] = ['"' + query.text.replace('"', '""') + '"', after_rowid, log]
        if query.since:
            where.append("e.time >= ?")
            args.append(normalize_time(query.since))
        if query.until:
            where.append("e.time < ?")
            args.append(normalize_time(query.until))
        sql = (
            "SELECT events_text.rowid, events_text.idx FROM events_text"  # noqa: S608
            " JOIN events e ON e.log = events_text.log AND e.idx = events_text.idx"
            f" WHERE {' AND '.join(where)} ORDER BY events_text.rowid LIMIT ?"
        )
        args.append(min(max(limit, 1), MAX_LIMIT))
        with self._lock:
            try:
                return [(r[0], r[1]) for r in self._conn.execute(sql, args)]
            except sqlite3.Error as e:
                raise StorageError(f"search failed: {e}") from e

    def search(
        self,
        log: str,
        query: Query,
        limit: int = 100,
        before: int | None = None,
    ) -> list[int]:
        """Matching indexes, newest first, at most ``limit``, all below ``before``."""
        where = ["log = ?"]
        args: list[Any] = [log]
        if before is not None:
            where.append("idx < ?")
            args.append(before)
        if query.since:
            where.append("time >= ?")
            args.append(normalize_time(query.since))
        if query.until:
            where.append("time < ?")
            args.append(normalize_time(query.until))
        for column, value in (
            ("actor", query.actor),
            ("action", query.action),
            ("source", query.source),
            ("class", query.log_class),
            ("correlation", query.correlation),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.target is not None:
            where.append("instr(targets, ?) > 0")
            args.append(f" {query.target} ")
        if query.text:
            if "\x00" in query.text:  # FTS5 reads a NUL as the end of the query string
                raise FormatError("the free-text query contains a NUL character")
            phrase = '"' + query.text.replace('"', '""') + '"'
            where.append(
                "idx IN (SELECT idx FROM events_text WHERE events_text MATCH ? AND log = ?)"
            )
            args += [phrase, log]
        clauses = " AND ".join(where)  # fixed column names; every value is bound
        sql = f"SELECT idx FROM events WHERE {clauses} ORDER BY idx DESC LIMIT ?"  # noqa: S608
        args.append(min(max(limit, 1), MAX_LIMIT))
        with self._lock:
            try:
                return [r[0] for r in self._conn.execute(sql, args)]
            except sqlite3.Error as e:
                raise StorageError(f"search failed: {e}") from e
