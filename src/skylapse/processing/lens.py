"""Lens correction: geometric distortion and vignetting, from a YAML lens profile.

Distortion follows OpenCV's Brown-Conrady model (Brown 1966; Conrady 1919): a point at
normalized camera coordinates (x, y), r^2 = x^2 + y^2, is imaged at
``x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2)`` (and symmetrically for y).
The profile gives the focal length and optical centre as fractions of the image size, so one
profile fits every resolution of the same sensor framing. Vignetting is the lens's relative
illumination ``V(r) = 1 + a r^2 + b r^4 + c r^6``, with r the distance from the optical
centre over the half-diagonal; it is divided out in linear light (it is a physical falloff
of irradiance, so an sRGB-encoded correction would tint and misbalance the corners).

Pass 2 API: build ``maps = lens_correction_maps(profile, (width, height))`` once per
sequence (``cv2.initUndistortRectifyMap``, fixed-point maps), then ``correct_lens(frame, maps)``
per frame: one ``cv2.remap`` and, with vignetting, one lookup + one multiply + one lookup.
Distortion is a property of the full sensor image about its optical centre: apply the
correction to frames as the camera framed them (before a stabilization crop), or compose
``maps.source_x/source_y`` with the stabilization warp so that one remap does both.

``load_lens_profile(path)`` reads a profile; errors name the file and the field, e.g.
``lens.yaml: distortion.k1: Input should be a valid number``. An annotated example ships as
``skylapse/data/lens/example-wide.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skylapse.config import parse_yaml, read_yaml
from skylapse.imaging import srgb

LENS_PACKAGE_DIR = "data/lens"


class LensProfileError(ValueError):
    """A lens profile that cannot be read or is invalid; the message names file and field."""


class Distortion(BaseModel):
    """Brown-Conrady coefficients as OpenCV orders them: radial k1 k2 k3, tangential p1 p2."""

    model_config = ConfigDict(extra="forbid")
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    def coefficients(self) -> np.ndarray:
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3], dtype=np.float64)

    @property
    def is_zero(self) -> bool:
        return not np.any(self.coefficients())


class Vignetting(BaseModel):
    """Relative illumination V(r) = 1 + a r^2 + b r^4 + c r^6, r = radius / half-diagonal."""

    model_config = ConfigDict(extra="forbid")
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0

    def relative_illumination(self, r: np.ndarray) -> np.ndarray:
        r2 = np.asarray(r, dtype=np.float64) ** 2
        return 1.0 + r2 * (self.a + r2 * (self.b + r2 * self.c))

    @property
    def is_zero(self) -> bool:
        return self.a == self.b == self.c == 0.0

    @model_validator(mode="after")
    def _positive_in_frame(self) -> Vignetting:
        # Up to the corners (plus a margin for a shifted centre), light must still arrive.
        low = float(self.relative_illumination(np.linspace(0.0, 1.5, 151)).min())
        if low < 0.05:
            raise ValueError(
                f"relative illumination falls to {low:.3g} within 1.5 half-diagonals; "
                "it must stay above 0.05"
            )
        return self


class LensProfile(BaseModel):
    """A lens as calibrated on one camera framing (see ``example-wide.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    focal_length: float = Field(gt=0, description="fx = fy = focal_length * image width, px")
    principal_point: tuple[float, float] = Field(
        default=(0.5, 0.5), description="optical centre as fractions of width and height"
    )
    calibrated_size: tuple[int, int] | None = Field(
        default=None, description="[width, height] of the calibration images, for the aspect"
    )
    distortion: Distortion = Field(default_factory=Distortion)
    vignetting: Vignetting = Field(default_factory=Vignetting)

    def camera_matrix(self, size: tuple[int, int]) -> np.ndarray:
        """The 3x3 pinhole camera matrix for frames of ``size`` = (width, height) pixels."""
        width, height = size
        if self.calibrated_size is not None:
            cw, ch = self.calibrated_size
            if abs(width / height - cw / ch) > 0.01 * cw / ch:
                raise ValueError(
                    f"lens profile {self.name!r} was calibrated at {cw}x{ch}; frames of "
                    f"{width}x{height} have another aspect ratio (cropped?)"
                )
        f = self.focal_length * width
        cx, cy = self.principal_point
        # Pixel centres: OpenCV's pixel (0, 0) is centred at 0, so the centre is (w-1)/2.
        return np.array([[f, 0, cx * (width - 1)], [0, f, cy * (height - 1)], [0, 0, 1.0]])


def parse_lens_profile(text: str, source: str) -> LensProfile:
    """Validate YAML text as a lens profile; ``source`` names it in error messages."""
    return parse_yaml(LensProfile, text, source, LensProfileError)


def load_lens_profile(path: str | Path) -> LensProfile:
    """Read and validate a lens profile file."""
    return read_yaml(LensProfile, path, LensProfileError)


@cache
def builtin_lens_profile(name: str) -> LensProfile:
    """A shipped lens profile by name (``example-wide``)."""
    res = resources.files("skylapse").joinpath(f"{LENS_PACKAGE_DIR}/{name}.yaml")
    if not res.is_file():
        raise LensProfileError(f"no shipped lens profile {name!r}")
    return parse_lens_profile(res.read_text(), f"{LENS_PACKAGE_DIR}/{name}.yaml")


@dataclass(frozen=True)
class LensMaps:
    """Everything ``correct_lens`` needs for one frame size, built once per sequence.

    ``map1``/``map2`` are the fixed-point remap tables (None when there is no distortion),
    ``gain`` the per-pixel vignetting gain at the output pixels, replicated over the three
    channels and pre-scaled for the 16-bit linear lookup (None without vignetting);
    ``source_x``/``source_y`` the float source coordinates of each output pixel (for composing
    with other warps); ``camera_matrix`` and ``new_camera_matrix`` the input and output
    intrinsics.
    """

    size: tuple[int, int]
    map1: np.ndarray | None
    map2: np.ndarray | None
    gain: np.ndarray | None
    source_x: np.ndarray
    source_y: np.ndarray
    camera_matrix: np.ndarray
    new_camera_matrix: np.ndarray


def lens_correction_maps(
    profile: LensProfile, size: tuple[int, int], *, fill: bool = True
) -> LensMaps:
    """Undistortion maps and the vignetting gain map for frames of ``size`` = (width, height).

    With ``fill`` the output is scaled (``cv2.getOptimalNewCameraMatrix`` with alpha 0) so that
    every output pixel has source data: no black corners after correcting pincushion, and the
    edge content that barrel correction would push out of frame is kept where possible.
    Without it the output keeps the input's focal length and centre.
    """
    width, height = size
    k = profile.camera_matrix(size)
    dist = profile.distortion.coefficients()
    if fill and not profile.distortion.is_zero:
        new_k, _ = cv2.getOptimalNewCameraMatrix(
            k, dist, size, 0.0, size, centerPrincipalPoint=False
        )
    else:
        new_k = k.copy()
    src_x, src_y = cv2.initUndistortRectifyMap(k, dist, None, new_k, size, cv2.CV_32FC1)
    map1 = map2 = None
    if not profile.distortion.is_zero or not np.allclose(new_k, k):
        map1, map2 = cv2.convertMaps(src_x, src_y, cv2.CV_16SC2)

    gain = None
    if not profile.vignetting.is_zero:
        half_diagonal = 0.5 * np.hypot(width, height)
        r = np.hypot(src_x - k[0, 2], src_y - k[1, 2]) / half_diagonal
        illumination = profile.vignetting.relative_illumination(r)
        # Scaled so that linear light (0..1) times gain is the 16-bit linear index.
        g = (srgb.MAX16 / illumination).astype(np.float32)
        gain = cv2.merge([g, g, g])
    return LensMaps(size, map1, map2, gain, src_x, src_y, k, new_k)


@cache
def _encode_from_linear16() -> NDArray[np.uint16]:
    """uint16 linear index -> uint16 sRGB code. Near black a 16-bit linear step is ~13 sRGB
    codes (1/20 of an 8-bit level): fine for 8- and 10-bit output."""
    lut = np.rint(srgb.encode(np.arange(srgb.MAX16 + 1) / srgb.MAX16) * srgb.MAX16)
    lut = lut.astype(np.uint16)
    lut.setflags(write=False)
    return lut


@cache
def _decode_to_float() -> NDArray[np.float32]:
    lut = srgb.to_linear(np.arange(srgb.MAX16 + 1, dtype=np.uint16))
    lut.setflags(write=False)
    return lut


def _lut(frame: np.ndarray, table: NDArray[np.uint16 | np.float32]) -> np.ndarray:
    try:
        return cv2.LUT(frame, table)  # 16-bit input needs OpenCV >= 5
    except cv2.error:
        return np.take(table, frame)


def correct_lens(frame: np.ndarray, maps: LensMaps) -> np.ndarray:
    """Undistort (bilinear remap) and devignette (in linear light) one uint16 RGB frame."""
    if frame.dtype != np.uint16 or frame.ndim != 3 or frame.shape[2] != 3:
        raise TypeError(f"expected a uint16 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    if (frame.shape[1], frame.shape[0]) != maps.size:
        raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, maps are for {maps.size}")
    out = frame
    if maps.map1 is not None:
        out = cv2.remap(
            frame, maps.map1, maps.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    if maps.gain is not None:
        linear = _lut(out, _decode_to_float())
        index = cv2.multiply(linear, maps.gain, dtype=cv2.CV_16U)  # rounds and clips
        out = _lut(index, _encode_from_linear16())
    return out.copy() if out is frame else out
