"""Ground truth of a synthetic sequence, and the brightness measure it is stated in.

:class:`SequenceTruth` is what :func:`skylapse.testing.generate_sequence` did to every frame
(written as ``truth.json`` next to the frames); the bench and the processing tests compare what a
render recovers against it (:mod:`skylapse.processing.measure`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Rec. 709 / sRGB luminance weights.
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def central_log2_luminance(linear: np.ndarray, fraction: float = 0.5) -> float:
    """log2 of the mean linear luminance of the central ``fraction`` (per axis) of a frame.

    This is the brightness the ground truth and the bench's flicker metric compare: the log of
    the mean (not the mean of the log) so that dark pixels and noise do not dominate.
    """
    h, w = linear.shape[:2]
    y0, y1 = round(h * (1 - fraction) / 2), round(h * (1 + fraction) / 2)
    x0, x1 = round(w * (1 - fraction) / 2), round(w * (1 + fraction) / 2)
    region = linear[y0:y1, x0:x1]
    lum = region @ LUMA_WEIGHTS if region.ndim == 3 else region
    return float(np.log2(max(float(lum.mean()), 1e-12)))


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
