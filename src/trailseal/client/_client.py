"""The :class:`Client`: the SDK's API (append, batches, buffering, search, reads, keys,
checkpoints), built on its parts: the :class:`~trailseal.client.transport.Session` that
sends requests, the :class:`~trailseal.client.verification.Pins` and
:class:`~trailseal.client.verification.Answers` that check the answers, the
:class:`~trailseal.client.consistency.CheckpointTracker` that checks history and the
:class:`~trailseal.client.buffering.EventBuffer` that queues buffered events.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import httpx
import orjson

from trailseal.client.buffering import MAX_BATCH_EVENTS, EventBuffer, _chunks
from trailseal.client.consistency import CheckpointTracker
from trailseal.client.delegated import Delegated
from trailseal.client.results import AppendReceipt, Entry, LogKeys
from trailseal.client.transport import Session, _json
from trailseal.client.verification import Answers, Pins
from trailseal.core.checkpoint import SignedCheckpoint
from trailseal.errors import ConfigError

LOGGER = logging.getLogger("trailseal.client")

CONSISTENCY_PURPOSE: Final = "trailseal client: checking that the log only grows"

_SEARCH_FILTERS: Final = {
    "since": "since",
    "until": "until",
    "actor": "actor",
    "action": "action",
    "target": "target",
    "source": "source",
    "class": "class",
    "class_": "class",
    "log_class": "class",
    "correlation_id": "correlation_id",
    "q": "q",
}


class Client:
    """A synchronous, thread-safe client of one trailseal log.

    ``verifier_keys`` pins the log's keys (``name+keyid+base64`` strings, e.g. from
    ``trailseal keys`` or :meth:`verifier_keys` fetched once over a channel you trust);
    without them receipts are parsed but not verified. ``state_path`` persists the latest
    verified checkpoint and turns on consistency checking of every checkpoint seen
    (``track_consistency`` overrides that; without a state path the state lives in memory).

    Buffering: :meth:`buffer` queues an event, :meth:`flush` sends the queue as batches;
    the queue is flushed when it reaches ``batch_size`` and on :meth:`close` (and leaving a
    ``with`` block). With ``flush_interval_s``, a daemon thread flushes every that many
    seconds and whenever ``batch_size`` is reached, so :meth:`buffer` never does network
    I/O; :meth:`close` stops it.

    ``clock`` (seconds since the epoch), ``sleep`` and ``rng`` are injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        log: str = "default",
        *,
        verifier_keys: Sequence[str] | None = None,
        origin: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        track_consistency: bool | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        retry_after_cap_s: float = 30.0,
        batch_size: int = 100,
        max_batch_events: int = MAX_BATCH_EVENTS,
        max_buffer_events: int = 10_000,
        flush_interval_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries < 0 or batch_size < 1 or max_batch_events < 1 or max_buffer_events < 1:
            raise ValueError(
                "max_retries must be >= 0; batch_size, max_batch_events and "
                "max_buffer_events must be >= 1"
            )
        self.base_url = base_url.rstrip("/")
        self.log = log
        self.timeout_s = timeout_s

        self._pins = Pins(verifier_keys, origin)
        path = Path(state_path) if state_path is not None else None
        if track_consistency is None:
            track_consistency = path is not None
        self._tracker = CheckpointTracker(
            self._pins,
            log,
            path,
            track=track_consistency,
            fetch_proof=self._consistency_proof,
        )
        self._answers = Answers(self._pins, self._tracker.observe)
        self._session = Session(
            self.base_url,
            api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            retry_after_cap_s=retry_after_cap_s,
            transport=transport,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        self._buffer = EventBuffer(
            batch_size=batch_size,
            max_batch_events=max_batch_events,
            max_buffer_events=max_buffer_events,
            send_batch=self._send_batch,
        )
        if flush_interval_s is not None:
            self.start_flusher(flush_interval_s)

    def __repr__(self) -> str:
        pinned = len(self._pins.verifiers)
        return (
            f"Client(base_url={self.base_url!r}, log={self.log!r}, api_key=***, "
            f"pinned_keys={pinned}, state_path={self._tracker.state_path!r})"
        )

    # Settings kept by the part that uses them: setting one here takes effect there.
    max_retries = Delegated[int]("_session")
    backoff_s = Delegated[float]("_session")
    max_backoff_s = Delegated[float]("_session")
    retry_after_cap_s = Delegated[float]("_session")
    batch_size = Delegated[int]("_buffer")
    max_batch_events = Delegated[int]("_buffer")
    max_buffer_events = Delegated[int]("_buffer")
    last_flush_error = Delegated[Exception | None]("_buffer")
    """The last error of the background flusher (None after a successful flush)."""

    @property
    def _http(self) -> httpx.Client:
        """The connection pool (its auth's repr hides the API key)."""
        return self._session.http

    @property
    def _flusher(self) -> threading.Thread | None:
        """The background flusher thread, if one was started."""
        return self._buffer.flusher

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # do not mask the exception leaving the block
            LOGGER.warning("flush on exit failed", extra={"error": type(e).__name__})

    def close(self) -> None:
        """Stop the background flusher, flush the buffer, release connections.

        Raises the final flush's error, if any (the connections are released anyway).
        """
        if self._session.closed:
            return
        self._buffer.stop()
        try:
            self.flush()
        finally:
            self._session.close()

    @property
    def origin(self) -> str | None:
        """The pinned origin (given, from the state file, or from the first checkpoint)."""
        return self._pins.origin

    @property
    def state(self) -> SignedCheckpoint | None:
        """The latest verified checkpoint the consistency check holds."""
        return self._tracker.state

    # -- HTTP ------------------------------------------------------------------------

    def _log_path(self, *parts: str) -> str:
        return "/".join(["/v1/logs", quote(self.log, safe=""), *parts])

    def _consistency_proof(self, first: int, second: int) -> dict[str, Any]:
        response = self._session.request(
            "GET",
            self._log_path("proof", "consistency"),
            params={"first": first, "second": second},
            purpose=CONSISTENCY_PURPOSE,
        )
        return _json(response)

    # -- writing ---------------------------------------------------------------------

    def append(self, event: Mapping[str, Any]) -> AppendReceipt:
        """Append one event; returns once it is durable, with its receipt.

        Raises :class:`Conflict` if the event's id was stored with other content.
        """
        sent = _with_id(event)
        response = self._session.request("POST", self._log_path("events"), body=orjson.dumps(sent))
        return self._answers.append_receipt(_json(response), sent)

    def append_batch(self, events: Sequence[Mapping[str, Any]]) -> list[AppendReceipt]:
        """Append events as batches (all or nothing each), in order, with a receipt each.

        Batches hold at most ``max_batch_events`` events (and 15 MiB). If a later batch
        fails, the earlier ones are stored: the error is raised all the same.
        """
        prepared = [_with_id(e) for e in events]
        out: list[AppendReceipt] = []
        for chunk, body in _chunks(prepared, self.max_batch_events):
            out += self._send_batch(chunk, body)
        return out

    def _send_batch(self, chunk: list[dict[str, Any]], body: bytes) -> list[AppendReceipt]:
        response = self._session.request("POST", self._log_path("events", "batch"), body=body)
        return self._answers.batch_receipts(_json(response), chunk)

    # -- buffering -------------------------------------------------------------------

    def buffer(self, event: Mapping[str, Any]) -> None:
        """Queue an event for the next :meth:`flush`; it is checked against the event
        schema here, so that one bad event cannot sink a whole batch later.

        Flushes when ``batch_size`` events are queued: in this thread, or, with a
        background flusher, by waking it (then this never does network I/O). Raises
        :class:`InvalidEvent` or :class:`BufferFull`.
        """
        if self._buffer.put(_with_id(event)):
            self.flush()

    @property
    def buffered(self) -> int:
        """How many events wait in the buffer."""
        return len(self._buffer)

    def flush(self) -> list[AppendReceipt]:
        """Send every buffered event; returns their receipts.

        A batch the server refuses as malformed (400, 413, 415, 409, 422) or whose
        receipts do not verify is dropped; on any other failure (no answer, 401, 403,
        404, 429, 5xx) it and the rest stay buffered for the next flush, which resends
        them under the same ids. Either way the error is raised.
        """
        return self._buffer.flush()

    def start_flusher(self, interval_s: float) -> None:
        """Start the background flusher (a daemon thread) unless one is running."""
        self._buffer.start(interval_s)

    # -- reading ---------------------------------------------------------------------

    def search(
        self, *, purpose: str | None = None, page_size: int = 100, **filters: str
    ) -> Iterator[dict[str, Any]]:
        """Search the log, newest first, following every page.

        Filters: ``since``, ``until`` (RFC 3339), ``actor``, ``action``, ``target``,
        ``source``, ``log_class`` (or ``class_``), ``correlation_id``, ``q``. Yields the
        server's hits: ``{"index", "leaf_hash" (base64), "entry"}``. With pinned keys each
        hit's leaf hash is checked against its entry. Every page is an audited read.
        """
        params: dict[str, str | int] = {"limit": page_size}
        for name, value in filters.items():
            if name not in _SEARCH_FILTERS:
                raise TypeError(f"unknown search filter {name!r}")
            if value is not None:
                params[_SEARCH_FILTERS[name]] = value
        return self._pages(params, purpose)

    def _pages(self, params: dict[str, str | int], purpose: str | None) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = dict(params, cursor=cursor) if cursor else params
            data = _json(
                self._session.request("GET", self._log_path("events"), params=page, purpose=purpose)
            )
            hits = data.get("hits")
            if not isinstance(hits, list):
                raise self._pins.lie("the search answer has no hits")
            for hit in hits:
                if self._pins.verifiers:
                    self._answers.check_hit(hit)
                yield hit
            next_cursor = data.get("next_cursor")
            if not isinstance(next_cursor, str) or not next_cursor:
                return
            cursor = next_cursor

    def get_entry(self, index: int, *, purpose: str | None = None) -> Entry:
        """The entry at ``index``, with a receipt into the latest checkpoint."""
        data = _json(
            self._session.request(
                "GET", self._log_path("entries", str(int(index))), purpose=purpose
            )
        )
        entry = self._answers.entry(data)
        if entry.index != index:
            raise self._pins.lie(f"asked for index {index}, got index {entry.index}")
        return entry

    def get_event(self, event_id: str, source: str = "api", *, purpose: str | None = None) -> Entry:
        """The entry holding the event ``(source, event_id)``, with a receipt."""
        data = _json(
            self._session.request(
                "GET",
                self._log_path("events", quote(event_id, safe="")),
                params={"source": source},
                purpose=purpose,
            )
        )
        entry = self._answers.entry(data)
        if entry.record.get("id") != event_id or entry.record.get("source") != source:
            raise self._pins.lie(
                f"asked for event ({source!r}, {event_id!r}), got "
                f"({entry.record.get('source')!r}, {entry.record.get('id')!r})"
            )
        return entry

    def verifier_keys(self) -> LogKeys:
        """The log's origin and verifier keys as the server states them.

        Trust on first use: fetch them once over a channel you trust and pin them
        (``verifier_keys=``); a lying server would simply hand out its own key.
        """
        return self._answers.log_keys(_json(self._session.request("GET", self._log_path("keys"))))

    def checkpoint(self) -> SignedCheckpoint:
        """The log's latest checkpoint: verified if keys are pinned (and checked for
        consistency if that is on), merely parsed otherwise."""
        if self._pins.verifiers and self._tracker.track:
            return self.check_consistency()
        return self._answers.checkpoint(self._checkpoint_bytes())

    def check_consistency(self) -> SignedCheckpoint:
        """Fetch the latest checkpoint, verify it, and prove it extends the stored one.

        Raises :class:`~trailseal.errors.InconsistencyError` if the server's history was
        rewritten (a fork, a rollback); the stored state then stays as it was.
        """
        if not self._pins.verifiers:
            raise ConfigError("checking consistency needs pinned verifier_keys")
        return self._tracker.check_latest(
            lambda: self._pins.verify_checkpoint(self._checkpoint_bytes())
        )

    def _checkpoint_bytes(self) -> bytes:
        return self._session.request("GET", self._log_path("checkpoint")).content


def _with_id(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` with an ``id`` (its own or a fresh uuid4 hex)."""
    if not isinstance(event, Mapping):
        raise TypeError(f"an event is a dict, not {type(event).__name__}")
    out = dict(event)
    if "id" not in out:
        out["id"] = uuid.uuid4().hex
    return out
