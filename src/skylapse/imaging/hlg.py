"""BT.2100 Hybrid Log-Gamma and BT.2020 colour: the HDR video's transfer and primaries.

Conventions. ``E`` is scene-linear light of one colour component, normalised so that 1.0 is
the brightest light the signal can carry (the HLG "peak"); ``E'`` is the non-linear signal in
[0, 1] (the video's code values before quantisation). Linear RGB taken in by
:func:`bt709_to_bt2020` has the BT.709 (= sRGB) primaries, the pipeline's; what comes out has
the BT.2020 primaries the HLG video is tagged with. Both share the D65 white, so white and every
grey map to themselves and luminance ``Y`` is kept.

* :func:`oetf` / :func:`inverse_oetf`: the HLG opto-electronic transfer function, ITU-R
  BT.2100-2 (07/2018), Table 5: ``E' = sqrt(3 E)`` for ``E <= 1/12``, else
  ``a ln(12 E - b) + c`` with ``a = 0.17883277``, ``b = 1 - 4a``, ``c = 0.5 - a ln(4a)``.
* :data:`REFERENCE_WHITE_SIGNAL`: where diffuse white sits in an HLG signal, 75 % (ITU-R
  BT.2408-7, section 2.2), i.e. ``E = inverse_oetf(0.75)`` (0.265): everything up to
  about 3.8 times brighter than white keeps its gradation instead of clipping.
* :func:`rgb_to_rgb_matrix` / :data:`BT709_TO_BT2020`: the linear-light primaries conversion of
  ITU-R BT.2087-0 (10/2015), section 2 (its matrix, to four decimals, is the one derived here
  from the primaries of BT.709-6 Table 1 item 1.3 and BT.2020-2 Table 3 item 3.3, by the
  usual RGB -> XYZ construction of SMPTE RP 177).
* :data:`BT2020_KR`, :data:`BT2020_KB`: the non-constant-luminance Y'CbCr weights of BT.2020-2
  Table 4 (the ``bt2020nc`` matrix), which the encoder uses on ``E'``.

>>> round(float(oetf(1 / 12)), 6), round(float(oetf(1.0)), 6)
(0.5, 1.0)
>>> round(float(inverse_oetf(REFERENCE_WHITE_SIGNAL)), 4)
0.265
>>> np.round(BT709_TO_BT2020, 4).tolist()[0]
[0.6274, 0.3293, 0.0433]
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: The HLG constants of BT.2100-2 Table 5.
A = 0.17883277
B = 1.0 - 4.0 * A
C = 0.5 - A * float(np.log(4.0 * A))
#: The signal level of diffuse (reference) white in HLG (BT.2408-7, 75 %).
REFERENCE_WHITE_SIGNAL = 0.75
#: BT.2020 non-constant-luminance luma weights (BT.2020-2 Table 4).
BT2020_KR, BT2020_KB = 0.2627, 0.0593

#: CIE 1931 xy chromaticities of the red, green and blue primaries, and of the D65 white.
BT709_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
BT2020_PRIMARIES = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))
D65 = (0.3127, 0.3290)


def oetf(e: ArrayLike) -> NDArray[np.float64]:
    """Scene-linear ``E`` (clipped to [0, 1]) to the HLG signal ``E'`` in [0, 1]."""
    x = np.clip(np.asarray(e, dtype=np.float64), 0.0, 1.0)
    log_part = A * np.log(np.maximum(12.0 * x - B, 1e-12)) + C
    signal: NDArray[np.float64] = np.where(x <= 1.0 / 12.0, np.sqrt(3.0 * x), log_part)
    return signal


def inverse_oetf(signal: ArrayLike) -> NDArray[np.float64]:
    """The HLG signal ``E'`` (clipped to [0, 1]) back to scene-linear ``E`` in [0, 1]."""
    x = np.clip(np.asarray(signal, dtype=np.float64), 0.0, 1.0)
    e: NDArray[np.float64] = np.where(x <= 0.5, x * x / 3.0, (np.exp((x - C) / A) + B) / 12.0)
    return e


def _rgb_to_xyz(primaries: tuple[tuple[float, float], ...]) -> NDArray[np.float64]:
    """The linear RGB -> CIE XYZ matrix of a set of primaries with the D65 white (Y = 1)."""
    xyz = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries]).T
    wx, wy = D65
    white = np.array([wx / wy, 1.0, (1.0 - wx - wy) / wy])
    return xyz * np.linalg.solve(xyz, white)


def rgb_to_rgb_matrix(
    source: tuple[tuple[float, float], ...], target: tuple[tuple[float, float], ...]
) -> NDArray[np.float64]:
    """The 3x3 matrix taking linear RGB of ``source`` primaries to ``target`` primaries
    (same white): ``target_rgb = M @ source_rgb``."""
    return np.asarray(np.linalg.solve(_rgb_to_xyz(target), _rgb_to_xyz(source)), np.float64)


#: Linear BT.709 RGB to linear BT.2020 RGB (BT.2087-0): each row sums to 1 (white is kept).
BT709_TO_BT2020: NDArray[np.float64] = rgb_to_rgb_matrix(BT709_PRIMARIES, BT2020_PRIMARIES)
BT709_TO_BT2020.setflags(write=False)


@cache
def signal_lut16() -> NDArray[np.uint16]:
    """The table from every float16 bit pattern (read as ``uint16``) to the HLG signal as
    uint16 (0..65535): ``lut[e.astype(np.float16).view(np.uint16)]`` encodes ``E`` quickly.

    Half floats keep 11 significant bits at every magnitude, so the signal is exact to well
    under one 10-bit code down to the darkest shadows; negatives, NaN and values above 1 are
    clipped to the signal's ends (0 and 65535).
    """
    e = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
    e = np.nan_to_num(e, nan=0.0, posinf=1.0, neginf=0.0)
    lut = np.rint(oetf(e) * 65535.0).astype(np.uint16)
    lut.setflags(write=False)
    return lut


def encode16(e: np.ndarray) -> NDArray[np.uint16]:
    """Scene-linear ``E`` (any shape, float32; values outside [0, 1] clip) to the HLG signal
    as uint16 over 0..65535, through :func:`signal_lut16`."""
    half = e.astype(np.float16)
    signal: NDArray[np.uint16] = np.take(signal_lut16(), half.view(np.uint16))
    return signal
