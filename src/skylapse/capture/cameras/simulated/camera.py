"""The simulated camera: the procedural scene (`skylapse.scene`) lit by the real sun of its
:class:`~.world.Location` under its :class:`~.world.SimWeather`, seen through the simulated lens
(`.lens`) and sensor (`.sensor`), with an optional DNG (`.raw`).

Light: the scene is rendered at the brightness of the shared sky table (``skylapse.sky.ev100``:
about 15 EV at 60°, 8.3 at sunset, 0.5 at −6°, −8 at −12°, −10 under starlight) relative to the
camera's exposure value (:func:`exposure_ev100`); without a set exposure it is metered
(:func:`metered_exposure`: exposure time first, then gain).

Deterministic: the scene, clouds and noise depend only on the seed, the clock and the order of
captures. Cost at 1920x1080 (measured on a shared 2-core machine): the static scene is built once
per size and seed (1-3 s, cached), then ~0.2 s per frame (render ~55 ms, sensor ~100 ms), so
0.5 s capture intervals hold; autofocus takes ~0.8 s. Capture advances the clock by the
exposure time (the shutter is open that long).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist

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
from skylapse.capture.cameras.simulated.lens import LENS_SOFTNESS_PX, defocus_blur
from skylapse.capture.cameras.simulated.raw import DNG_PACKING, bayer_mosaic, dng_bytes
from skylapse.capture.cameras.simulated.sensor import NoiseBank, develop, sensor_readout
from skylapse.capture.cameras.simulated.world import (
    CALM_WIND_MPS,
    CLOUD_DISTANCE_M,
    Location,
    SimWeather,
    WeatherSource,
    sun_position,
)
from skylapse.capture.clock import Clock
from skylapse.scene import CloudLayer, MountainScene, cloud_layer, mountain_scene, render_frame


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


@lru_cache(maxsize=4)
def _scene(width: int, height: int, seed: int) -> MountainScene:
    return mountain_scene(width, height, seed)


@lru_cache(maxsize=4)
def _clouds(width: int, height: int, seed: int, horizon_row: float) -> CloudLayer:
    return cloud_layer(width, height, seed, horizon_row=horizon_row)


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
        if config.raw and (height % 2 or width % DNG_PACKING[bits]):
            raise CameraError(
                f"a {bits}-bit RAW stream needs an even height and a width that is a multiple of"
                f" {DNG_PACKING[bits]} (2x2 Bayer pattern, PiDNG's packing); got {width}x{height}"
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
