"""The two SQLite catalogs: the station's frames and sessions, the processing host's
sequences, jobs and timelapses.

- ``sqlite``: :class:`SqliteStore` (WAL, a connection per thread), time and JSON conventions.
- ``capture``: :class:`Catalog` with :class:`FrameRecord` and :class:`SessionRow` rows, and the
  :class:`FrameCatalog` / :class:`TransferCatalog` protocols.
- ``processing``: :class:`ProcessingCatalog`.

The names below are re-exported so ``from skylapse.catalog import Catalog`` keeps working.
"""

from skylapse.catalog.capture import (
    TRANSFER_STATES,
    WRITING,
    Catalog,
    Companion,
    FrameCatalog,
    FrameRecord,
    Quarantine,
    SessionRow,
    TransferCatalog,
)
from skylapse.catalog.processing import JOB_STATES, ProcessingCatalog
from skylapse.catalog.sqlite import SqliteStore

__all__ = [
    "JOB_STATES",
    "TRANSFER_STATES",
    "WRITING",
    "Catalog",
    "Companion",
    "FrameCatalog",
    "FrameRecord",
    "ProcessingCatalog",
    "Quarantine",
    "SessionRow",
    "SqliteStore",
    "TransferCatalog",
]
