"""Colour: white balance (gray world or a Kelvin value), contrast and saturation.

White balance is a per-channel gain in linear light (a von Kries-style diagonal scaling in
the sRGB primaries, as a camera applies its white-balance multipliers). Gains are normalized
so that a neutral of the scene keeps its luminance (Rec. 709 weights): correcting a cast
changes colour, not exposure.

- ``gray_world_gains(frame)``: the gray-world assumption (Buchsbaum 1980): the scene's average
  reflectance is achromatic, so the mean of each channel (in linear light) should be equal.
  Clipped pixels (whose true colour is unknown) and very dark ones (noise, black level) are
  left out. A timelapse should not change its balance frame by frame: measure on reduced
  frames in pass 1 and smooth over time, or measure once.
- ``kelvin_gains(kelvin, reference=6500)``: the frames were lit by a black body of ``kelvin``;
  the gains map its white to the white of ``reference`` (photographers' convention: 3200 K
  corrects tungsten light, so the picture gets bluer; 10000 K makes it warmer). The
  chromaticity of the Planckian locus comes from the cubic approximation of Kim et al.
  (US patent 7,024,034, 2006; valid 1667-25000 K, within about 1e-3 in xy), converted to
  linear sRGB with the IEC 61966-2-1 matrix.
- ``apply_white_balance(frame, gains)``: one 16-bit table lookup per sample, exact in linear
  light.
- ``adjust_contrast_saturation(frame, contrast, saturation)``: contrast is an S-curve about
  mid-grey (18 % reflectance) in the sRGB-encoded domain, which is close to perceptually
  uniform (like CIE L*), fixing black, mid-grey and white; saturation scales chroma against
  Rec. 709 luma of the encoded values (as video tools such as ffmpeg's ``eq`` do), so that
  saturation 0 gives exact greys. Both are identities at 1.0.
- ``ColourGrade(gains, contrast, saturation)``: everything above folded into one per-channel
  table and one 3x3 matrix, built once per sequence; ``grade.apply(frame)`` per frame in
  pass 2 costs one lookup and one ``cv2.transform``.

The recorded tone (weather-driven, per frame)
---------------------------------------------
The capture station records in every frame's EXIF the tone its strategy asks for (``tone``:
``shadow_lift``, ``contrast``, ``dehaze``; an overcast strategy lifts shadows, adds contrast and
removes haze; see `skylapse.capture.strategy`). The render applies it per shot, before the
sequence's grade:

- ``dehaze(frame, strength)``: the dark channel prior (He, Sun & Tang, "Single Image Haze
  Removal Using Dark Channel Prior", CVPR 2009 / IEEE TPAMI 33(12) 2011). In linear light the
  hazy image is ``I = J t + A (1 - t)``; in haze-free outdoor patches some channel is nearly 0, so
  the dark channel of ``I / A`` (minimum over the colour channels and a square patch) estimates
  ``1 - t``. ``A`` (the airlight) is the mean colour of the 0.1 % pixels with the brightest dark
  channel. ``t = 1 - strength * dark(I / A)`` (``strength`` is the paper's omega, <= 0.95 keeps
  some haze for depth), refined by the guided filter (He, Sun & Tang, ECCV 2010) with the grey
  image as guide, kept >= 0.1, and ``J = (I - A) / t + A``.
- ``shadow_lift_curve(v, lift)``: raises sRGB-encoded values below mid-grey ``p`` by
  ``lift * 0.2 * (27 / 4) v (p - v)^2 / p^3`` (``0.2 * lift`` at ``v = p / 3``, nothing at black,
  at mid-grey and above); monotonic for ``lift`` in [0, 1].
- ``Tone(shadow_lift, contrast, dehaze)``: one shot's tone; ``Tone.from_record(meta)`` reads it
  from the frame's Skylapse record (None when the frame has none).
- ``ToneStage(tones, ramp_frames)``: the tone per shot of a render, eased over ``ramp_frames``
  shots (a centred moving average of each setting) so a change of strategy fades in instead of
  jumping; the airlight follows the frames with an exponential moving average (a per-frame
  estimate would flicker). ``stage.apply(n, frame)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from skylapse.imaging import luma, srgb
from skylapse.processing.options import KELVIN_RANGE

# CIE XYZ to linear sRGB (IEC 61966-2-1:1999).
XYZ_TO_LINEAR_SRGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ],
    dtype=np.float64,
)
MID_GREY = float(srgb.encode(0.18))  # 18 % reflectance, about 0.461 encoded
#: Largest shadow lift, in encoded units at a third of mid-grey (``shadow_lift = 1``).
SHADOW_LIFT_MAX = 0.2
#: Dehazing keeps the transmission at least this (He et al.'s t0).
MIN_TRANSMISSION = 0.1
#: The strongest dehaze (He et al.'s omega: some haze is kept for the sense of depth).
MAX_DEHAZE = 0.95

Gains = tuple[float, float, float]


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint16 or frame.ndim != 3 or frame.shape[2] != 3:
        raise TypeError(f"expected a uint16 (H, W, 3) frame, got {frame.dtype} {frame.shape}")


def _luminance_preserving(gains: NDArray[np.float64], neutral: NDArray[np.float64]) -> Gains:
    """Scale ``gains`` so that ``neutral * gains`` has the luminance of ``neutral``."""
    scale = float(luma.WEIGHTS @ neutral) / float(luma.WEIGHTS @ (neutral * gains))
    g = gains * scale
    return (float(g[0]), float(g[1]), float(g[2]))


def gray_world_gains(
    frame: np.ndarray,
    *,
    clip_level: float = 0.98,
    dark_level: float = 0.01,
    max_gain_ratio: float = 4.0,
    max_samples: int = 40_000,
) -> Gains:
    """White-balance gains (r, g, b) that make the frame's average colour neutral.

    Pixels with any channel at or above ``clip_level`` (fraction of full scale, encoded) and
    pixels whose linear luminance is below ``dark_level`` are ignored. Gains are luminance
    preserving and limited so that no two differ by more than ``max_gain_ratio`` (a scene that
    really is one colour, e.g. a red sunset, should not be turned grey). With too few usable
    pixels (fewer than 0.1 %) the gains are (1, 1, 1). At most about ``max_samples`` pixels
    (a regular subsample) are read.
    """
    _check_frame(frame)
    h, w = frame.shape[:2]
    step = max(1, int(np.sqrt(h * w / max_samples)))
    sample = frame[::step, ::step].reshape(-1, 3)
    lin = srgb.to_linear(sample)
    usable = (sample.max(axis=1) < clip_level * srgb.MAX16) & (luma.luminance(lin) > dark_level)
    if usable.sum() < max(1, sample.shape[0] // 1000):
        return (1.0, 1.0, 1.0)
    mean = lin[usable].mean(axis=0, dtype=np.float64)
    target = float(luma.WEIGHTS @ mean)
    gains = target / np.maximum(mean, 1e-9)
    # Limit the spread of the gains about their geometric mean.
    centre = np.exp(np.log(gains).mean())
    half = np.sqrt(max_gain_ratio)
    gains = np.clip(gains, centre / half, centre * half)
    return _luminance_preserving(gains, mean)


def planckian_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 chromaticity (x, y) of a black body, by the cubic fit of Kim et al. (2006)."""
    t = float(kelvin)
    if not KELVIN_RANGE[0] <= t <= KELVIN_RANGE[1]:
        lo, hi = KELVIN_RANGE
        raise ValueError(f"colour temperature {t:g} K outside {lo:g}-{hi:g} K")
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return x, y


def planckian_linear_rgb(kelvin: float) -> NDArray[np.float64]:
    """Linear sRGB of a black body's white at luminance Y = 1 (may leave the gamut < 1900 K)."""
    x, y = planckian_xy(kelvin)
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y], dtype=np.float64)
    return XYZ_TO_LINEAR_SRGB @ xyz


def kelvin_gains(kelvin: float, reference: float = 6500.0) -> Gains:
    """Gains that turn the white of a ``kelvin`` black body into that of ``reference``.

    ``kelvin`` is the light the frames were taken in: 3200 K (tungsten) gives gains that cool
    the picture, 10000 K (blue shade) gains that warm it, and ``kelvin == reference`` gives
    (1, 1, 1). The luminance of a neutral is preserved.
    """
    source = planckian_linear_rgb(kelvin)
    target = planckian_linear_rgb(reference)
    if np.any(source <= 0) or np.any(target <= 0):
        raise ValueError(f"{kelvin:g} K or {reference:g} K lies outside the sRGB gamut")
    return _luminance_preserving(target / source, source)


def _cast_gains(gains: Gains | ArrayLike) -> Gains:
    g = tuple(float(v) for v in np.asarray(gains, dtype=np.float64).reshape(-1))
    if len(g) != 3 or not all(np.isfinite(v) and v > 0 for v in g):
        raise ValueError(f"gains must be three positive numbers, got {gains!r}")
    return (g[0], g[1], g[2])


@lru_cache(maxsize=16)
def _white_balance_lut(gains: Gains) -> NDArray[np.uint16]:
    lut = np.stack([srgb.gain_lut(g) for g in gains], axis=-1).reshape(65536, 1, 3)
    lut.setflags(write=False)
    return lut


def apply_lut16(frame: np.ndarray, lut: NDArray[np.uint16]) -> np.ndarray:
    """Look up every uint16 sample in a 65536-entry table, one table per channel.

    ``lut`` is (65536,) for all channels or (65536, 1, 3) per channel. Uses ``cv2.LUT``, which
    takes 16-bit input since OpenCV 5 (about 3x faster than numpy indexing); falls back to
    numpy on older OpenCV.
    """
    try:
        return cv2.LUT(frame, lut)
    except cv2.error:
        if lut.ndim == 1:
            looked_up: NDArray[np.uint16] = lut[frame]
            return looked_up
        return np.stack([lut[:, 0, c][frame[..., c]] for c in range(3)], axis=-1)


def apply_white_balance(frame: np.ndarray, gains: Gains | ArrayLike) -> np.ndarray:
    """Multiply each channel of a uint16 sRGB frame by its gain in linear light.

    Values pushed past white clip to white. Tables are cached per gains, so per-frame calls
    with the sequence's gains cost one lookup per sample.
    """
    _check_frame(frame)
    return apply_lut16(frame, _white_balance_lut(_cast_gains(gains)))


def contrast_curve(values: ArrayLike, contrast: float) -> NDArray[np.float64]:
    """The contrast S-curve on sRGB-encoded values in [0, 1].

    Two power curves meet at mid-grey ``p`` with slope ``contrast`` there:
    ``p (v/p)^c`` below, ``1 - (1-p) ((1-v)/(1-p))^c`` above. Black, mid-grey and white stay
    put, the curve is monotonic, and ``c = 1`` is the identity; ``c > 1`` steepens the mid-tones
    and rolls off shadows and highlights smoothly, ``c < 1`` flattens.
    """
    if contrast <= 0:
        raise ValueError(f"contrast must be > 0, got {contrast}")
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    p = MID_GREY
    low = p * (v / p) ** contrast
    high = 1.0 - (1.0 - p) * ((1.0 - v) / (1.0 - p)) ** contrast
    curve: NDArray[np.float64] = np.where(v <= p, low, high)
    return curve


@lru_cache(maxsize=16)
def _contrast_lut(contrast: float) -> NDArray[np.uint16]:
    lut = np.rint(contrast_curve(np.arange(65536) / 65535.0, contrast) * 65535).astype(np.uint16)
    lut.setflags(write=False)
    return lut


def saturation_matrix(saturation: float) -> NDArray[np.float32]:
    """3x3 matrix ``s I + (1 - s) 1 l^T`` with ``l`` the Rec. 709 luma weights.

    It keeps luma, scales chroma by ``s``; ``s = 0`` makes the three rows equal (exact grey).
    """
    if saturation < 0:
        raise ValueError(f"saturation must be >= 0, got {saturation}")
    s = float(saturation)
    return (s * np.eye(3) + (1.0 - s) * np.tile(luma.WEIGHTS, (3, 1))).astype(np.float32)


def adjust_contrast_saturation(
    frame: np.ndarray, contrast: float = 1.0, saturation: float = 1.0
) -> np.ndarray:
    """Contrast about mid-grey and saturation of a uint16 sRGB frame (exact identity at 1, 1)."""
    _check_frame(frame)
    if contrast <= 0:
        raise ValueError(f"contrast must be > 0, got {contrast}")
    out = frame if contrast == 1.0 else apply_lut16(frame, _contrast_lut(float(contrast)))
    if saturation != 1.0:
        out = cv2.transform(out, saturation_matrix(saturation))
    return out.copy() if out is frame else out


@dataclass(frozen=True)
class ColourGrade:
    """White balance, contrast and saturation for a whole sequence, applied in two passes.

    The white-balance gains (linear light) and the contrast curve (encoded) compose into one
    per-channel 16-bit table; saturation is one 3x3 ``cv2.transform``. Equivalent to
    ``adjust_contrast_saturation(apply_white_balance(f, gains), contrast, saturation)``.
    """

    gains: Gains = (1.0, 1.0, 1.0)
    contrast: float = 1.0
    saturation: float = 1.0
    _lut: NDArray[np.uint16] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        gains = _cast_gains(self.gains)
        object.__setattr__(self, "gains", gains)
        if self.contrast <= 0:
            raise ValueError(f"contrast must be > 0, got {self.contrast}")
        saturation_matrix(self.saturation)  # validates
        lut = None
        if gains != (1.0, 1.0, 1.0):
            lut = _white_balance_lut(gains)
        if self.contrast != 1.0:
            curve = _contrast_lut(float(self.contrast))
            lut = curve.reshape(65536, 1, 1).repeat(3, axis=2) if lut is None else curve[lut]
        object.__setattr__(self, "_lut", lut)

    @property
    def is_identity(self) -> bool:
        return self._lut is None and self.saturation == 1.0

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Grade one uint16 sRGB frame (a new array; the input is left untouched)."""
        _check_frame(frame)
        out = frame if self._lut is None else apply_lut16(frame, self._lut)
        if self.saturation != 1.0:
            out = cv2.transform(out, saturation_matrix(self.saturation))
        return out.copy() if out is frame else out


def shadow_lift_curve(values: ArrayLike, lift: float) -> NDArray[np.float64]:
    """The shadow-lift curve on sRGB-encoded values in [0, 1] (module docstring); identity at 0."""
    if not 0.0 <= lift <= 1.0:
        raise ValueError(f"shadow lift must be in [0, 1], got {lift}")
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    p = MID_GREY
    bump = (27.0 / 4.0) * v * (p - v) ** 2 / p**3
    lifted: NDArray[np.float64] = v + np.where(v < p, lift * SHADOW_LIFT_MAX * bump, 0.0)
    return lifted


@lru_cache(maxsize=64)
def _tone_lut(lift: float, contrast: float) -> NDArray[np.uint16]:
    v = np.arange(65536) / 65535.0
    curve = contrast_curve(shadow_lift_curve(v, lift), contrast)
    lut = np.rint(curve * 65535).astype(np.uint16)
    lut.setflags(write=False)
    return lut


def dark_channel(linear: np.ndarray, patch: int) -> NDArray[np.float32]:
    """Minimum over the colour channels and a ``patch`` x ``patch`` square (He et al. 2009)."""
    lowest = np.min(linear, axis=2).astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    dark: NDArray[np.float32] = np.asarray(cv2.erode(lowest, kernel), dtype=np.float32)
    return dark


def estimate_airlight(linear: np.ndarray, dark: np.ndarray, top: float = 0.001) -> Gains:
    """The airlight: mean colour of the ``top`` fraction of pixels with the brightest dark
    channel (He et al. pick the brightest of them; the mean is steadier from frame to frame)."""
    flat = dark.reshape(-1)
    k = max(1, int(flat.size * top))
    idx = np.argpartition(flat, flat.size - k)[-k:]
    a = linear.reshape(-1, 3)[idx].mean(axis=0, dtype=np.float64)
    a = np.clip(a, 1e-3, 1.0)
    return (float(a[0]), float(a[1]), float(a[2]))


def guided_filter(
    guide: np.ndarray, src: np.ndarray, radius: int, eps: float
) -> NDArray[np.float32]:
    """Edge-preserving smoothing of ``src`` by the grey ``guide`` (He, Sun & Tang, ECCV 2010):
    the local linear model ``q = a I + b`` fitted in every ``(2 radius + 1)`` window."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    i, p = guide.astype(np.float32), src.astype(np.float32)
    mean_i, mean_p = box(i), box(p)
    var_i = box(i * i) - mean_i * mean_i
    cov_ip = box(i * p) - mean_i * mean_p
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    q: NDArray[np.float32] = box(a) * i + box(b)
    return q


def dehaze_patch(shape: tuple[int, ...]) -> int:
    """The dark channel's patch for a frame: He et al.'s 15 px at 600 x 400, scaled (odd)."""
    return max(3, round(min(shape[0], shape[1]) / 27)) | 1


def dehaze(
    frame: np.ndarray, strength: float, airlight: Gains | None = None
) -> tuple[np.ndarray, Gains]:
    """Remove ``strength`` (0..0.95) of the haze from a uint16 sRGB frame by the dark channel
    prior (module docstring); returns the frame and the airlight used (estimated when None)."""
    _check_frame(frame)
    if not 0.0 <= strength <= MAX_DEHAZE:
        raise ValueError(f"dehaze strength must be in [0, {MAX_DEHAZE}], got {strength}")
    linear = srgb.to_linear(frame)
    patch = dehaze_patch(frame.shape)
    if airlight is None:
        airlight = estimate_airlight(linear, dark_channel(linear, patch))
    a = np.asarray(airlight, dtype=np.float32)
    if strength == 0.0:
        return frame.copy(), airlight
    transmission = 1.0 - np.float32(strength) * dark_channel(linear / a, patch)
    grey = luma.luminance(linear)
    transmission = guided_filter(grey, transmission, radius=2 * patch, eps=1e-3)
    np.clip(transmission, MIN_TRANSMISSION, 1.0, out=transmission)
    out = (linear - a) / transmission[..., None] + a
    return srgb.from_linear(out), airlight


@dataclass(frozen=True)
class Tone:
    """One shot's recorded tone (module docstring); ranges as the capture configuration's."""

    shadow_lift: float = 0.0
    contrast: float = 1.0
    dehaze: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shadow_lift <= 1.0:
            raise ValueError(f"tone.shadow_lift must be in [0, 1], got {self.shadow_lift}")
        if not 0.0 < self.contrast <= 3.0:
            raise ValueError(f"tone.contrast must be in (0, 3], got {self.contrast}")
        if not 0.0 <= self.dehaze <= MAX_DEHAZE:
            raise ValueError(f"tone.dehaze must be in [0, {MAX_DEHAZE}], got {self.dehaze}")

    @property
    def is_identity(self) -> bool:
        return self.shadow_lift == 0.0 and self.contrast == 1.0 and self.dehaze == 0.0

    @classmethod
    def from_record(cls, record: dict[str, object] | None) -> Tone | None:
        """The ``tone`` of a frame's Skylapse EXIF record; None when it has none. Raises
        ``ValueError`` naming the field for a malformed one."""
        tone = (record or {}).get("tone")
        if tone is None:
            return None
        if not isinstance(tone, dict):
            raise ValueError(f"tone: expected an object, got {tone!r}")
        values: dict[str, float] = {}
        for name in ("shadow_lift", "contrast", "dehaze"):
            if name in tone:
                value = tone[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"tone.{name}: expected a number, got {value!r}")
                values[name] = float(value)
        return cls(**values)


class ToneStage:
    """The recorded tone of each shot of a render, eased over ``ramp_frames`` shots (module
    docstring). A shot without a record takes the identity."""

    def __init__(self, tones: Sequence[Tone | None], ramp_frames: int = 24) -> None:
        table = np.array(
            [
                (t.shadow_lift, t.contrast, t.dehaze) if t is not None else (0.0, 1.0, 0.0)
                for t in tones
            ],
            dtype=np.float64,
        ).reshape(-1, 3)
        self.is_identity = all(t is None or t.is_identity for t in tones)
        if len(table) and ramp_frames > 1 and not self.is_identity:
            pad = ramp_frames // 2
            padded = np.pad(table, ((pad, pad), (0, 0)), mode="edge")
            kernel = np.ones(ramp_frames) / ramp_frames
            table = np.stack(
                [np.convolve(padded[:, c], kernel, mode="valid")[: len(table)] for c in range(3)],
                axis=1,
            )
        self.settings = table  # (shots, 3): shadow lift, contrast, dehaze per shot
        self._airlight: NDArray[np.float64] | None = None

    def tone(self, n: int) -> Tone:
        lift, contrast, haze = (round(float(v), 4) for v in self.settings[n])
        return Tone(lift, contrast, min(haze, MAX_DEHAZE))

    def apply(self, n: int, frame: np.ndarray) -> np.ndarray:
        """Shot ``n``'s tone on its uint16 sRGB frame (a new array)."""
        _check_frame(frame)
        tone = self.tone(n)
        out = frame
        if tone.dehaze > 0.0:
            linear = srgb.to_linear(frame)
            new = estimate_airlight(linear, dark_channel(linear, dehaze_patch(frame.shape)))
            a = (
                np.asarray(new)
                if self._airlight is None
                else 0.9 * self._airlight + 0.1 * np.asarray(new)
            )
            self._airlight = a
            out, _ = dehaze(frame, tone.dehaze, (float(a[0]), float(a[1]), float(a[2])))
        if tone.shadow_lift != 0.0 or tone.contrast != 1.0:
            out = apply_lut16(out, _tone_lut(tone.shadow_lift, tone.contrast))
        return out.copy() if out is frame else out
