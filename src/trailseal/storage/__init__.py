"""Storage backends behind one protocol (:mod:`trailseal.storage.base`)."""

from trailseal.storage.base import (
    KeyEvent,
    LogInfo,
    NewEntry,
    Storage,
    StoredCheckpoint,
    StoredEntry,
    WriteTransaction,
)
from trailseal.storage.memory import MemoryStorage
from trailseal.storage.sqlite import SqliteStorage

__all__ = [
    "KeyEvent",
    "LogInfo",
    "MemoryStorage",
    "NewEntry",
    "SqliteStorage",
    "Storage",
    "StoredCheckpoint",
    "StoredEntry",
    "WriteTransaction",
]
