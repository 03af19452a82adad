"""Ground truth of a synthetic sequence.

:class:`SequenceTruth` is what :func:`skylapse.testing.generate_sequence` did to every frame
(written as ``truth.json`` next to the frames); the bench and the processing tests compare what a
render recovers against it (:mod:`skylapse.processing.measure`). Its brightness is stated in
:func:`skylapse.imaging.luma.central_log2_luminance`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FrameTruth:
    """What was done to one frame of a synthetic sequence.

    Attributes:
        index, file, time: position, file name, capture time (ISO 8601, naive local time).
        sun_altitude_deg: the sun altitude the frame was lit for.
        log2_luminance: the true brightness, log2 of the mean linear luminance over the central
            50 % of the frame, without flicker, exposure steps, shake or noise (after clipping).
        flicker_ev: the random exposure error applied (aperture flicker), EV.
        camera_ev: the camera's exposure relative to frame 0, as recorded in EXIF, EV (the
            stepped ramp; 0 without one).
        exposure_error_ev: camera_ev minus the smooth ramp it approximates (the step error).
        dx, dy, rotation_deg: the shake and drift: a scene point at ``p`` in the steady frame
            appears at ``R(rotation) (p - c) + c + (dx, dy)``, ``c`` the frame centre; positive
            dx is to the right, dy down, rotation clockwise on screen.
    """

    index: int
    file: str
    time: str
    sun_altitude_deg: float
    log2_luminance: float
    flicker_ev: float
    camera_ev: float
    exposure_error_ev: float
    dx: float
    dy: float
    rotation_deg: float


@dataclass(frozen=True)
class SequenceTruth:
    """Ground truth of a synthetic sequence (written as ``truth.json`` next to the frames)."""

    width: int
    height: int
    fmt: str
    seed: int
    params: dict[str, Any]
    frames: tuple[FrameTruth, ...]

    def column(self, name: str) -> np.ndarray:
        """One field of every frame as an array, e.g. ``truth.column("log2_luminance")``."""
        return np.array([getattr(f, name) for f in self.frames], dtype=np.float64)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> SequenceTruth:
        """Read a ``truth.json`` (or the folder holding one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "truth.json"
        d = json.loads(p.read_text())
        frames = tuple(FrameTruth(**f) for f in d.pop("frames"))
        return cls(frames=frames, **d)
