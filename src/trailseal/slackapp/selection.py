"""Which log entries an audit covers, read in log order with bounded memory.

Rules (every kind also needs ``start <= time < end`` on the event's ``time``):

=========  ===============================================================================
kind       an event is in scope when
=========  ===============================================================================
channel    ``context.channel`` or a target's id is one of ``scope.channels``
user       ``actor.id`` or a target's id is one of ``scope.users``
app        ``context.app``, ``actor.id`` or a target's id is one of ``scope.apps``
team       ``context.workspace``, ``context.enterprise`` or ``actor.team`` is the team
query      the search index's free-text match over non-content fields (the same phrase
           match as ``GET /v1/logs/{log}/events?q=``)
=========  ===============================================================================

Channels, users and apps given beside a kind's own ids narrow it with their own rule
above (the form says users do, and approvers see all of them in the scope they approve):
a user audit with channels covers what those people did in those channels.

The first four scan the entries in pages (:data:`PAGE` at a time), skipping an entry
without parsing it when none of the scope's ids occurs in its bytes. ``query`` asks the
search index (caught up first) for matching indexes in ascending pages and reads those
entries. Either way, at most one page is in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from trailseal.errors import FormatError
from trailseal.ledger import Ledger
from trailseal.service.search import Query, SearchIndex, normalize_time
from trailseal.slackapp.model import AuditRequest, AuditScope
from trailseal.storage.base import StoredEntry

PAGE = 4096
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:@-]+")

Progress = Callable[[int], None]
Selected = tuple[StoredEntry, dict[str, Any]]


def home_team(request: AuditRequest) -> str:
    """The organization whose members are not external: the scope's team, else the
    requester's."""
    return request.scope.team_id or request.team_id


def check_scope(scope: AuditScope) -> tuple[str, str]:
    """The scope's time bounds, normalized; raises FormatError on a scope that selects
    nothing by construction (no ids for its kind, an empty or inverted time range)."""
    start, end = normalize_time(scope.start), normalize_time(scope.end)
    if start >= end:
        raise FormatError(f"the time range is empty: start {scope.start} is not before {scope.end}")
    needed = {
        "channel": scope.channels,
        "user": scope.users,
        "app": scope.apps,
        "query": (scope.query or "").strip(),
    }
    if scope.kind in needed and not needed[scope.kind]:
        what = {"channel": "channels", "user": "users", "app": "apps", "query": "query"}
        raise FormatError(f"a {scope.kind} audit needs at least one of scope.{what[scope.kind]}")
    return start, end


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _target_ids(record: dict[str, Any]) -> set[str]:
    targets = record.get("targets")
    if not isinstance(targets, list):
        return set()
    return {str(t["id"]) for t in targets if isinstance(t, dict) and "id" in t}


def in_scope(record: dict[str, Any], scope: AuditScope, team: str) -> bool:
    """The kind's rule of the module docstring, narrowed by the scope's other ids (time
    is checked separately)."""
    if scope.kind == "team" and team not in _team_ids(record):
        return False
    return narrowed(record, scope) and (
        scope.kind not in ("channel", "user", "app") or _matches(record, scope.kind, scope)
    )


def narrowed(record: dict[str, Any], scope: AuditScope) -> bool:
    """Whether every id list of the scope other than its kind's own admits ``record``
    (an empty list admits everything)."""
    return all(
        _matches(record, kind, scope)
        for kind in ("channel", "user", "app")
        if kind != scope.kind and _ids(scope, kind)
    )


def _ids(scope: AuditScope, kind: str) -> tuple[str, ...]:
    return {"channel": scope.channels, "user": scope.users, "app": scope.apps}[kind]


def _team_ids(record: dict[str, Any]) -> tuple[Any, ...]:
    actor, context = _dict(record.get("actor")), _dict(record.get("context"))
    return (context.get("workspace"), context.get("enterprise"), actor.get("team"))


def _matches(record: dict[str, Any], kind: str, scope: AuditScope) -> bool:
    """The rule of ``kind`` (channel, user or app) with the scope's ids of that kind."""
    ids = _ids(scope, kind)
    actor, context = _dict(record.get("actor")), _dict(record.get("context"))
    if kind == "channel" and context.get("channel") in ids:
        return True
    if kind == "user" and actor.get("id") in ids:
        return True
    if kind == "app" and (context.get("app") in ids or actor.get("id") in ids):
        return True
    return bool(_target_ids(record) & set(ids))


def _needles(scope: AuditScope, team: str) -> list[bytes] | None:
    """Byte strings of which at least one must occur in an entry in scope, or None when
    no cheap test is safe (an id JSON would escape)."""
    ids = {
        "channel": scope.channels,
        "user": scope.users,
        "app": scope.apps,
        "team": (team,),
    }.get(scope.kind, ())
    if not ids or not all(_PLAIN_ID.fullmatch(i) for i in ids):
        return None
    return [b'"' + i.encode() + b'"' for i in ids]


def _in_time(record: dict[str, Any], start: str, end: str) -> bool:
    when = record.get("time")
    if not isinstance(when, str):
        return False
    try:
        return start <= normalize_time(when) < end
    except FormatError:
        return False


def scan(
    ledger: Ledger,
    scope: AuditScope,
    team: str,
    tree_size: int,
    progress: Progress | None = None,
) -> Iterator[Selected]:
    """Entries in scope among indexes ``[0, tree_size)``, page by page."""
    start, end = check_scope(scope)
    needles = _needles(scope, team)
    for first in range(0, tree_size, PAGE):
        last = min(first + PAGE, tree_size)
        for entry in ledger.storage.read_entries(ledger.log.id, first, last):
            if needles is not None and not any(n in entry.data for n in needles):
                continue
            record = orjson.loads(entry.data)
            if (
                isinstance(record, dict)
                and _in_time(record, start, end)
                and in_scope(record, scope, team)
            ):
                yield entry, record
        if progress:
            progress(last - first)


def search(
    ledger: Ledger,
    index: SearchIndex,
    scope: AuditScope,
    tree_size: int,
    progress: Progress | None = None,
) -> Iterator[Selected]:
    """Entries matching a free-text query, via the search index, in ascending pages."""
    check_scope(scope)
    index.catch_up(ledger)
    query = Query(since=scope.start, until=scope.end, text=(scope.query or "").strip())
    after_rowid = 0
    reported = 0
    while True:
        page = index.text_matches(ledger.log.name, query, after_rowid, 1000)
        if not page:
            break
        after_rowid = page[-1][0]
        found = [i for _, i in page if i < tree_size]
        wanted = set(found)
        # One range read when the matches are dense, single reads when they are sparse.
        if found and found[-1] - found[0] < 4 * len(found):
            entries: Iterator[StoredEntry] = (
                e
                for e in ledger.storage.read_entries(ledger.log.id, found[0], found[-1] + 1)
                if e.index in wanted
            )
        else:
            entries = (ledger.entry(i) for i in found)
        for entry in entries:
            record = orjson.loads(entry.data)
            record = record if isinstance(record, dict) else {}
            if narrowed(record, scope):
                yield entry, record
        if progress and found:
            progress(found[-1] + 1 - reported)
            reported = found[-1] + 1
        if len(page) < 1000:
            break
    if progress and tree_size > reported:
        progress(tree_size - reported)


def select(
    ledger: Ledger,
    index: SearchIndex,
    request: AuditRequest,
    tree_size: int,
    progress: Progress | None = None,
) -> Iterator[Selected]:
    """The entries an audit request covers, in index order."""
    if request.scope.kind == "query":
        return search(ledger, index, request.scope, tree_size, progress)
    return scan(ledger, request.scope, home_team(request), tree_size, progress)
