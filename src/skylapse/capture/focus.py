"""The lens for a session: autofocus at its start, or in fog the last good focus, held.

:meth:`Focus.start_session` runs once as a session starts (`skylapse.capture.service`). With
``capture.autofocus`` and a camera that can, it searches for focus and notes the position in the
station's memory (`skylapse.capture.learning`, the last good focus). In fog there is no contrast
to search on, so the lens is held instead at the last good focus: this run's, else the memory's,
else the camera profile's infinity; :attr:`Focus.held` is then handed to every shot's
``CaptureSettings.lens_position``. Lens positions are in dioptres (the camera's convention).
"""

from __future__ import annotations

import asyncio
import time

from skylapse.capture.cameras.base import Camera, CameraCapability
from skylapse.capture.learning import StationMemory
from skylapse.capture.session import SessionSummary
from skylapse.log import get_logger

#: the capture service's lines, under its logger name wherever they are written
log = get_logger("skylapse.capture.service")


class Focus:
    """The focus of one camera across sessions (module docstring). ``camera_lock`` is the lock
    every use of the camera takes."""

    def __init__(self, camera: Camera, camera_lock: asyncio.Lock, memory: StationMemory) -> None:
        self.camera = camera
        self.memory = memory
        self._camera_lock = camera_lock
        self.held: float | None = None  # the session keeps this focus (fog)
        self.lens_position: float | None = None  # the last one found or held
        self.acquisition_time_s: float | None = None  # the last autofocus's

    async def start_session(self, summary: SessionSummary, *, autofocus: bool, foggy: bool) -> None:
        """Focus for the session starting (``autofocus``: ``capture.autofocus``; ``foggy``: the
        observation says fog); the position and time go into ``summary``."""
        self.held = None
        if not autofocus:
            return
        if not self.camera.supports_capability(CameraCapability.AUTOFOCUS):
            return
        if foggy:
            self._hold(summary)
            return
        t0 = time.perf_counter()
        async with self._camera_lock:
            position = await self.camera.autofocus()
        self.acquisition_time_s = time.perf_counter() - t0
        self.lens_position = position
        self.memory.note_focus(position)
        summary.focus_acquisition_time_s = self.acquisition_time_s
        summary.lens_position = position
        log.info(
            "autofocus",
            lens_position=position,
            focus_acquisition_time_s=round(self.acquisition_time_s, 3),
        )

    def _hold(self, summary: SessionSummary) -> None:
        """Fog: no contrast search on a grey veil; keep the last good focus for the session."""
        if not self.camera.supports_capability(CameraCapability.MANUAL_FOCUS):
            return
        keep = self.lens_position
        if keep is None:
            keep = self.memory.memory.last_good_focus
        if keep is None:
            keep = self.camera.profile.focus.infinity_lens_position
        self.held = self.lens_position = summary.lens_position = keep
        log.info("fog: keeping the last good focus", lens_position=keep)
