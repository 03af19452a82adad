"""A camera that replays a folder of real frames in name order, for development on real footage.

Frames (JPEG, PNG, TIFF; 8 or 16 bit) are returned as they are, whatever settings are asked
for: the replay camera has no manual controls, so callers that check capabilities fall back to
automatic behaviour, exactly as with a camera that lacks them. Exposure metadata comes from the
file's EXIF when present (ExposureTime, ISOSpeedRatings, FNumber); otherwise the profile's
aperture and NaN exposure. When the folder is exhausted ``capture`` raises
:class:`ReplayExhausted`, unless ``loop=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skylapse.capture.cameras.base import (
    Camera,
    CameraConfig,
    CameraError,
    CaptureSettings,
    Frame,
    FrameMetadata,
)
from skylapse.capture.cameras.profiles import CameraProfile, builtin_profile
from skylapse.capture.clock import Clock

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: RGB (grey widened, alpha dropped), 8 or 16 bits as stored, EXIF orientation not applied
_DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION

# EXIF tag numbers (Exif IFD)
_EXPOSURE_TIME, _F_NUMBER, _ISO = 0x829A, 0x829D, 0x8827


class ReplayExhausted(CameraError):
    """Every frame of the folder has been served."""


def _exif_exposure(path: Path) -> dict[str, float]:
    """ExposureTime, FNumber and ISO from a file's EXIF, where present."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            exif = im.getexif().get_ifd(0x8769)
    except Exception:  # unreadable EXIF is not an error for replay
        return {}
    out: dict[str, float] = {}
    for key, tag in (("exposure", _EXPOSURE_TIME), ("f_number", _F_NUMBER), ("iso", _ISO)):
        value: Any = exif.get(tag)
        if isinstance(value, tuple | list):
            value = value[0] if value else None
        if value is not None:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return out


class ReplayCamera(Camera):
    """Serves the frames of ``folder`` in order (see module docstring)."""

    name = "replay"

    def __init__(
        self,
        folder: str | Path,
        profile: CameraProfile | None = None,
        clock: Clock | None = None,
        loop: bool = False,
    ) -> None:
        super().__init__(profile or builtin_profile("simulated"), clock)
        self.folder = Path(folder)
        self.loop = loop
        self._files: list[Path] = []
        self._index = 0
        self._resolution: tuple[int, int] | None = None

    async def configure(self, config: CameraConfig | None = None) -> None:
        if not self.folder.is_dir():
            raise CameraError(f"replay folder {self.folder} does not exist")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not self._files:
            raise CameraError(f"no frames ({', '.join(FRAME_SUFFIXES)}) in {self.folder}")
        self._resolution = config.resolution if config else None
        self._index = 0
        self._capabilities = frozenset()
        self._configured = True

    async def close(self) -> None:
        self._configured = False

    @property
    def remaining(self) -> int:
        return len(self._files) - self._index

    def _read(self, path: Path) -> tuple[np.ndarray, int]:
        # decoded in RGB order straight into the array returned (with ``dst``; without it, the
        # binding copies the decoded image once more: twice a 12 MP frame's 36 MB at the peak)
        image = cv2.imread(str(path), None, _DECODE_FLAGS)
        if image is None or image.size == 0:
            raise CameraError(f"cannot decode {path}")
        if self._resolution and (image.shape[1], image.shape[0]) != tuple(self._resolution):
            image = cv2.resize(image, tuple(self._resolution), interpolation=cv2.INTER_AREA)
        bits = 16 if image.dtype == np.uint16 else 8
        return image, bits

    async def capture(
        self, settings: CaptureSettings | None = None, *, deadline: float | None = None
    ) -> Frame:
        self._check_settings(settings or CaptureSettings())
        if not self._configured:
            raise CameraError("configure() the camera first")
        if self._index >= len(self._files):
            if not self.loop:
                raise ReplayExhausted(f"all {len(self._files)} frames of {self.folder} served")
            self._index = 0
        path = self._files[self._index]
        self._index += 1
        timestamp = self.clock.now()
        pixels, bits = await self._in_thread(self._read, path)
        exif = await self._in_thread(_exif_exposure, path)
        meta = FrameMetadata(
            timestamp=timestamp,
            exposure_time_s=exif.get("exposure", float("nan")),
            analogue_gain=exif.get("iso", 100.0) / 100.0,
            aperture_f=exif.get("f_number", self.profile.lens.aperture_f),
            camera=f"{self.name}:{self.folder.name}",
            focus_score=self._score(pixels),
            bit_depth=bits,
            extra={"source": str(path)},
        )
        return Frame(pixels, meta)
