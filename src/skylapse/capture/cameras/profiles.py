"""Camera profiles: what we know about a sensor and its lens, kept in YAML and validated on load.

A profile describes a camera model, not one unit: sensor geometry and Bayer pattern, the colour
matrix, focus calibration (lens position in dioptres against subject distance, hyperfocal
distance, and whether to autofocus or park at infinity), lens corrections (OpenCV
distortion coefficients, radial vignetting), noise characteristics, thermal limits, and the
exposure and gain ranges the capture service plans with. The backends read limits from it; the
simulated camera builds its sensor model from it.

Shipped profiles live in ``skylapse/data/cameras/*.yaml`` (``builtin_profile("imx708")``);
``load_profile(path)`` reads any other file. Errors name the file and the offending field:

>>> shipped = PROFILE_PACKAGE_DIR + "/imx708.yaml"
>>> text = resources.files("skylapse").joinpath(shipped).read_text()
>>> try:
...     parse_profile(text.replace("max_s: 112.0", "max_s: -1"), "bad.yaml")
... except ProfileError as exc:
...     print(exc)
bad.yaml: exposure.max_s: Input should be greater than 0
"""

from __future__ import annotations

import itertools
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skylapse.config import parse_yaml, read_yaml

PROFILE_PACKAGE_DIR = "data/cameras"


class ProfileError(ValueError):
    """A camera profile could not be read or is invalid; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSpec(_Strict):
    model: str = Field(min_length=1)  # libcamera's sensor name, e.g. "imx708"
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    pixel_size_um: float = Field(gt=0)
    # CFA order of the unflipped readout; None for devices that only deliver processed frames
    bayer_pattern: Literal["RGGB", "BGGR", "GRBG", "GBRG"] | None = None
    bit_depth: Literal[8, 10, 12, 14, 16] = 10
    # raw code of no light, at bit_depth; None = libcamera's default for the Pi sensors, 4096 in
    # 16-bit units (64 at 10 bits, 256 at 12)
    black_level: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _black_below_white(self) -> Self:
        if self.black_codes >= 2**self.bit_depth - 1:
            raise ValueError(f"black_level {self.black_codes} must be below the white level")
        return self

    @property
    def black_codes(self) -> int:
        """The black level in raw codes at ``bit_depth``."""
        if self.black_level is not None:
            return self.black_level
        return 4096 >> (16 - self.bit_depth)

    @property
    def size_mm(self) -> tuple[float, float]:
        pitch_mm = self.pixel_size_um / 1000
        return (self.width_px * pitch_mm, self.height_px * pitch_mm)


class ColourSpec(_Strict):
    # camera RGB (after white balance) to linear sRGB; rows sum to 1 so that grey stays grey
    ccm: list[list[float]]
    ccm_temperature_k: float = Field(default=5000.0, gt=1000, lt=20000)
    # red and blue gains that make a daylight-lit grey card neutral (green = 1)
    daylight_wb_gains: tuple[float, float] = (1.8, 1.6)

    @field_validator("ccm")
    @classmethod
    def _ccm_shape(cls, v: list[list[float]]) -> list[list[float]]:
        if len(v) != 3 or any(len(row) != 3 for row in v):
            raise ValueError("must be a 3x3 matrix")
        for i, row in enumerate(v):
            if abs(sum(row) - 1.0) > 0.05:
                raise ValueError(f"row {i} sums to {sum(row):.3f}, expected 1 (grey stays grey)")
        return v

    @field_validator("daylight_wb_gains")
    @classmethod
    def _gains_positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) <= 0:
            raise ValueError("gains must be positive")
        return v

    @property
    def ccm_array(self) -> np.ndarray:
        return np.asarray(self.ccm, dtype=np.float32)


class LensSpec(_Strict):
    focal_length_mm: float = Field(gt=0)
    aperture_f: float = Field(gt=0)  # fixed aperture of the module's lens
    # OpenCV model (k1, k2, p1, p2[, k3]) for cv2.undistort, normalised by the focal length in px
    distortion: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    # relative illumination 1 + a1·r² + a2·r⁴, r = distance from centre / half-diagonal
    vignetting: list[float] = Field(default_factory=lambda: [0.0, 0.0])

    @field_validator("distortion")
    @classmethod
    def _distortion_len(cls, v: list[float]) -> list[float]:
        if len(v) not in (4, 5):
            raise ValueError("expected 4 or 5 coefficients (k1, k2, p1, p2[, k3])")
        return v

    @field_validator("vignetting")
    @classmethod
    def _vignetting_corner(cls, v: list[float]) -> list[float]:
        if len(v) != 2:
            raise ValueError("expected 2 coefficients (a1, a2)")
        corner = 1.0 + v[0] + v[1]
        if not 0.05 < corner <= 1.0 + 1e-9:
            raise ValueError(f"gives corner illumination {corner:.2f}, expected within (0.05, 1]")
        return v

    def relative_illumination(self, width: int, height: int) -> np.ndarray:
        """(H, W) float32 map of the lens's light falloff, 1 at the centre."""
        y = (np.arange(height, dtype=np.float32) - (height - 1) / 2)[:, None]
        x = (np.arange(width, dtype=np.float32) - (width - 1) / 2)[None, :]
        r2 = (x * x + y * y) / np.float32(((width - 1) / 2) ** 2 + ((height - 1) / 2) ** 2)
        a1, a2 = self.vignetting
        return (1.0 + a1 * r2 + a2 * r2 * r2).astype(np.float32)


class FocusPoint(_Strict):
    lens_position: float  # dioptres (libcamera LensPosition)
    distance_m: float = Field(gt=0)  # .inf for infinity


class FocusSpec(_Strict):
    # auto: contrast/AF search; fixed_infinity: park at infinity (no search); manual: leave as set
    mode: Literal["auto", "fixed_infinity", "manual"] = "auto"
    has_motor: bool = True  # False for fixed-focus modules (IMX219, most USB cameras)
    lens_position_range: tuple[float, float] = (0.0, 10.0)
    infinity_lens_position: float = 0.0
    calibration: list[FocusPoint] = Field(default_factory=list)
    hyperfocal_m: float = Field(gt=0)
    # Gaussian sigma of the defocus blur, in px at full sensor width, per dioptre of focus error
    defocus_sigma_px_per_dioptre: float = Field(default=4.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        lo, hi = self.lens_position_range
        if not hi > lo:
            raise ValueError("lens_position_range must be (min, max) with max > min")
        if not lo <= self.infinity_lens_position <= hi:
            raise ValueError("infinity_lens_position lies outside lens_position_range")
        if self.mode == "auto" and not self.has_motor:
            raise ValueError("mode 'auto' needs has_motor: true")
        pts = sorted(self.calibration, key=lambda p: p.lens_position)
        dists = [p.distance_m for p in pts]
        if any(b >= a for a, b in itertools.pairwise(dists)):
            raise ValueError("calibration distances must fall as lens_position rises")
        return self

    def distance_for(self, lens_position: float) -> float:
        """Subject distance in focus at ``lens_position``, interpolated in dioptres (1/m)."""
        pts = sorted(self.calibration, key=lambda p: p.lens_position)
        if len(pts) < 2:  # uncalibrated: libcamera's own convention, position = 1/distance
            d = lens_position - self.infinity_lens_position
            return math.inf if d <= 0 else 1.0 / d
        dioptres = np.interp(
            lens_position,
            [p.lens_position for p in pts],
            [0.0 if math.isinf(p.distance_m) else 1.0 / p.distance_m for p in pts],
        )
        return math.inf if dioptres <= 0 else float(1.0 / dioptres)

    def lens_position_for(self, distance_m: float) -> float:
        """Lens position that focuses at ``distance_m`` (``math.inf`` for infinity)."""
        target = 0.0 if math.isinf(distance_m) else 1.0 / distance_m
        pts = sorted(self.calibration, key=lambda p: p.lens_position)
        if len(pts) < 2:
            return self.infinity_lens_position + target
        dioptres = [0.0 if math.isinf(p.distance_m) else 1.0 / p.distance_m for p in pts]
        return float(np.interp(target, dioptres, [p.lens_position for p in pts]))


class NoiseSpec(_Strict):
    full_well_e: float = Field(gt=0)  # electrons at clipping, unity gain
    read_noise_e: float = Field(ge=0)  # input-referred, electrons rms
    dark_current_e_per_s: float = Field(default=0.5, ge=0)  # at 25 °C
    dark_current_doubling_c: float = Field(default=6.0, gt=0)


class ThermalSpec(_Strict):
    warn_c: float
    max_operating_c: float
    self_heating_c: float = Field(default=8.0, ge=0)  # sensor above ambient while streaming

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.warn_c >= self.max_operating_c:
            raise ValueError("warn_c must be below max_operating_c")
        return self


class ExposureSpec(_Strict):
    min_s: float = Field(gt=0)
    max_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_s >= self.max_s:
            raise ValueError("min_s must be below max_s")
        return self

    @property
    def range_s(self) -> tuple[float, float]:
        return (self.min_s, self.max_s)


class GainSpec(_Strict):
    min: float = Field(default=1.0, gt=0)
    max: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min >= self.max:
            raise ValueError("min must be below max")
        return self

    @property
    def range(self) -> tuple[float, float]:
        return (self.min, self.max)


class V4L2Spec(_Strict):
    """How a USB camera's V4L2 control units map to physical ones (devices differ)."""

    exposure_unit_s: float = Field(default=0.0001, gt=0)  # V4L2 exposure_absolute: 100 µs
    gain_at_unity: float = 0.0  # device gain value for analogue gain 1
    gain_units_per_unity: float = Field(default=16.0, gt=0)  # device units per +1 of gain


class CameraProfile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    sensor: SensorSpec
    colour: ColourSpec
    lens: LensSpec
    focus: FocusSpec
    noise: NoiseSpec
    thermal: ThermalSpec
    exposure: ExposureSpec
    gain: GainSpec
    v4l2: V4L2Spec = Field(default_factory=V4L2Spec)
    # output size when configure() is not given one; None = the full sensor
    default_resolution: tuple[int, int] | None = None

    @property
    def resolution(self) -> tuple[int, int]:
        return self.default_resolution or (self.sensor.width_px, self.sensor.height_px)


def parse_profile(text: str, source: str) -> CameraProfile:
    """Validate YAML text as a profile; ``source`` (a file name) is used in error messages."""
    return parse_yaml(CameraProfile, text, source, ProfileError)


def load_profile(path: str | Path) -> CameraProfile:
    """Read and validate a profile file."""
    return read_yaml(CameraProfile, path, ProfileError)


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    folder = resources.files("skylapse").joinpath(PROFILE_PACKAGE_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


@cache
def builtin_profile(name: str) -> CameraProfile:
    """A shipped profile by name (``imx519``, ``imx708``, ``imx219``, ``usb_generic``,
    ``simulated``)."""
    res = resources.files("skylapse").joinpath(f"{PROFILE_PACKAGE_DIR}/{name}.yaml")
    if not res.is_file():
        raise ProfileError(f"no shipped camera profile {name!r}; have {available_profiles()}")
    return parse_profile(res.read_text(), f"{PROFILE_PACKAGE_DIR}/{name}.yaml")


def profile_for_sensor(model: str) -> CameraProfile | None:
    """The shipped profile whose sensor model prefixes libcamera's name (``imx708_wide`` ->
    ``imx708``), or None."""
    model = model.lower()
    for name in available_profiles():
        prof = builtin_profile(name)
        if model.startswith(prof.sensor.model.lower()):
            return prof
    return None
