"""The light of the scene for a sun altitude, and the sky it makes.

- :func:`light_at` gives the colours of the direct sun, the skylight and the haze for a sun
  altitude (shared by the sky, the clouds and the terrain so they agree);
- :func:`weathered_light` the same light under a cloud cover (flatter);
- :func:`sky_radiance` is the sky gradient for a sun altitude: blue by day, warm near the
  horizon in the golden hour, red at sunset, cool and blue in the blue hour, dark at night.

Colours are linear RGB relative to the sky's brightness (`skylapse.scene.render` scales them).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from skylapse.imaging import luma

# Key colours against sun altitude (degrees), relative to the sky's own illuminance so that a
# metered frame looks normally exposed at any altitude. Columns: zenith sky, horizon sky, direct
# sun on terrain, skylight on terrain. Chosen after photographs of alpine sunsets: warm golden
# hour, red-orange horizon at sunset, blue hour cool and blue.
_LIGHT_KEYS: tuple[
    tuple[float, tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]], ...
] = (
    (-18.0, (0.02, 0.03, 0.07), (0.04, 0.05, 0.10), (0.0, 0.0, 0.0), (0.45, 0.55, 0.95)),
    (-9.0, (0.05, 0.08, 0.22), (0.12, 0.15, 0.32), (0.0, 0.0, 0.0), (0.45, 0.60, 1.10)),
    (-6.0, (0.07, 0.11, 0.30), (0.22, 0.26, 0.48), (0.0, 0.0, 0.0), (0.50, 0.62, 1.05)),
    (-3.0, (0.09, 0.11, 0.30), (0.50, 0.34, 0.38), (0.0, 0.0, 0.0), (0.62, 0.62, 0.90)),
    (0.0, (0.10, 0.13, 0.32), (0.80, 0.45, 0.26), (0.60, 0.28, 0.10), (0.45, 0.45, 0.60)),
    (4.0, (0.10, 0.16, 0.38), (0.80, 0.58, 0.36), (0.85, 0.55, 0.28), (0.30, 0.34, 0.45)),
    (10.0, (0.09, 0.18, 0.42), (0.62, 0.60, 0.58), (0.85, 0.74, 0.58), (0.22, 0.27, 0.38)),
    (30.0, (0.08, 0.18, 0.45), (0.48, 0.56, 0.68), (0.85, 0.83, 0.78), (0.16, 0.21, 0.32)),
    (90.0, (0.08, 0.18, 0.45), (0.45, 0.55, 0.68), (0.85, 0.84, 0.80), (0.15, 0.20, 0.31)),
)


@dataclass(frozen=True)
class Light:
    """Colours of the light for one sun altitude, linear RGB, relative to the sky's brightness.

    ``zenith`` and ``horizon`` are sky radiances; ``sun`` is the direct sunlight falling on
    terrain (zero once the sun has set); ``skylight`` is the diffuse light from the sky dome;
    ``haze`` is the colour of the aerial-perspective veil.
    """

    zenith: np.ndarray
    horizon: np.ndarray
    sun: np.ndarray
    skylight: np.ndarray
    haze: np.ndarray


def light_at(sun_altitude_deg: float) -> Light:
    """The light for a sun altitude, interpolated between key colours (see ``_LIGHT_KEYS``)."""
    alts = np.array([k[0] for k in _LIGHT_KEYS])
    cols = [np.array([k[i] for k in _LIGHT_KEYS]) for i in range(1, 5)]
    a = float(np.clip(sun_altitude_deg, alts[0], alts[-1]))
    zen, hor, sun, skyl = (
        np.array([np.interp(a, alts, c[:, ch]) for ch in range(3)], np.float32) for c in cols
    )
    haze = (0.75 * hor + 0.25 * zen).astype(np.float32)
    return Light(zenith=zen, horizon=hor, sun=sun, skylight=skyl, haze=haze)


def sky_radiance(
    width: int,
    height: int,
    sun_altitude_deg: float,
    *,
    horizon_row: float | None = None,
    sun_x: float = 0.85,
    vertical_fov_deg: float = 40.0,
    rows: int | None = None,
    sun_glow: float = 1.0,
) -> np.ndarray:
    """Linear sky radiance ``float32 (height, width, 3)`` for a sun altitude.

    A gradient from the horizon colour to the zenith colour in elevation angle (exponential in
    elevation, as the optical air mass falls off), plus a warm glow around the sun's azimuth
    (``sun_x``: its horizontal position as a fraction of the width; > 1 is right of the frame)
    that is strongest near the horizon when the sun is low. Values are relative to the sky's
    brightness (see :func:`render_frame`). Computed on a coarse grid and resized, since it is
    smooth. With ``rows`` only the top ``rows`` rows are computed (the rest is ground anyway).
    ``sun_glow`` scales the glow: 1 is the calibrated look of a metered photograph; a real low
    sun's aureole is tens to hundreds of times brighter than the sky around it (a scene of
    high dynamic range, for the HDR tests).
    """
    light = light_at(sun_altitude_deg)
    if horizon_row is None:
        horizon_row = 0.6 * height
    rows = height if rows is None else int(np.clip(rows, 1, height))
    sh, sw = max(2, rows // 8), max(2, width // 8)
    ys = (np.arange(sh, dtype=np.float32) + 0.5) * rows / sh
    xs = (np.arange(sw, dtype=np.float32) + 0.5) * width / sw
    deg_per_px = vertical_fov_deg / height
    elev = np.maximum((horizon_row - ys) * deg_per_px, 0.0)[:, None]  # degrees above horizon
    t = 1.0 - np.exp(-elev / 12.0)
    grad = light.horizon[None, None, :] * (1 - t)[..., None] + light.zenith * t[..., None]
    # Glow: angular distance to the sun, in degrees, approximated on the image plane.
    sun_row = horizon_row - sun_altitude_deg / deg_per_px
    dx = (xs[None, :] - sun_x * width) * deg_per_px
    dy = (ys[:, None] - sun_row) * deg_per_px
    dist = np.sqrt(dx * dx + dy * dy)
    low_sun = float(np.clip(1.0 - abs(sun_altitude_deg - 1.0) / 12.0, 0.0, 1.0))
    glow_colour = np.array([1.0, 0.62, 0.30], np.float32) * (0.15 + 0.45 * low_sun) * sun_glow
    if sun_altitude_deg < -8.0:
        glow_colour = glow_colour * max(0.0, 1.0 + (sun_altitude_deg + 8.0) / 4.0)
    glow = np.exp(-dist / 18.0) * np.exp(-elev / 15.0)
    small = grad + glow[..., None] * glow_colour
    return cv2.resize(small.astype(np.float32), (width, rows), interpolation=cv2.INTER_LINEAR)


def weathered_light(light: Light, cloud_cover: float) -> Light:
    """The light under a cloud cover (before its overall dimming): the direct sun falls with
    the square of the cover and the skylight makes up the lost luminance, so shadows fill in
    and the scene flattens; the sky colours stay. The identity for a clear sky."""
    if cloud_cover <= 0.0 or not light.sun.any():
        return light
    keep = 1.0 - cloud_cover**2
    sun_luma = float(light.sun @ luma.WEIGHTS)
    sky_luma = float(light.skylight @ luma.WEIGHTS)
    fill = 1.0 + (1.0 - keep) * sun_luma / max(sky_luma, 1e-6)
    return Light(
        zenith=light.zenith,
        horizon=light.horizon,
        sun=(light.sun * keep).astype(np.float32),
        skylight=(light.skylight * fill).astype(np.float32),
        haze=light.haze,
    )
