"""The simulated sensor: noise, readout and development, pure functions on numpy arrays.

Sensor (``sensor_readout``, a pure function): the scene is rendered in linear light (linear
sRGB primaries, 1.0 fills the green channel's full well at the set exposure); the inverse of the
profile's colour matrix turns it into white-balanced camera RGB, and the lens's relative
illumination (vignetting) times the channel responses (the inverse of the profile's daylight
white-balance gains) into the light each channel collects. That becomes electrons (full well /
analogue gain per unit), gets Poisson shot noise (Gaussian approximation), dark-current shot
noise (doubling every few °C) and read noise, sits on the sensor's black level, clips at 0 and
full scale and is quantised at the sensor's bit depth. ``develop`` subtracts the black level and
applies the white balance and colour matrix, which gives the scene back; the result is encoded
to the uint16 sRGB pipeline convention.

Noise: :class:`NoiseBank` cuts standard normal noise for each frame from one pre-drawn field.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from skylapse.imaging import srgb


def sensor_readout(
    radiance: np.ndarray,
    response: np.ndarray,
    noise: np.ndarray,
    *,
    electrons_at_full_scale: float,
    read_noise_e: float,
    dark_e: float,
    bit_depth: int,
    black_level: int = 0,
) -> np.ndarray:
    """Raw sensor codes (uint16, 0..2**bit_depth - 1) for a radiance image.

    ``response`` (broadcastable to the image) is the per-pixel, per-channel fraction of the
    light that is collected (vignetting x channel sensitivity); ``electrons_at_full_scale`` is
    the full well divided by the analogue gain, so higher gain means fewer electrons for the
    same output level and relatively more shot and read noise. ``noise`` is standard normal
    noise of the image's shape. Noise model: Gaussian approximation of Poisson shot noise on
    signal and dark current, plus read noise; the mean dark signal is removed as black-level
    correction and the signal sits on ``black_level`` (codes), so read noise in the dark swings
    around it as on a real sensor. Saturation clips at full scale. (Janesick, "Photon Transfer",
    SPIE 2007.)
    """
    e: np.ndarray = cv2.multiply(
        radiance, response, scale=electrons_at_full_scale, dtype=cv2.CV_32F
    )
    sd = np.maximum(e, 0.0)
    sd += np.float32(dark_e + read_noise_e**2)
    cv2.sqrt(sd, sd)
    e += cv2.multiply(sd, noise)
    levels = float(2**bit_depth - 1)
    # scale to codes and round; convertScaleAbs-like saturation via clip then astype
    e *= np.float32((levels - black_level) / electrons_at_full_scale)
    if black_level:
        e += np.float32(black_level)
    np.clip(e, 0.0, levels, out=e)
    return (e + np.float32(0.5)).astype(np.uint16)


def develop(
    codes: np.ndarray,
    bit_depth: int,
    wb_gains: tuple[float, float],
    ccm: np.ndarray | None,
    black_level: int = 0,
) -> np.ndarray:
    """Raw codes to the uint16 sRGB pipeline frame: black level, white balance (red, blue gains;
    green 1), colour matrix, clip, sRGB encode.

    With an identity colour matrix every output value depends on one code of one channel, so
    the whole development is one table look-up per channel (exact, and ~5x cheaper than the
    float path, which handles a real matrix)."""
    levels = 2**bit_depth - 1
    span = levels - black_level
    gains = np.array([wb_gains[0], 1.0, wb_gains[1]])
    if ccm is None or np.allclose(ccm, np.eye(3)):
        out = np.empty(codes.shape, np.uint16)
        encode = _encode_lut16()
        signal = np.arange(levels + 1) - black_level
        for c in range(3):
            lin = np.clip(signal * (gains[c] / span), 0.0, 1.0)
            lut = encode[np.rint(lin * srgb.MAX16).astype(np.int64)]
            np.take(lut, codes[..., c], out=out[..., c])
        return out
    signal = codes.astype(np.float32) - np.float32(black_level)
    signal *= (gains / span).astype(np.float32)
    linear = cv2.transform(signal, np.asarray(ccm, np.float32))
    np.clip(linear, 0.0, 1.0, out=linear)
    return linear_to_frame(linear)


@cache
def _encode_lut16() -> np.ndarray:
    lut = srgb.from_linear(np.arange(srgb.MAX16 + 1) / srgb.MAX16)
    lut.setflags(write=False)
    return lut


def linear_to_frame(linear: np.ndarray) -> np.ndarray:
    """Linear [0, 1] float to the uint16 sRGB pipeline frame, through a 65536-entry table."""
    codes = (linear * np.float32(srgb.MAX16) + np.float32(0.5)).astype(np.uint16)
    return _encode_lut16()[codes]


class NoiseBank:
    """Standard normal noise for frames, cut from one pre-drawn field at random offsets.

    Drawing 6 M normal samples per 1080p frame costs more than rendering the scene; a field
    slightly larger than the frame, cut at a random offset and sign per frame, gives samples
    that are independent between frames at any pixel (white noise shifted is uncorrelated with
    itself) at the cost of a slice. Deterministic for the seed.
    """

    PAD = 64

    def __init__(self, shape: tuple[int, ...], seed: int) -> None:
        rng = np.random.default_rng([seed, 0x5EED])
        self.shape = shape
        h, w = shape[0], int(np.prod(shape[1:]))
        self._field = rng.standard_normal((h + self.PAD, w + self.PAD), dtype=np.float32)

    def draw(
        self, rng: np.random.Generator, rows: slice = slice(None), cols: slice = slice(None)
    ) -> np.ndarray:
        """Noise of ``shape`` (optionally only the window ``rows``, ``cols`` of it)."""
        dy, dx = (int(v) for v in rng.integers(0, self.PAD, 2))
        h, w = self.shape[0], int(np.prod(self.shape[1:]))
        field = self._field[dy : dy + h, dx : dx + w].reshape(self.shape)[rows, cols]
        return -field if rng.integers(2) else field
