"""Batches: how events are split into batch requests (``_chunks``), and the
:class:`EventBuffer`, which holds the events queued by :meth:`Client.buffer` until a
flush sends them as batches, with the optional background thread that flushes it.

A flush keeps what may pass later (no answer, 401, 403, 404, 429, 5xx) for the next
flush, which resends it under the same ids, and drops a batch that can never pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson

from trailseal.client.errors import BadRequest, BufferFull, ClientError, Conflict, InvalidEvent
from trailseal.client.results import AppendReceipt
from trailseal.errors import FormatError, VerificationError
from trailseal.model.schema import schema_errors
from trailseal.service.search import normalize_time

LOGGER = logging.getLogger("trailseal.client")

MAX_BATCH_EVENTS: Final = 1000
MAX_BATCH_BYTES: Final = 15 << 20
"""Below the server's default 16 MiB batch body limit."""

_DROP_BATCH_ON = (BadRequest, Conflict, InvalidEvent, VerificationError)
"""Errors after which a flushed batch is dropped rather than kept for the next flush."""

_Event = dict[str, Any]


class EventBuffer:
    """A thread-safe queue of events (each with its ``id`` set), flushed as batches.

    ``send_batch`` appends one batch (events and request body). Once stopped, nothing
    more can be queued.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        max_batch_events: int,
        max_buffer_events: int,
        send_batch: Callable[[list[_Event], bytes], list[AppendReceipt]],
    ) -> None:
        self.batch_size = batch_size
        self.max_batch_events = max_batch_events
        self.max_buffer_events = max_buffer_events
        self._send_batch = send_batch
        self._buffer: list[_Event] = []
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self.flusher: threading.Thread | None = None
        self._stopping = False
        self.last_flush_error: Exception | None = None
        """The last error of the background flusher (None after a successful flush)."""

    def put(self, event: _Event) -> bool:
        """Check ``event`` against the event schema, then queue it; whether the caller
        must now flush (a full batch waits and no background flusher will send it).
        Raises :class:`InvalidEvent` or :class:`BufferFull`."""
        problems = schema_errors(event)
        if not problems and isinstance(event.get("time"), str):
            try:
                normalize_time(event["time"])
            except FormatError as e:
                problems = [f"event.time: {e}"]
        if problems:
            raise InvalidEvent(
                "the event does not match the event schema; it was not buffered",
                errors=problems,
                detail="; ".join(problems),
            )
        orjson.dumps(event)  # a TypeError now, not at flush time
        with self._cond:
            if self._stopping:
                raise ClientError("the client is closed")
            if len(self._buffer) >= self.max_buffer_events:
                raise BufferFull(
                    f"{len(self._buffer)} events are waiting to be sent; the event was "
                    "not buffered (is the server reachable?)"
                )
            self._buffer.append(event)
            full = len(self._buffer) >= self.batch_size
            background = self.flusher is not None
            if full and background:
                self._cond.notify_all()
        return full and not background

    def __len__(self) -> int:
        with self._cond:
            return len(self._buffer)

    def flush(self) -> list[AppendReceipt]:
        """Send every buffered event; see :meth:`Client.flush`."""
        with self._flush_lock:
            with self._cond:
                pending, self._buffer = self._buffer, []
            out: list[AppendReceipt] = []
            chunks = list(_chunks(pending, self.max_batch_events))
            for i, (chunk, body) in enumerate(chunks):
                try:
                    out += self._send_batch(chunk, body)
                except _DROP_BATCH_ON:
                    # The batch can never succeed as it is, or it was stored and the
                    # answer lied: resending would not help.
                    keep = [e for c, _ in chunks[i + 1 :] for e in c]
                    with self._cond:
                        self._buffer[:0] = keep
                    raise
                except BaseException:
                    # Anything else may pass later; resending is idempotent (ids are set).
                    keep = [e for c, _ in chunks[i:] for e in c]
                    with self._cond:
                        self._buffer[:0] = keep
                    raise
            return out

    def start(self, interval_s: float) -> None:
        """Start the background flusher (a daemon thread) unless one is running."""
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        with self._cond:
            if self.flusher is not None or self._stopping:
                return
            flusher = threading.Thread(
                target=self._flush_loop, args=(interval_s,), name="trailseal-flush", daemon=True
            )
            self.flusher = flusher
        flusher.start()

    def stop(self) -> None:
        """Refuse new events, and stop the background flusher (waiting for its flush in
        flight, unless called from it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            flusher = self.flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()

    def _flush_loop(self, interval_s: float) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or len(self._buffer) >= self.batch_size,
                    timeout=interval_s,
                )
                if self._stopping:
                    return
                if not self._buffer:
                    continue
            try:
                self.flush()
                self.last_flush_error = None
            except Exception as e:
                self.last_flush_error = e
                LOGGER.warning(
                    "background flush failed",
                    extra={
                        "error": type(e).__name__,
                        "status": getattr(e, "status", None),
                        "buffered": len(self),
                    },
                )
                with self._cond:  # do not spin while the server is down
                    self._cond.wait_for(lambda: self._stopping, timeout=interval_s)


def _chunks(events: list[_Event], max_events: int) -> Iterator[tuple[list[_Event], bytes]]:
    """Consecutive batches of at most ``max_events`` events and MAX_BATCH_BYTES, each with
    its request body."""
    chunk: list[_Event] = []
    parts: list[bytes] = []
    size = 2
    for event in events:
        data = orjson.dumps(event)
        if chunk and (len(chunk) >= max_events or size + len(data) + 1 > MAX_BATCH_BYTES):
            yield chunk, b"[" + b",".join(parts) + b"]"
            chunk, parts, size = [], [], 2
        chunk.append(event)
        parts.append(data)
        size += len(data) + 1
    if chunk:
        yield chunk, b"[" + b",".join(parts) + b"]"
