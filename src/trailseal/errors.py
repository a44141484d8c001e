"""The errors trailseal raises, in one hierarchy.

Every error carries a human explanation through :meth:`Error.diagnostics`; the CLI prints
it and the HTTP layer maps the class to a status code (RFC 9457). Exceptions never know
about HTTP themselves.

::

    Error
    ├── FormatError            bytes that are not a valid note, checkpoint, key, receipt, bundle
    ├── EntryError             a record that cannot become a log entry (not an object, too big)
    │   └── ValidationError    an event that does not match the event schema, with every reason
    ├── VerificationError      something does not verify
    │   ├── ProofError         an inclusion or consistency proof is wrong
    │   ├── SignatureError     no trusted signature, or a trusted one that fails
    │   ├── InconsistencyError two checkpoints that cannot both be true (a fork, a rollback)
    │   └── TamperError        stored data differs from what the tree commits to
    ├── NotFoundError          no such log, entry, index or checkpoint
    ├── AlreadyExistsError     a log name, origin or data directory is already taken
    ├── ConfigError            a data directory, key file or setting is missing or unsafe
    ├── AuthError              no valid credentials (401)
    │   └── ForbiddenError     valid credentials without the needed role (403)
    ├── StorageError           the database failed; nothing was acknowledged
    │   └── ConflictError      another writer moved the tree; the batch can be retried
    ├── OverloadedError        the append queue is full; retry after ``retry_after_s``
    └── SlackError             Slack's Web API refused a call; ``code`` is Slack's error code
"""

from __future__ import annotations


class Error(Exception):
    """Base of every trailseal error."""

    def diagnostics(self) -> str:
        """A human explanation of what went wrong and what to do next."""
        return str(self)


class FormatError(Error):
    """Input bytes are not in the format they claim to be."""


class EntryError(Error):
    """A record cannot become a log entry."""


class ValidationError(EntryError):
    """An event does not match the published event schema (or the server's rules)."""

    def __init__(self, message: str, *, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]

    def diagnostics(self) -> str:
        return "\n".join([str(self), *(f"  - {e}" for e in self.errors)])


class VerificationError(Error):
    """Something that must verify does not."""


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify (RFC 9162 §2.1.3.2, §2.1.4.2)."""


class SignatureError(VerificationError):
    """A signed note has no valid signature from a trusted key (C2SP signed-note)."""


class InconsistencyError(VerificationError):
    """Two checkpoints of one log that cannot both be honest.

    Carries its evidence: both checkpoints' texts and, when there is one, the
    consistency proof that failed between them.
    """

    def __init__(
        self,
        message: str,
        *,
        older: str | None = None,
        newer: str | None = None,
        proof: list[bytes] | None = None,
    ) -> None:
        super().__init__(message)
        self.older = older
        self.newer = newer
        self.proof = proof or []

    def diagnostics(self) -> str:
        parts = [str(self)]
        if self.older:
            parts.append("older checkpoint:\n" + self.older)
        if self.newer:
            parts.append("newer checkpoint:\n" + self.newer)
        return "\n".join(parts)


class TamperError(VerificationError):
    """Stored data differs from what the tree or a signed checkpoint commits to."""

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        expected: bytes | None = None,
        found: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.expected = expected
        self.found = found

    def diagnostics(self) -> str:
        parts = [str(self)]
        if self.index is not None:
            parts.append(f"index: {self.index}")
        if self.expected is not None:
            parts.append(f"expected: {self.expected.hex()}")
        if self.found is not None:
            parts.append(f"found:    {self.found.hex()}")
        return "\n".join(parts)


class NotFoundError(Error):
    """No such log, entry, index or checkpoint."""


class AlreadyExistsError(Error):
    """A log name, origin or data directory is already taken."""


class ConfigError(Error):
    """A data directory, key file or setting is missing, malformed or unsafe."""


class KeyMissingError(ConfigError):
    """A log's signing key file is not on this node (it can read the log, not sign)."""


class AuthError(Error):
    """The caller presented no valid credentials."""


class ForbiddenError(AuthError):
    """The caller's role does not allow this."""


class ReadOnlyNodeError(ForbiddenError):
    """This node serves reads only (``serve --read-only``); writes go to another node."""


class StorageError(Error):
    """The storage engine failed; the operation was rolled back and nothing acknowledged."""


class ConflictError(StorageError):
    """Another writer changed the log while this batch was being integrated."""


class OverloadedError(Error):
    """The append queue is full; the caller should retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SlackError(Error):
    """Slack's Web API answered an error (``code`` is Slack's, e.g. ``missing_scope``)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
