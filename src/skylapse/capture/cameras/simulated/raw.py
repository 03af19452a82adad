"""The simulated camera's RAW output: a real DNG of the sensor's codes.

With ``CameraConfig(raw=True)``, ``dng_path`` also saves a real DNG: the raw codes sampled
through the profile's Bayer pattern (``bayer_mosaic``), written by PiDNG from the metadata
libcamera would report (``dng_bytes``), so it carries the tags picamera2's own DNGs carry (CFA
pattern, black and white level, ColorMatrix1 from the colour matrix, AsShotNeutral from the
white balance, exposure time, ISO). LibRaw develops it, in linear light, back to the scene's
linear render (within the sensor's noise and demosaicing). A RAW stream needs an even height
and a width that PiDNG can pack at the bit depth (even at 12 bits, a multiple of 4 at 10).
"""

from __future__ import annotations

import numpy as np

#: Bytes per packed group of pixels PiDNG needs the width to be a multiple of, by bit depth.
DNG_PACKING = {8: 1, 10: 4, 12: 2, 14: 6, 16: 1}
_CFA_CHANNEL = {"R": 0, "G": 1, "B": 2}


def bayer_mosaic(codes: np.ndarray, pattern: str) -> np.ndarray:
    """The (H, W) Bayer mosaic of (H, W, 3) per-channel codes: each photosite keeps the channel
    its filter passes. ``pattern`` is the 2x2 CFA read row by row ("RGGB": R at (0, 0), G at
    (0, 1) and (1, 0), B at (1, 1)), as in libcamera's format names."""
    out = np.empty(codes.shape[:2], codes.dtype)
    for k, letter in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = codes[dy::2, dx::2, _CFA_CHANNEL[letter]]
    return out


def dng_bytes(
    mosaic: np.ndarray,
    *,
    pattern: str,
    bit_depth: int,
    black_level: int,
    wb_gains: tuple[float, float],
    ccm: np.ndarray,
    exposure_time_s: float,
    analogue_gain: float,
    timestamp_ns: int,
) -> bytes:
    """A DNG of a Bayer mosaic, written the way picamera2's ``save_dng`` writes one: PiDNG's
    ``Picamera2Camera`` model built from the raw stream's configuration (an unpacked
    ``S<pattern><bits>`` format, 16-bit samples) and libcamera-style metadata
    (``SensorBlackLevels`` in 16-bit units, ``ColourGains``, ``ColourCorrectionMatrix``,
    ``ExposureTime`` in µs, gains), converted by ``PICAM2DNG``. PiDNG derives ColorMatrix1 as
    inverse(sRGB-to-XYZ · CCM · gains) and AsShotNeutral as 1 / gains."""
    from pidng.camdefs import Picamera2Camera
    from pidng.core import PICAM2DNG

    height, width = mosaic.shape
    raw_config = {"size": (width, height), "format": f"S{pattern}{bit_depth}", "stride": 2 * width}
    metadata = {
        "SensorBlackLevels": [black_level << (16 - bit_depth)] * 4,
        "ColourGains": (float(wb_gains[0]), float(wb_gains[1])),
        "ColourCorrectionMatrix": tuple(float(v) for v in np.asarray(ccm).flatten()),
        "ExposureTime": max(1, round(exposure_time_s * 1e6)),
        "AnalogueGain": float(analogue_gain),
        "DigitalGain": 1.0,
        "SensorTimestamp": int(timestamp_ns),
    }
    writer = PICAM2DNG(Picamera2Camera(raw_config, metadata))
    writer.options(compress=False)
    # the buffer as picamera2 hands it over: bytes, one row per stride
    buffer = np.ascontiguousarray(mosaic, dtype=np.uint16).view(np.uint8)
    return bytes(writer.convert(buffer))
