"""What the capture loop reads from a frame right after it is taken: metering and quality.

``analyse_frame(pixels, clip_level) -> FrameAnalysis`` and ``analyse_frames`` (pure) work on a
copy at most ``ANALYSIS_WIDTH`` pixels wide, made once by area averaging and kept in the result
(``FrameAnalysis.reduced``): the service shows it as the live preview instead of holding on to
the full frame (36 MB at 12 MP) until the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from skylapse.capture.cameras.base import Frame
from skylapse.capture.exposure import Metering, meter
from skylapse.capture.quality import image_quality_score
from skylapse.imaging.luma import linear_luminance

#: Metering and quality work on a copy at most this wide.
ANALYSIS_WIDTH = 960


@dataclass(frozen=True)
class FrameAnalysis:
    """What the loop reads from a frame right after it is taken."""

    metering: Metering
    quality_score: float
    #: the copy analysed: the frame area-averaged to at most ``ANALYSIS_WIDTH`` px wide (the
    #: frame itself when it is no wider), in the frame's sample type
    reduced: np.ndarray = field(compare=False, repr=False)


def analyse_frame(pixels: np.ndarray, clip_level: float = 0.98) -> FrameAnalysis:
    """Metering (for the exposure controller) and the quality score of a uint8/uint16 sRGB frame.

    Both work on linear luma of a copy reduced (area average) to at most ``ANALYSIS_WIDTH``
    pixels wide: metering reduces to 64 px anyway and the quality score to 960 px, so the
    full-resolution luma (tens of ms at 1080p) would be wasted work.
    """
    h, w = pixels.shape[:2]
    if w > ANALYSIS_WIDTH:
        small = cv2.resize(
            pixels,
            (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w))),
            interpolation=cv2.INTER_AREA,
        )
    else:
        small = pixels
    luma = linear_luminance(small)
    metering = meter(luma, clip_level)
    # the luminance is not needed after the score: it is the score's scratch space
    return FrameAnalysis(metering, image_quality_score(luma, consume=True), small)


def analyse_frames(frames: Sequence[Frame], clip_level: float) -> list[FrameAnalysis]:
    return [analyse_frame(f.pixels, clip_level) for f in frames]
