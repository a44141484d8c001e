"""Where a node finds the files of a report: its data directory, and on a shared store the
service registry too.

One node: a report lives only in ``<data dir>/reports/<rid>/`` (0700, files 0600), as
built. Many nodes on one PostgreSQL store, behind one load balancer: a download link made
on one node is followed to any other, so the node that builds a report also copies its
files into the registry (:meth:`~trailseal.service.registry.Registry.put_report_file`),
and a node asked for a file it lacks fetches it from there into its own reports
directory. The fetched bytes are checked against the SHA-256 that the
``audit.report_generated`` event recorded before any of them is served: the database is
not trusted to hand back what was put in, the log is (DESIGN §1, principle 2).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from trailseal.errors import NotFoundError, TamperError
from trailseal.ledger import Clock, rfc3339
from trailseal.service.registry import Registry
from trailseal.slackapp.reports import file_sha256

LOGGER = logging.getLogger("trailseal.slackapp")


class ReportStore:
    """The report files of this node, backed by ``registry`` when the store is shared.

    ``registry`` is None on a store of one node's own: nothing is copied anywhere, and a
    file missing from the reports directory is gone.
    """

    def __init__(self, directory: Path, registry: Registry | None, clock: Clock) -> None:
        self.directory = directory
        self.registry = registry
        self._clock = clock
        self._checked: set[tuple[str, str, int, int]] = set()  # local files that matched
        self._lock = threading.Lock()

    def share(self, rid: str, directory: Path, sha256: Mapping[str, str]) -> None:
        """Copy a finished report's files (``sha256``: name → the SHA-256 the build
        computed, and the log will record) from ``directory`` into the registry; nothing
        on one node. Idempotent: a file already there with the same bytes is not sent
        again. A file that no longer has the bytes its build hashed is refused.
        """
        if self.registry is None:
            return
        at = rfc3339(self._clock())
        for name, expected in sorted(sha256.items()):
            found = self.registry.put_report_file(rid, name, directory / name, at)
            if found != expected:
                raise TamperError(
                    f"report file {name!r} of request {rid} changed after it was built",
                    expected=bytes.fromhex(expected),
                    found=bytes.fromhex(found),
                )
            self._remember(directory / name, expected)  # no need to hash it again here

    def path(self, rid: str, name: str, sha256: str) -> Path:
        """The local path of file ``name`` of ``rid``'s report, whose recorded SHA-256 is
        ``sha256``; on a shared store, fetched from the registry first when this node
        lacks it or holds other bytes (see :meth:`_is_recorded`).

        :class:`NotFoundError` when it is nowhere; :class:`TamperError` (and nothing
        kept) when the registry's copy is not the file the log recorded.
        """
        path = self.directory / rid / name
        if self.registry is None:
            if path.is_file():
                return path
            raise NotFoundError(f"the report files of {rid} are no longer on this server")
        if self._is_recorded(path, sha256):
            return path
        try:
            chunks = self.registry.report_file_chunks(rid, name, sha256)
        except NotFoundError:
            raise NotFoundError(
                f"the report files of {rid} are neither on this server nor in the shared store"
            ) from None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fetch(chunks, path, sha256, what=f"file {name!r} of request {rid}")
        self._remember(path, sha256)
        return path

    def _is_recorded(self, path: Path, sha256: str) -> bool:
        """Whether the local file holds the recorded bytes (hashed once per process).

        Many nodes only: a node whose build of a report failed or died keeps its files
        while another node finishes the report with other bytes (a later
        ``generated_at``), so a local file is served only once its hash is checked.
        """
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        key = (str(path), sha256, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._checked:
                return True
        if file_sha256(path) != sha256:
            return False
        self._remember(path, sha256)
        return True

    def _remember(self, path: Path, sha256: str) -> None:
        st = path.stat()
        with self._lock:
            if len(self._checked) > 10_000:
                self._checked.clear()
            self._checked.add((str(path), sha256, st.st_size, st.st_mtime_ns))


def fetch(chunks: Iterable[bytes], path: Path, sha256: str, *, what: str) -> None:
    """Write ``chunks`` to ``path`` (0600) if, and only if, their SHA-256 is ``sha256``.

    The bytes go to a partial file beside ``path`` (hashed while written, one chunk in
    memory at a time) that is renamed into place after the hash matched, so ``path``
    never holds a wrong or half-written file, and two fetches racing each other each
    rename a whole, checked one.
    """
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    digest = hashlib.sha256()
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        found = digest.hexdigest()
        if found != sha256:
            LOGGER.error(
                "shared report file altered",
                extra={"what": what, "expected": sha256, "found": found},
            )
            raise TamperError(
                f"the shared store's copy of {what} was altered: its SHA-256 is not the one "
                "the log recorded, so it was not served (the node that built the report may "
                "still hold the original in its reports directory)",
                expected=bytes.fromhex(sha256),
                found=bytes.fromhex(found),
            )
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


__all__ = ["ReportStore", "fetch"]
