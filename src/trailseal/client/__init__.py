"""The trailseal Python SDK: a synchronous HTTP client that checks what the server says.

::

    from trailseal.client import Client

    with Client("https://audit.example", api_key, verifier_keys=[vkey],
                state_path=Path("~/.trailseal/default.json").expanduser()) as client:
        receipt = client.append({"action": "channel.renamed", "actor": {"id": "U1"}})
        receipt.receipt_text        # c2sp.org/tlog-proof@v1, verifiable offline forever
        for hit in client.search(action="channel.renamed"):
            ...

What the client guarantees:

* **Idempotent retries.** An event without an ``id`` gets one (a uuid4) *before* the first
  attempt, so every retry of that call carries the same idempotency key and the log holds
  the event once (the retry is answered ``duplicate``). Connection errors, 429, 502, 503
  and 504 are retried with exponential backoff and jitter, honouring ``Retry-After``
  (capped); other 4xx are never retried. The id is assigned to a copy: your dict is not
  changed, so to retry across calls yourself, set ``id`` yourself.
* **Verified receipts.** With ``verifier_keys`` pinned, every receipt the server returns
  (append, batch, get_entry, get_event) is checked offline: a trusted signature on the
  checkpoint, the pinned ``origin`` (or, if none is given, the first verified
  checkpoint's origin, which is then pinned), and the inclusion of the leaf hash at the
  index; for entries, the leaf hash must also be the RFC 9162 hash of the entry's RFC 8785
  bytes. Any failure raises :class:`trailseal.errors.VerificationError`: the server lied.
* **History cannot be rewritten unnoticed.** With ``state_path``, the latest verified
  checkpoint is kept in a 0600 JSON file, written atomically. A checkpoint of a larger
  tree is accepted only with a verified RFC 9162 consistency proof from the stored one; an
  equal size must have the same root; a smaller size must be provably a prefix of the
  stored tree (a receipt may legitimately predate a concurrent answer), and the latest
  checkpoint (:meth:`Client.check_consistency`) may never be smaller: that is a rollback.
  Any failure raises :class:`trailseal.errors.InconsistencyError` carrying both
  checkpoints, and the state is not advanced. Note that each proof the client fetches is
  an audited read, so the server logs it (as an ``access.proof`` event).
* **Secrets stay secret.** The API key never appears in a repr, a log line or an
  exception; exceptions carry the server's problem+json fields, never the request body.

Errors (all subclasses of :class:`trailseal.errors.Error`, so ``.diagnostics()`` works)::

    ClientError                status, type, title, detail, errors, request_id, retry_after_s
    ├── ClientConnectionError  no answer after every retry (refused, reset, timed out)
    ├── ClientProtocolError    an answer that is not what the API promises
    ├── BufferFull             the buffer holds max_buffer_events already
    ├── BadRequest             400, 413, 415 and other 4xx
    ├── Unauthorized           401
    ├── Forbidden              403
    ├── NotFound               404
    ├── Conflict               409: the event id was stored with other content
    ├── InvalidEvent           422, or an event refused locally before it was buffered
    ├── RateLimited            429 after every retry
    └── ServerError            5xx
        └── ServiceUnavailable 503 after every retry

:class:`AuditLogHandler` sends Python ``logging`` records to the log as events.
"""

from __future__ import annotations

# Besides the names in ``__all__``, the constants of the former module stay importable
# from here (the ``X as X`` imports re-export them).
from trailseal.client._client import CONSISTENCY_PURPOSE as CONSISTENCY_PURPOSE
from trailseal.client._client import LOGGER as LOGGER
from trailseal.client._client import Client
from trailseal.client.buffering import MAX_BATCH_BYTES as MAX_BATCH_BYTES
from trailseal.client.buffering import MAX_BATCH_EVENTS as MAX_BATCH_EVENTS
from trailseal.client.consistency import STATE_FORMAT as STATE_FORMAT
from trailseal.client.errors import (
    BadRequest,
    BufferFull,
    ClientConnectionError,
    ClientError,
    ClientProtocolError,
    Conflict,
    Forbidden,
    InvalidEvent,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
)
from trailseal.client.handler import AuditLogHandler
from trailseal.client.results import AppendReceipt, Entry, LogKeys
from trailseal.client.transport import JSON as JSON
from trailseal.client.transport import PURPOSE_HEADER as PURPOSE_HEADER
from trailseal.client.transport import RETRY_STATUSES as RETRY_STATUSES
from trailseal.client.transport import USER_AGENT as USER_AGENT

__all__ = [
    "AppendReceipt",
    "AuditLogHandler",
    "BadRequest",
    "BufferFull",
    "Client",
    "ClientConnectionError",
    "ClientError",
    "ClientProtocolError",
    "Conflict",
    "Entry",
    "Forbidden",
    "InvalidEvent",
    "LogKeys",
    "NotFound",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
]

# The errors were defined in ``trailseal.client`` before it became a package; keep that
# their home, as tracebacks and AuditLogHandler's ``raw.exception.type`` name them by it.
for _error in (
    BadRequest,
    BufferFull,
    ClientConnectionError,
    ClientError,
    ClientProtocolError,
    Conflict,
    Forbidden,
    InvalidEvent,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
):
    _error.__module__ = __name__
del _error
