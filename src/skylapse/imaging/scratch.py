"""Per-thread scratch buffers for the hot loops of the render pipeline.

A 1080p uint16 RGB frame is 12 MB; allocating fresh arrays of that size for every frame costs
page faults (the allocator returns them to the system) that can double a stage's CPU time and
fragment the heap. A :class:`ScratchBuffer` hands out one array per thread instead, reused for
as long as the requested shape and type stay the same, so stages that run in worker threads do
not share (and overwrite) each other's buffers.

Conventions. The contents of a buffer are undefined when it is handed out, and only valid until
the same thread asks the same ``ScratchBuffer`` again: use it within one call, never return it
to a caller. Keep one ``ScratchBuffer`` per use (a module-level constant): two uses that share
one would overwrite each other.

>>> buffer = ScratchBuffer()
>>> a = buffer.get((2, 3), np.uint16)
>>> buffer.get((2, 3), np.uint16) is a, buffer.get((3, 2), np.uint16) is a
(True, False)
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import DTypeLike


class ScratchBuffer:
    """One reusable array per thread; a new one when the shape or type asked for changes."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
        """This thread's buffer of ``shape`` and ``dtype`` (C order, contents undefined)."""
        key = (tuple(shape), np.dtype(dtype))
        held: tuple[tuple[tuple[int, ...], np.dtype], np.ndarray] | None = getattr(
            self._local, "held", None
        )
        if held is None or held[0] != key:
            held = (key, np.empty(key[0], key[1]))
            self._local.held = held
        return held[1]
