"""Scene-linear light for the HLG video: bracket sets merged into radiance, then BT.2100 HLG.

The SDR outputs fuse a bracket set by exposure fusion (Mertens), a tone mapping that has no
light level to give back. The HLG video (`skylapse render --format hlg`) is built from light
instead:

1. **Radiance.** A bracket set becomes one estimate of the light (:func:`merge_radiance`):
   every frame is linearised (the sRGB transfer undone) and divided by its exposure relative to
   the set's reference frame (from the EXIF exposure time, ISO and aperture), and the frames are
   averaged with weights from their exposure - the estimator ``sum(w z) / sum(w t)`` that
   weighs each frame's estimate ``z / t`` by its exposure ``t`` (Robertson et al. 2003;
   Granados et al. 2010), which is the maximum-likelihood estimate when the noise is photon
   noise. A frame's weight falls to zero where it is near white (clipped) or near black
   (quantised to a few codes), except that the shortest exposure always speaks for the
   highlights and the longest for the shadows, so every pixel has an estimate. A single frame is
   simply linearised: it is its own reference exposure. The result is linear light in units of
   the reference frame's exposure: 1.0 is where that frame (what the SDR outputs show) clips.
2. **Exposure.** The deflicker's gain for the shot - which carries the exposure ramp, the
   camera's smoothed steps, as well as the flicker correction - multiplies that light, as it
   multiplies the SDR frame's linear light.
3. **Reference white** (:func:`hlg_peak`, once per sequence). HLG carries scene light ``E`` in
   [0, 1] and places diffuse white at 75 % of the signal (ITU-R BT.2408), ``E = 0.265``. The
   SDR outputs' white (1.0 above) is put there, leaving 3.8 times (1.9 stops) of headroom for
   what the brackets saw beyond it; if the sequence's highlights (the 99.9th percentile of the
   brightest channel over up to nine shots spread across it, after their gains) reach further,
   the whole sequence is scaled down just enough that they reach the HLG peak instead of
   clipping (at most :data:`MAX_HEADROOM` times). One scale for the whole sequence, so its
   brightness never pumps.
4. **Signal** (:class:`HlgGrade`). White balance (linear gains), the BT.709 -> BT.2020
   primaries (BT.2087) and the scale to ``E`` are one 3x3 transform; the HLG OETF
   (:mod:`skylapse.imaging.hlg`) encodes the result as uint16, which the encoder turns into
   BT.2020 Y'CbCr.

Contrast and saturation are SDR grading and are not applied to the HLG video.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from numpy.typing import NDArray

from skylapse.imaging import hlg, srgb
from skylapse.processing.lens import LensMaps

#: Encoded (sRGB) level of a frame's brightest channel from which it is taken as clipping: the
#: weight falls from 1 at ``KNEE`` to 0 at ``CLIP`` (JPEG ringing and the camera's shoulder).
KNEE, CLIP = 0.90, 0.98
#: Encoded level below which a frame is quantised to a few codes: the weight rises from 0 at
#: ``BLACK`` to 1 at ``TOE``.
BLACK, TOE = 0.01, 0.05
#: Scene-linear ``E`` of HLG's reference (diffuse) white, BT.2408: 75 % signal.
REFERENCE_WHITE_E = float(hlg.inverse_oetf(hlg.REFERENCE_WHITE_SIGNAL))
#: The SDR white's level in linear light (1.0) shown at HLG reference white: the default peak.
DEFAULT_PEAK = 1.0 / REFERENCE_WHITE_E
#: At most this much further the peak is raised for a sequence's highlights (4 stops).
MAX_HEADROOM = 16.0
#: The percentile of a sequence's brightest channel that is kept below the HLG peak.
HIGHLIGHT_PERCENTILE = 99.9


@cache
def _weight_lut(bits: int, long_end: bool, short_end: bool) -> NDArray[np.float32]:
    """A frame's merge weight for every encoded value of its brightest channel."""
    v = np.arange(2**bits, dtype=np.float64) / (2**bits - 1)
    rise = np.ones_like(v) if long_end else np.clip((v - BLACK) / (TOE - BLACK), 0.0, 1.0)
    fall = np.ones_like(v) if short_end else np.clip((CLIP - v) / (CLIP - KNEE), 0.0, 1.0)
    lut: NDArray[np.float32] = np.asarray(rise * fall, dtype=np.float32)
    lut.setflags(write=False)
    return lut


def linearise(frame: np.ndarray) -> np.ndarray:
    """A uint8/uint16 sRGB frame to float32 linear light (its own exposure: 1.0 = white)."""
    return srgb.to_linear(frame)


def merge_radiance(frames: Sequence[np.ndarray], exposures: Sequence[float]) -> np.ndarray:
    """Merge an aligned bracket set into linear light in units of the reference exposure.

    ``frames``: uint8 or uint16 sRGB ``(H, W, 3)``, aligned; ``exposures``: each frame's
    exposure relative to the reference frame (``2 ** (ev - ev_reference)``, so the reference
    has 1.0). Returns float32 ``(H, W, 3)``: ``sum_k w_k z_k / sum_k w_k t_k`` with ``z_k``
    the linearised frame, ``t_k`` its exposure and ``w_k`` its weight (see the module
    docstring); where every weight is zero - impossible but for a one-frame "set" - the
    reference's value.
    """
    if len(frames) != len(exposures) or not frames:
        raise ValueError("one exposure per frame, and at least one frame")
    if any(not t > 0 for t in exposures):
        raise ValueError(f"exposures must be positive, got {list(exposures)}")
    shortest, longest = int(np.argmin(exposures)), int(np.argmax(exposures))
    num: np.ndarray | None = None
    den: np.ndarray | None = None
    for k, (frame, t) in enumerate(zip(frames, exposures, strict=True)):
        if frame.dtype not in (np.uint8, np.uint16) or frame.ndim != 3:
            raise TypeError(f"expected uint8/uint16 (H, W, 3) frames, got {frame.dtype}")
        lut = _weight_lut(8 * frame.dtype.itemsize, k == longest, k == shortest)
        weight = lut[frame.max(axis=2)]
        z = linearise(frame)
        cv2.multiply(z, cv2.merge([weight, weight, weight]), dst=z)
        if num is None or den is None:
            num, den = z, weight * np.float32(t)
        else:
            cv2.add(num, z, dst=num)
            cv2.scaleAdd(weight, float(t), den, dst=den)
    assert num is not None and den is not None
    np.maximum(den, np.float32(1e-12), out=den)
    return cv2.divide(num, cv2.merge([den, den, den]))


def relative_exposures(evs: Sequence[float | None], reference: int) -> list[float]:
    """Each frame's exposure relative to frame ``reference``, ``2 ** (ev - ev_reference)``,
    from their log2 exposures (`skylapse.processing.deflicker.exposure_ev`; None: unknown).
    A single frame needs none (``[1.0]``); a set with an unknown exposure cannot be merged
    into light (ValueError)."""
    if len(evs) == 1:
        return [1.0]
    known = [ev for ev in evs if ev is not None]
    if len(known) != len(evs):
        raise ValueError("a bracket set's frames need their EXIF exposure times to merge")
    return [2.0 ** (ev - known[reference]) for ev in known]


def hlg_peak(highlights: Sequence[float]) -> float:
    """The linear level (in the SDR white's units) that becomes the HLG peak ``E = 1``.

    ``highlights``: the 99.9th percentile of the brightest channel of sampled shots, after
    their gains. The SDR white sits at HLG reference white (:data:`DEFAULT_PEAK`) unless the
    highlights need more room, up to :data:`MAX_HEADROOM` times more.
    """
    top = max((h for h in highlights if np.isfinite(h)), default=0.0)
    return float(np.clip(top, DEFAULT_PEAK, DEFAULT_PEAK * MAX_HEADROOM))


def highlight_level(linear: np.ndarray, gain: float = 1.0) -> float:
    """The :data:`HIGHLIGHT_PERCENTILE` of a linear frame's brightest channel, times ``gain``."""
    peak = linear.max(axis=2) if linear.ndim == 3 else linear
    return float(np.percentile(peak, HIGHLIGHT_PERCENTILE)) * gain


@dataclass(frozen=True)
class HlgGrade:
    """Linear BT.709 light to the uint16 HLG signal of BT.2020 RGB, for one sequence.

    ``peak``: the linear level that maps to ``E = 1`` (:func:`hlg_peak`); ``white_balance``:
    linear per-channel gains (R, G, B) applied first.
    """

    peak: float = DEFAULT_PEAK
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def matrix(self, gain: float = 1.0) -> NDArray[np.float32]:
        """The 3x3 map from linear BT.709 RGB (times the shot's ``gain``) to BT.2020 ``E``."""
        m = hlg.BT709_TO_BT2020 @ np.diag(self.white_balance) * (gain / self.peak)
        return m.astype(np.float32)

    def apply(self, linear: np.ndarray, gain: float = 1.0) -> NDArray[np.uint16]:
        """One frame of linear light to the HLG signal (a new uint16 ``(H, W, 3)`` array)."""
        if linear.dtype != np.float32 or linear.ndim != 3:
            raise TypeError(f"expected float32 (H, W, 3) linear light, got {linear.dtype}")
        e = cv2.transform(linear, self.matrix(gain))
        return hlg.encode16(e)


def correct_lens_linear(linear: np.ndarray, maps: LensMaps) -> np.ndarray:
    """`skylapse.processing.lens.correct_lens` for linear light: the same undistortion
    (bilinear remap) and devignetting gain, on float32 ``(H, W, 3)``."""
    out = linear
    if maps.map1 is not None:
        out = cv2.remap(
            linear, maps.map1, maps.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    if maps.gain is not None:  # pre-scaled for 16-bit codes (see LensMaps)
        out = cv2.multiply(out, maps.gain, scale=1.0 / srgb.MAX16)
    return out
