"""trailseal: a tamper-evident audit trail for Slack and workflow automation.

The log is an RFC 9162 Merkle tree published as C2SP checkpoints and tiles; receipts
are ``c2sp.org/tlog-proof@v1``. See ``docs/`` for the formats and the life of an entry.
"""

from trailseal.datadir import DataDir
from trailseal.errors import Error
from trailseal.ledger import AppendResult, Ledger, prepare

__version__ = "0.1.0"

__all__ = ["AppendResult", "DataDir", "Error", "Ledger", "__version__", "prepare"]
