"""How good a rendered timelapse is: residual flicker, jitter and drift of decoded frames.

The render bench, the demo's summary and the tests all measure with these.

All functions are pure: they take frames (``uint8`` or ``uint16`` sRGB-encoded RGB arrays, as
PyAV decodes them as ``rgb24`` / ``rgb48le``) and return numbers.

- :func:`central_log2_luminance` - log2 of the mean linear luminance of the central 50 % of a
  frame (the same definition as ``truth.json`` of :mod:`skylapse.synthetic`). The central region
  is used because stabilizers crop and rescale; a few pixels of shift change it negligibly.
- :func:`residual_flicker` - the standard deviation over frames of (output brightness - true
  brightness), in EV. A constant offset (an output that is uniformly brighter) does not count;
  both flicker and any wobble of the slow trend do.
- :func:`register_translation` - sub-pixel translation between two images: windowed phase
  correlation (Kuglin & Hines 1975) for the coarse shift, refined by Gauss-Newton iterations
  of the brightness-constancy equation on contrast-normalised images (Lucas & Kanade 1981), so
  it stays accurate to a few hundredths of a pixel under the changing light of a sunset.
- :func:`residual_jitter_and_drift` - registers every frame to the first on the static lower
  part of the frame (terrain, not sky and clouds) and reports the RMS frame-to-frame shift
  (jitter) and the largest shift from the first frame (drift).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


@cache
def _linear_lut(bits: int) -> np.ndarray:
    v = np.arange(2**bits, dtype=np.float64) / (2**bits - 1)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_luminance(frame: np.ndarray) -> np.ndarray:
    """Linear relative luminance (Rec. 709) of an 8- or 16-bit sRGB RGB frame, float32."""
    if frame.dtype == np.uint8:
        lin = _linear_lut(8)[frame]
    elif frame.dtype == np.uint16:
        lin = _linear_lut(16)[frame]
    else:
        raise TypeError(f"expected uint8 or uint16 sRGB, got {frame.dtype}")
    return lin @ LUMA_WEIGHTS if lin.ndim == 3 else lin


def central_region(image: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The central ``fraction`` (per axis) of an image."""
    h, w = image.shape[:2]
    y0, y1 = round(h * (1 - fraction) / 2), round(h * (1 + fraction) / 2)
    x0, x1 = round(w * (1 - fraction) / 2), round(w * (1 + fraction) / 2)
    return image[y0:y1, x0:x1]


def central_log2_luminance(frame: np.ndarray, fraction: float = 0.5) -> float:
    """log2 of the mean linear luminance of the central ``fraction`` of an sRGB frame."""
    lum = linear_luminance(central_region(frame, fraction))
    return float(np.log2(max(float(lum.mean()), 1e-12)))


@dataclass(frozen=True)
class FlickerResult:
    """Residual flicker: ``std`` (EV) of ``difference`` = output minus truth, per frame."""

    std: float
    difference: np.ndarray


def residual_flicker(frames: Iterable[np.ndarray], truth: np.ndarray | object) -> FlickerResult:
    """Standard deviation over frames of (output central log2 luminance - the true one), EV.

    ``truth`` is an array of true log2 luminances (one per frame) or a
    ``skylapse.synthetic.SequenceTruth`` (its ``log2_luminance`` column: the same generator
    without flicker, exposure steps or shake).
    """
    expected = (truth.column("log2_luminance") if hasattr(truth, "column")
                else np.asarray(truth, dtype=np.float64))
    measured = np.array([central_log2_luminance(f) for f in frames], dtype=np.float64)
    if measured.size != expected.size:
        raise ValueError(f"{measured.size} output frames for {expected.size} truth frames")
    diff = measured - expected
    return FlickerResult(std=float(diff.std()), difference=diff)


def _normalised(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)  # tame noise and aliasing before differentiating
    return (img - img.mean()) / max(float(img.std()), 1e-6)


def register_translation(
    reference: np.ndarray, image: np.ndarray, *, iterations: int = 8, border: int = 12
) -> tuple[float, float]:
    """The shift ``(dx, dy)`` of ``image``'s content relative to ``reference``, sub-pixel.

    Positive ``dx`` means the content moved right. Both are single-channel images of the same
    size. Coarse: phase correlation with a Hann window. Fine: Gauss-Newton on the normalised
    images, warping ``image`` back by the current estimate (bicubic) and solving the 2x2 normal
    equations of the linearised brightness constancy on the interior (``border`` pixels off).
    """
    ref = _normalised(reference)
    img = _normalised(image)
    h, w = ref.shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(ref, img, window)
    gx = cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    inner = (slice(border, h - border), slice(border, w - border))
    gx, gy = gx[inner], gy[inner]
    a = np.array([[float((gx * gx).sum()), float((gx * gy).sum())],
                  [float((gx * gy).sum()), float((gy * gy).sum())]])
    if abs(np.linalg.det(a)) < 1e-9:
        return float(dx), float(dy)
    for _ in range(iterations):
        m = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy]])
        back = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REFLECT)[inner]
        err = back - ref[inner]
        b = np.array([float((gx * err).sum()), float((gy * err).sum())])
        step = np.linalg.solve(a, b)
        # back(x) = img(x + d) ~ ref(x + d - d_true): err ~ g . (d - d_true) => d -= step.
        dx, dy = dx - step[0], dy - step[1]
        if math.hypot(*step) < 1e-4:
            break
    return float(dx), float(dy)


@dataclass(frozen=True)
class MotionResult:
    """Registration of every frame to the first.

    ``shifts`` is ``(N, 2)``: each frame's content shift from the first, pixels of the frame as
    given. ``jitter_rms``: RMS length of the frame-to-frame shift. ``drift_max``: the largest
    shift from the first frame.
    """

    shifts: np.ndarray
    jitter_rms: float
    drift_max: float


def _static_part(frame: np.ndarray, lower_fraction: float, scale: float) -> np.ndarray:
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h = gray.shape[0]
    part = gray[h - round(h * lower_fraction):]
    if scale != 1.0:
        part = cv2.resize(part.astype(np.float32), None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA)
    return part.astype(np.float32)


def residual_jitter_and_drift(
    frames: Iterable[np.ndarray], *, lower_fraction: float = 0.45, max_width: int = 960
) -> MotionResult:
    """Jitter (RMS frame-to-frame shift) and drift (largest shift from frame 0) in pixels.

    Every frame is registered to the first on its lower ``lower_fraction`` (the static terrain;
    the sky holds drifting clouds), downscaled to at most ``max_width`` pixels wide for speed
    (shifts are reported in full-resolution pixels).
    """
    shifts = []
    reference = None
    scale = 1.0
    for frame in frames:
        if reference is None:
            scale = min(1.0, max_width / frame.shape[1])
            reference = _static_part(frame, lower_fraction, scale)
            shifts.append((0.0, 0.0))
            continue
        dx, dy = register_translation(reference, _static_part(frame, lower_fraction, scale))
        shifts.append((dx / scale, dy / scale))
    if not shifts:
        raise ValueError("no frames")
    arr = np.array(shifts, dtype=np.float64)
    steps = np.diff(arr, axis=0)
    jitter = float(np.sqrt((steps**2).sum(axis=1).mean())) if len(steps) else 0.0
    drift = float(np.hypot(arr[:, 0], arr[:, 1]).max())
    return MotionResult(shifts=arr, jitter_rms=jitter, drift_max=drift)
