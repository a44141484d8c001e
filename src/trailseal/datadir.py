"""The data directory: database, signing keys and configuration on disk.

::

    <data dir>/            0700
      trailseal.toml       which log is the default; the storage engine and its file
      trailseal.db         the SQLite store (0600)
      keys/                0700
        <log>.<key id>.key the C2SP signer key of a log (0600), one file per key

Key files must be readable by their owner only; a key file that group or others can
read is refused, with the command that fixes it.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from trailseal.core.note import NoteSigner, NoteVerifier
from trailseal.errors import (
    AlreadyExistsError,
    ConfigError,
    FormatError,
    KeyMissingError,
    NotFoundError,
)
from trailseal.ledger import Clock, Ledger, rfc3339, utc_now
from trailseal.storage.base import KeyEvent, LogInfo, Storage
from trailseal.storage.urls import StorageUrl, has_password, open_storage, parse, redact

CONFIG_FILE = "trailseal.toml"
DB_FILE = "trailseal.db"
KEYS_DIR = "keys"
DEFAULT_LOG = "default"


@dataclass(frozen=True, slots=True)
class KeyState:
    """A verifier key of a log and whether it still signs."""

    verifier: NoteVerifier
    active: bool
    added_at: str
    retired_at: str | None


def _check_log_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ConfigError(f"log name {name!r} may only use letters, digits, '-', '_' and '.'")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class DataDir:
    """An opened data directory."""

    def __init__(
        self,
        path: Path,
        storage: Storage,
        default_log: str,
        clock: Clock,
        url: StorageUrl | None = None,
    ) -> None:
        self.path = path
        self.storage = storage
        self.default_log = default_log
        self.clock = clock
        self.url = url or StorageUrl("sqlite", path=path / DB_FILE)

    @property
    def shared(self) -> bool:
        """Whether other nodes may share the store (PostgreSQL)."""
        return self.url.engine == "postgresql"

    # -- creating and opening -------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path,
        origin: str,
        log_name: str = DEFAULT_LOG,
        clock: Clock = utc_now,
        storage_url: str | None = None,
    ) -> tuple[DataDir, LogInfo, NoteSigner]:
        """Create a data directory with its first log and signing key.

        ``storage_url`` names a PostgreSQL store (``postgresql://...``); its schema is
        created or migrated here, so run this as the database role that owns it.
        """
        _check_log_name(log_name)
        if (path / CONFIG_FILE).exists():
            raise AlreadyExistsError(
                f"{path} is already a trailseal data directory; use `trailseal log create` "
                "to add a log to it"
            )
        url = parse(storage_url) if storage_url else None
        if url is not None and url.engine == "postgresql":
            _refuse_password(storage_url or "")
            storage_table = f'engine = "postgresql"\nurl = "{storage_url}"\n'
            # Applies the migrations as the owner; `serve` never migrates.
            open_storage(url, migrate=True).close()
        else:
            db = url.path if url is not None and url.path is not None else Path(DB_FILE)
            storage_table = f'engine = "sqlite"\npath = "{db}"\n'
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
        config = (
            f'# trailseal data directory\ndefault_log = "{log_name}"\n\n[storage]\n' + storage_table
        )
        _write_private(path / CONFIG_FILE, config)
        data_dir = cls.open(path, clock=clock)
        try:
            info, signer = data_dir.create_log(log_name, origin)
        except AlreadyExistsError as e:
            data_dir.close()
            (path / CONFIG_FILE).unlink()
            raise AlreadyExistsError(
                f"{e}. To add a node to a PostgreSQL deployment, copy trailseal.toml and "
                "keys/ from an existing node instead of running init"
            ) from e
        return data_dir, info, signer

    @classmethod
    def open(cls, path: Path, clock: Clock = utc_now) -> DataDir:
        """Open an existing data directory."""
        config_path = path / CONFIG_FILE
        if not config_path.exists():
            raise ConfigError(
                f"{path} is not a trailseal data directory (no {CONFIG_FILE}); "
                "create one with `trailseal init`, or point --data-dir / TRAILSEAL_DATA_DIR at it"
            )
        try:
            config = tomllib.loads(config_path.read_text())
        except (tomllib.TOMLDecodeError, OSError) as e:
            raise ConfigError(f"cannot read {config_path}: {e}") from e
        url = storage_url(path, config.get("storage", {}))
        storage = open_storage(url, migrate=False)
        return cls(path, storage, str(config.get("default_log", DEFAULT_LOG)), clock, url)

    def close(self) -> None:
        """Release the store."""
        self.storage.close()

    # -- logs and keys --------------------------------------------------------------

    def create_log(self, name: str, origin: str) -> tuple[LogInfo, NoteSigner]:
        """Add a log with its own origin and a new signing key."""
        _check_log_name(name)
        # Control characters could never be signed in a checkpoint (C2SP signed-note).
        if not origin or any(c.isspace() or c == "+" or not c.isprintable() for c in origin):
            raise ConfigError(
                f"origin {origin!r} must be non-empty, without spaces, control characters or '+'"
            )
        info = self.storage.create_log(name, origin, rfc3339(self.clock()))
        signer = self._new_key(info)
        return info, signer

    def _key_path(self, log: LogInfo, key_id: int) -> Path:
        return self.path / KEYS_DIR / f"{log.name}.{key_id:08x}.key"

    def _new_key(self, log: LogInfo) -> NoteSigner:
        signer = NoteSigner.generate(log.origin)
        _write_private(self._key_path(log, signer.key_id), signer.to_string() + "\n")
        self.storage.add_key_event(
            log.id, KeyEvent(signer.verifier.to_string(), "added", rfc3339(self.clock()))
        )
        return signer

    def log(self, name: str | None = None) -> LogInfo:
        """A log by name (the default log when None)."""
        return self.storage.get_log(name or self.default_log)

    def keys(self, log: LogInfo) -> list[KeyState]:
        """The log's keys, active and retired, oldest first."""
        states: dict[str, KeyState] = {}
        for ev in self.storage.key_events(log.id):
            if ev.event == "added" and ev.verifier not in states:
                states[ev.verifier] = KeyState(
                    NoteVerifier.from_string(ev.verifier), True, ev.at, None
                )
            elif ev.event == "retired" and ev.verifier in states:
                old = states[ev.verifier]
                states[ev.verifier] = KeyState(old.verifier, False, old.added_at, ev.at)
        return list(states.values())

    def rotate_key(self, log: LogInfo) -> NoteSigner:
        """Add a new key that co-signs with the current ones from now on."""
        return self._new_key(log)

    def retire_key(self, log: LogInfo, key_id: int) -> KeyState:
        """Stop signing with a key; its old checkpoints stay verifiable."""
        states = self.keys(log)
        match = [k for k in states if k.verifier.key_id == key_id]
        if not match:
            raise NotFoundError(f"log {log.name!r} has no key {key_id:08x}")
        if not match[0].active:
            raise ConfigError(f"key {key_id:08x} is already retired")
        if sum(k.active for k in states) < 2:
            raise ConfigError(
                f"key {key_id:08x} is the log's only active key; "
                "run `trailseal signing-key rotate` first so a new key takes over"
            )
        self.storage.add_key_event(
            log.id, KeyEvent(match[0].verifier.to_string(), "retired", rfc3339(self.clock()))
        )
        return next(k for k in self.keys(log) if k.verifier.key_id == key_id)

    def load_signer(self, log: LogInfo, verifier: NoteVerifier) -> NoteSigner:
        """Read a signer key file, refusing one that others can read."""
        path = self._key_path(log, verifier.key_id)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as e:
            raise KeyMissingError(
                f"signing key {path} is missing; restore it from backup to append to "
                f"log {log.name!r} (reading and verifying work without it)"
            ) from e
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"signing key {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                f"run `chmod 600 {path}`"
            )
        try:
            signer = NoteSigner.from_string(path.read_text())
        except FormatError as e:
            raise ConfigError(f"signing key {path} is not a valid signer key: {e}") from e
        if signer.verifier != verifier:
            raise ConfigError(f"signing key {path} does not match the log's key {verifier.name}")
        return signer

    def ledger(self, name: str | None = None, *, writable: bool = True) -> Ledger:
        """The ledger of a log, with its active signing keys loaded when ``writable``."""
        info = self.log(name)
        signers = []
        if writable:
            signers = [self.load_signer(info, k.verifier) for k in self.keys(info) if k.active]
        return Ledger(self.storage, info, signers, clock=self.clock)


def _refuse_password(url: str) -> None:
    if has_password(url):
        raise ConfigError(
            f"{redact(url)}: do not put the database password in the URL (it would be "
            "written to trailseal.toml); use PGPASSWORD or a ~/.pgpass file (libpq reads both)"
        )


def storage_url(path: Path, table: dict[str, object]) -> StorageUrl:
    """The store a data directory's ``[storage]`` table names."""
    engine = table.get("engine", "sqlite")
    if engine == "sqlite":
        return StorageUrl("sqlite", path=path / str(table.get("path", DB_FILE)))
    if engine == "postgresql":
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"{path / CONFIG_FILE} [storage]: engine postgresql needs "
                'url = "postgresql://user@host:5432/database?schema=trailseal"'
            )
        _refuse_password(url)
        return parse(url)
    raise ConfigError(
        f"{path / CONFIG_FILE} [storage]: engine {engine!r} is not one of sqlite, postgresql"
    )
