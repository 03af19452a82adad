"""The two SQLite catalogs: the station's frames and sessions, the processing host's
sequences, jobs and timelapses.

- ``sqlite``: :class:`SqliteStore` (WAL, a connection per thread), time and JSON conventions.
- ``capture``: :class:`Catalog` with :class:`FrameRecord` and :class:`SessionRow` rows, and the
  :class:`FrameCatalog` / :class:`TransferCatalog` protocols.
- ``processing``: :class:`ProcessingCatalog`, with its rows in ``processing_rows``
  (:class:`SequenceRow`, :class:`IngestedFrame`, :class:`QuarantinedFrame`, :class:`JobRow`,
  :class:`TimelapseRow` with :class:`ArchivedFile`, :class:`FrameDeletion`, ...).

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
from skylapse.catalog.processing import ProcessingCatalog
from skylapse.catalog.processing_rows import (
    FINISHED_JOB_STATES,
    JOB_STATES,
    ArchivedFile,
    ArchivedRender,
    FrameDeletion,
    IngestedFrame,
    JobChanges,
    JobRow,
    JobState,
    QuarantinedFrame,
    SequenceRow,
    StoredSequenceRow,
    TimelapseRow,
)
from skylapse.catalog.sqlite import SqliteStore

__all__ = [
    "FINISHED_JOB_STATES",
    "JOB_STATES",
    "TRANSFER_STATES",
    "WRITING",
    "ArchivedFile",
    "ArchivedRender",
    "Catalog",
    "Companion",
    "FrameCatalog",
    "FrameDeletion",
    "FrameRecord",
    "IngestedFrame",
    "JobChanges",
    "JobRow",
    "JobState",
    "ProcessingCatalog",
    "Quarantine",
    "QuarantinedFrame",
    "SequenceRow",
    "SessionRow",
    "SqliteStore",
    "StoredSequenceRow",
    "TimelapseRow",
    "TransferCatalog",
]
