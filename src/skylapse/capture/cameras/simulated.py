"""The simulated camera: a procedural mountain scene lit by the real sun, seen through a sensor.

It is the embedded default, so the whole capture service (scheduling, exposure control, HDR,
autofocus, the local buffer) runs end to end without hardware, and an evening can be simulated
in seconds with a :class:`~skylapse.capture.clock.SimulatedClock`.

Light: the sun's altitude and azimuth for the camera's location and the clock's time come from
astral; the scene (``skylapse.scene``: ridges, snow, forest, sky gradient, golden and blue
hour colours, alpenglow) is rendered at the brightness of the shared sky table
(``skylapse.sky.ev100``: about 15 EV at 60°, 8.3 at sunset, 0.5 at −6°, −8 at −12°, −10 under
starlight) relative to the camera's exposure value. Clouds come from the weather (cover) and
drift with the wind (speed and direction projected across the view); the weather also lights
the scene (``skylapse.scene.render_frame``): cloud cover darkens it (Kasten & Czeplak, −2 EV
under a full overcast) and flattens it, storm winds move and reshape the clouds fast, fog (a
visibility under 10 km) veils it. ``weather`` may be a function of time, e.g. a replayed
OpenWeatherMap file (`skylapse.capture.weather_replay`).

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

Lens: defocus blur is a Gaussian whose sigma grows with the distance of the lens position from
the profile's calibrated infinity position (the scene is at infinity), on top of a small
constant lens softness, so contrast autofocus has a real peak to find.

Deterministic: the scene, clouds and noise depend only on the seed, the clock and the order of
captures. Cost at 1920x1080 (measured on a shared 2-core machine): the static scene is built once
per size and seed (1-3 s, cached), then ~0.2 s per frame (render ~55 ms, sensor ~100 ms), so
0.5 s capture intervals hold; autofocus takes ~0.8 s. Capture advances the clock by the
exposure time (the shutter is open that long).

Frame pixels: uint16 RGB, sRGB-encoded, after white balance (the pipeline convention). With
``CameraConfig(raw=True)``, ``dng_path`` also saves a real DNG: the raw codes sampled through the
profile's Bayer pattern (``bayer_mosaic``), written by PiDNG from the metadata libcamera would
report (``dng_bytes``), so it carries the tags picamera2's own DNGs carry (CFA pattern, black and
white level, ColorMatrix1 from the colour matrix, AsShotNeutral from the white balance,
exposure time, ISO). LibRaw develops it, in linear light, back to the scene's linear render
(within the sensor's noise and demosaicing). A RAW stream needs an even height and a width that
PiDNG can pack at the bit depth (even at 12 bits, a multiple of 4 at 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any

import astral
import astral.sun
import cv2
import numpy as np

from skylapse import sky
from skylapse.capture.cameras.base import (
    Camera,
    CameraCapability,
    CameraConfig,
    CameraError,
    CaptureSettings,
    Frame,
    FrameMetadata,
)
from skylapse.capture.cameras.focus import contrast_autofocus, focus_score
from skylapse.capture.cameras.profiles import CameraProfile, builtin_profile
from skylapse.capture.clock import Clock
from skylapse.imaging import srgb
from skylapse.scene import CloudLayer, MountainScene, cloud_layer, mountain_scene, render_frame

#: Distance of the cloud deck along the line of sight, for turning wind speed into pixels.
CLOUD_DISTANCE_M = 4000.0
#: Optical softness of the simulated lens in focus (Gaussian sigma, output pixels).
LENS_SOFTNESS_PX = 0.6
#: Up to this wind the clouds evolve at the cloud layer's own pace; faster winds speed it up.
CALM_WIND_MPS = 6.0


@dataclass(frozen=True)
class Location:
    """Where the simulated camera stands (degrees, metres)."""

    latitude: float = 46.55
    longitude: float = 7.98
    elevation_m: float = 2000.0


@dataclass(frozen=True)
class SimWeather:
    """The weather the simulated camera sees. ``wind_from_deg`` is meteorological (from)."""

    cloud_cover: float = 0.3
    wind_speed_mps: float = 6.0
    wind_from_deg: float = 270.0
    temperature_c: float = 5.0
    visibility_m: float = 10_000.0  # meteorological; 10 km and more is clear air

    @classmethod
    def from_observation(cls, obs: Any, **overrides: float) -> SimWeather:
        """From a ``skylapse.capture.weather.WeatherObservation`` (cloud_cover_pct, wind_ms,
        visibility_m, clear air when absent); what it lacks (wind direction, temperature) comes
        from ``overrides`` or the defaults."""
        values = {
            "cloud_cover": float(obs.cloud_cover_pct) / 100.0,
            "wind_speed_mps": float(obs.wind_ms),
            "visibility_m": float(getattr(obs, "visibility_m", cls.visibility_m)),
            **overrides,
        }
        return cls(**values)


WeatherSource = SimWeather | Callable[[datetime], SimWeather]


# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------


def sun_position(location: Location, when: datetime) -> tuple[float, float]:
    """(altitude, azimuth) of the sun in degrees, with refraction (astral, NOAA algorithm)."""
    obs = astral.Observer(location.latitude, location.longitude, location.elevation_m)
    return (float(astral.sun.elevation(obs, when)), float(astral.sun.azimuth(obs, when)))


def exposure_ev100(exposure_time_s: float, analogue_gain: float, aperture_f: float) -> float:
    """EV100 a camera setting is exposed for: log2(N²/t) − log2(ISO/100), ISO = 100·gain."""
    return math.log2(aperture_f**2 / exposure_time_s) - math.log2(analogue_gain)


def metered_exposure(
    scene_ev100: float,
    aperture_f: float,
    exposure_range: tuple[float, float],
    gain_range: tuple[float, float],
    gain: float | None = None,
) -> tuple[float, float]:
    """(exposure time, gain) that expose a scene of ``scene_ev100`` as metered.

    Exposure time first at the lowest gain; gain is raised only once the exposure limit is
    reached (the noise-optimal order for a sensor whose read noise is small).
    """
    lo_t, hi_t = exposure_range
    g = gain if gain is not None else gain_range[0]
    t = aperture_f**2 / (2.0**scene_ev100 * g)
    if t > hi_t and gain is None:
        g = min(gain_range[1], g * t / hi_t)
        t = aperture_f**2 / (2.0**scene_ev100 * g)
    return float(min(max(t, lo_t), hi_t)), float(g)


def defocus_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px; large sigmas blur a downscaled copy (same result, ~10x
    cheaper, since the blurred image has no detail the downscale could lose)."""
    if sigma < 0.3:
        return image
    if sigma <= 4.0:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape[:2]
    f = max(1, int(sigma // 2))
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), math.sqrt(max(sigma**2 - (0.5 * f) ** 2, 1.0)) / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


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


#: Bytes per packed group of pixels PiDNG needs the width to be a multiple of, by bit depth.
_DNG_PACKING = {8: 1, 10: 4, 12: 2, 14: 6, 16: 1}
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


@lru_cache(maxsize=4)
def _scene(width: int, height: int, seed: int) -> MountainScene:
    return mountain_scene(width, height, seed)


@lru_cache(maxsize=4)
def _clouds(width: int, height: int, seed: int, horizon_row: float) -> CloudLayer:
    return cloud_layer(width, height, seed, horizon_row=horizon_row)


# --------------------------------------------------------------------------------------------
# The camera
# --------------------------------------------------------------------------------------------


class SimulatedCamera(Camera):
    """See module docstring. All capabilities; ``seed`` fixes scene, clouds and noise."""

    name = "simulated"

    def __init__(
        self,
        profile: CameraProfile | None = None,
        clock: Clock | None = None,
        *,
        location: Location | None = None,
        weather: WeatherSource | None = None,
        seed: int = 0,
        view_azimuth_deg: float = 250.0,
    ) -> None:
        super().__init__(profile or builtin_profile("simulated"), clock)
        self.location = location or Location()
        self.weather: WeatherSource = weather or SimWeather()
        self.seed = seed
        self.view_azimuth_deg = view_azimuth_deg
        self.lens_position = self.profile.focus.lens_position_range[0]
        self._frames = 0
        self._epoch: datetime | None = None
        self._resolution = self.profile.resolution
        self._scene: MountainScene | None = None
        self._clouds: CloudLayer | None = None
        self._response: np.ndarray | None = None
        self._raw = False
        self._noise: NoiseBank | None = None
        self._to_camera: np.ndarray | None = None  # inverse colour matrix; None = identity

    # -- set-up --------------------------------------------------------------------------------
    async def configure(self, config: CameraConfig | None = None) -> None:
        config = config or CameraConfig()
        width, height = config.resolution or self.profile.resolution
        if width < 16 or height < 16:
            raise CameraError("the simulated sensor needs at least 16 x 16 pixels")
        bits = self.profile.sensor.bit_depth
        if config.raw and (height % 2 or width % _DNG_PACKING[bits]):
            raise CameraError(
                f"a {bits}-bit RAW stream needs an even height and a width that is a multiple of"
                f" {_DNG_PACKING[bits]} (2x2 Bayer pattern, PiDNG's packing); got {width}x{height}"
            )
        if config.raw:
            try:
                import pidng.core  # noqa: F401  (the DNG writer, an optional extra)
            except ImportError:
                raise CameraError(
                    "the simulated camera writes DNG with PiDNG: pip install 'skylapse[raw]'"
                ) from None
        self._resolution = (width, height)
        self._raw = config.raw
        ccm = self.profile.colour.ccm_array
        self._to_camera = None if np.allclose(ccm, np.eye(3)) else np.linalg.inv(ccm)
        self._scene = await self._in_thread(_scene, width, height, self.seed)
        self._clouds = await self._in_thread(
            _clouds, width, height, self.seed, self._scene.horizon_row
        )
        vignette = self.profile.lens.relative_illumination(width, height)
        r_gain, b_gain = self.profile.colour.daylight_wb_gains
        channel = np.array([1 / r_gain, 1.0, 1 / b_gain], np.float32)
        self._response = vignette[..., None] * channel
        if self._epoch is None:
            now = self.clock.now()
            self._epoch = datetime(now.year, now.month, now.day, tzinfo=UTC)
        # white balance as (red, blue) gains only: it renders at its daylight balance
        caps = set(CameraCapability) - {CameraCapability.COLOUR_TEMPERATURE}
        if not config.raw:
            caps.discard(CameraCapability.RAW_DNG)
        self._capabilities = frozenset(caps)
        self._configured = True

    async def close(self) -> None:
        self._configured = False

    def _noise_bank(self) -> NoiseBank:
        shape = (self._resolution[1], self._resolution[0], 3)
        if self._noise is None or self._noise.shape != shape:
            self._noise = NoiseBank(shape, self.seed)
        return self._noise

    # -- the world -----------------------------------------------------------------------------
    def weather_at(self, when: datetime) -> SimWeather:
        return self.weather(when) if callable(self.weather) else self.weather

    def sun(self, when: datetime) -> tuple[float, float]:
        """(altitude, azimuth) of the sun at ``when`` for this camera's location."""
        return sun_position(self.location, when)

    def scene_ev100(self, when: datetime) -> float:
        """The clear-sky EV100 of the scene at ``when`` (``skylapse.sky``)."""
        return float(sky.ev100(self.sun(when)[0]))

    def _hfov_deg(self) -> float:
        width_mm = self.profile.sensor.size_mm[0]
        return math.degrees(2 * math.atan(width_mm / (2 * self.profile.lens.focal_length_mm)))

    def _cloud_layer(self, weather: SimWeather) -> CloudLayer | None:
        if self._clouds is None or weather.cloud_cover <= 0.0:
            return None
        q = min(max(1.0 - weather.cloud_cover, 1e-3), 1 - 1e-3)
        # wind blows toward from+180°; its component along the image's x axis (view + 90°)
        toward = math.radians(weather.wind_from_deg + 180.0)
        right = math.radians(self.view_azimuth_deg + 90.0)
        along = math.radians(self.view_azimuth_deg)
        px_per_m = (
            self.profile.lens.focal_length_mm
            * 1e-3
            / (CLOUD_DISTANCE_M * self.profile.sensor.pixel_size_um * 1e-6)
            * self._resolution[0]
            / self.profile.sensor.width_px
        )
        vx = weather.wind_speed_mps * math.cos(toward - right) * px_per_m
        # receding clouds sink toward the horizon a little
        vy = 0.2 * weather.wind_speed_mps * math.cos(toward - along) * px_per_m
        # clouds in a strong wind also change shape faster (storm clouds boil)
        evolve_s = self._clouds.evolve_s * min(
            1.0, CALM_WIND_MPS / max(weather.wind_speed_mps, 1e-3)
        )
        return replace(
            self._clouds,
            threshold=NormalDist().inv_cdf(q),
            wind_px_per_s=(vx, vy),
            evolve_s=evolve_s,
        )

    def render_radiance(self, when: datetime, exposure_ev: float) -> np.ndarray:
        """Scene radiance at ``when`` relative to a camera exposed for ``exposure_ev`` (EV100):
        float32 (H, W, 3), 1.0 = full scale. Pure given the camera's seed and location."""
        if self._scene is None or self._epoch is None:
            raise CameraError("configure() the camera first")
        altitude, azimuth = self.sun(when)
        offset = ((azimuth - self.view_azimuth_deg + 180.0) % 360.0) - 180.0
        sun_x = 0.5 + offset / self._hfov_deg()
        t = (when - self._epoch).total_seconds()
        weather = self.weather_at(when)
        return render_frame(
            self._scene,
            t,
            sun_altitude_deg=altitude,
            sun_x=sun_x,
            clouds=self._cloud_layer(weather),
            exposure_ev=exposure_ev,
            cloud_cover=min(max(weather.cloud_cover, 0.0), 1.0),
            visibility_m=weather.visibility_m,
        )

    def _defocus_sigma(self, lens_position: float) -> float:
        focus = self.profile.focus
        dioptres = abs(lens_position - focus.infinity_lens_position)
        scale = self._resolution[0] / self.profile.sensor.width_px
        return math.hypot(LENS_SOFTNESS_PX, focus.defocus_sigma_px_per_dioptre * dioptres * scale)

    def _sensor_temperature(self, when: datetime) -> float:
        return self.weather_at(when).temperature_c + self.profile.thermal.self_heating_c

    def _expose(
        self,
        radiance: np.ndarray,
        response: np.ndarray,
        noise: np.ndarray,
        lens_position: float,
        exposure_s: float,
        gain: float,
        wb: tuple[float, float],
        temperature_c: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lens, sensor and development: (uint16 sRGB frame, raw sensor codes)."""
        spec = self.profile.noise
        optical = defocus_blur(radiance, self._defocus_sigma(lens_position))
        if self._to_camera is not None:  # linear sRGB to white-balanced camera RGB
            optical = cv2.transform(optical, self._to_camera.astype(np.float32))
        dark_rate = spec.dark_current_e_per_s * 2.0 ** (
            (temperature_c - 25.0) / spec.dark_current_doubling_c
        )
        bits = self.profile.sensor.bit_depth
        black = self.profile.sensor.black_codes
        codes = sensor_readout(
            optical,
            response,
            noise,
            electrons_at_full_scale=spec.full_well_e / gain,
            read_noise_e=spec.read_noise_e,
            dark_e=dark_rate * exposure_s,
            bit_depth=bits,
            black_level=black,
        )
        return develop(codes, bits, wb, self.profile.colour.ccm_array, black), codes

    def _resolve(self, settings: CaptureSettings, when: datetime) -> tuple[float, float]:
        if settings.exposure_time_s is not None:
            t = min(
                max(settings.exposure_time_s, self.profile.exposure.min_s),
                self.profile.exposure.max_s,
            )
            g = settings.analogue_gain or self.profile.gain.min
        else:
            t, g = metered_exposure(
                self.scene_ev100(when),
                self.profile.lens.aperture_f,
                self.profile.exposure.range_s,
                self.profile.gain.range,
                settings.analogue_gain,
            )
        g = min(max(g, self.profile.gain.min), self.profile.gain.max)
        return t, g

    # -- capture -------------------------------------------------------------------------------
    async def capture(
        self, settings: CaptureSettings | None = None, *, deadline: float | None = None
    ) -> Frame:
        settings = settings or CaptureSettings()
        self._check_settings(settings)
        if not self._configured or self._response is None:
            raise CameraError("configure() the camera first")
        when = self.clock.now()
        if settings.lens_position is not None:
            lo, hi = self.profile.focus.lens_position_range
            self.lens_position = min(max(settings.lens_position, lo), hi)
        t, g = self._resolve(settings, when)
        wb = settings.white_balance_gains or self.profile.colour.daylight_wb_gains
        temperature = self._sensor_temperature(when)
        noise = self._noise_bank().draw(np.random.default_rng([self.seed, self._frames]))
        self._frames += 1
        aperture = self.profile.lens.aperture_f
        ev = exposure_ev100(t, g, aperture)
        response = self._response

        def work() -> tuple[np.ndarray, np.ndarray]:
            radiance = self.render_radiance(when, ev)
            return self._expose(
                radiance, response, noise, self.lens_position, t, g, wb, temperature
            )

        pixels, raw = await self._in_thread(work)
        if settings.dng_path is not None:
            await self._in_thread(self._save_dng, raw, settings.dng_path, t, g, wb, when)
        await self.clock.sleep(t)  # the shutter is open this long
        altitude, azimuth = self.sun(when)
        meta = FrameMetadata(
            timestamp=when,
            exposure_time_s=t,
            analogue_gain=g,
            aperture_f=aperture,
            camera=f"{self.name}:{self.profile.name}",
            lens_position=self.lens_position,
            white_balance_gains=(float(wb[0]), float(wb[1])),
            sensor_temperature_c=temperature,
            focus_score=focus_score(pixels),
            bit_depth=self.profile.sensor.bit_depth,
            dng_path=settings.dng_path,
            extra={
                "sun_altitude_deg": altitude,
                "sun_azimuth_deg": azimuth,
                "scene_ev100": float(sky.ev100(altitude)),
            },
        )
        return Frame(pixels, meta)

    def _save_dng(
        self,
        codes: np.ndarray,
        path: Path,
        exposure_s: float,
        gain: float,
        wb: tuple[float, float],
        when: datetime,
    ) -> None:
        """The frame's raw codes as a DNG at ``path`` (module docstring; ``dng_bytes``)."""
        sensor = self.profile.sensor
        pattern = sensor.bayer_pattern or "RGGB"
        data = dng_bytes(
            bayer_mosaic(codes, pattern),
            pattern=pattern,
            bit_depth=sensor.bit_depth,
            black_level=sensor.black_codes,
            wb_gains=wb,
            ccm=self.profile.colour.ccm_array,
            exposure_time_s=exposure_s,
            analogue_gain=gain,
            timestamp_ns=round(when.timestamp() * 1e9),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    # -- focus ---------------------------------------------------------------------------------
    async def autofocus(self) -> float:
        """Contrast search on the central AF window of one rendered instant, coarse then fine.

        The scene is rendered once; every lens position re-runs only the lens and sensor on the
        window (as a real camera's AF reads a small region), which keeps a full search well
        under 2 s at 1080p."""
        if self.profile.focus.mode == "fixed_infinity":
            return await super().autofocus()
        self._require(CameraCapability.AUTOFOCUS)
        if self._response is None:
            raise CameraError("configure() the camera first")
        when = self.clock.now()
        t, g = self._resolve(CaptureSettings(), when)
        radiance = await self._in_thread(
            self.render_radiance, when, exposure_ev100(t, g, self.profile.lens.aperture_f)
        )
        h, w = radiance.shape[:2]
        margin = 16
        y0, y1 = h // 4 - margin, h - h // 4 + margin
        x0, x1 = w // 4 - margin, w - w // 4 + margin
        y0, x0 = max(0, y0), max(0, x0)
        window = np.ascontiguousarray(radiance[y0:y1, x0:x1])
        response = np.ascontiguousarray(self._response[y0:y1, x0:x1])
        wb = self.profile.colour.daylight_wb_gains
        temperature = self._sensor_temperature(when)
        rng = np.random.default_rng([self.seed, self._frames, 1])
        self._frames += 1
        bank = self._noise_bank()

        def measure_sync(position: float) -> float:
            noise = bank.draw(rng, slice(y0, y1), slice(x0, x1))
            frame, _ = self._expose(window, response, noise, position, t, g, wb, temperature)
            return focus_score(frame[margin:-margin, margin:-margin], window=1.0)

        async def measure(position: float) -> float:
            return await self._in_thread(measure_sync, position)

        lo, hi = self.profile.focus.lens_position_range
        result = await contrast_autofocus(
            measure, lo, hi, fallback=self.profile.focus.infinity_lens_position
        )
        self.lens_position = result.lens_position
        return result.lens_position

    async def _set_lens_position(self, position: float) -> None:
        lo, hi = self.profile.focus.lens_position_range
        self.lens_position = min(max(position, lo), hi)
