"""Lighting the scene: :func:`render_frame` returns linear float32 RGB (``H x W x 3``).

The scene is scaled by the shared sky-brightness table (:mod:`skylapse.sky`): with
``exposure_ev=None`` the frame is metered (an 18 % grey card in full light reads 0.18), with an
explicit camera exposure value it is ``2 ** (ev100(sun) - exposure_ev)`` times brighter, which is
what a simulated camera needs. Weather: a ``cloud_cover`` darkens the terrain and the clouds by
:func:`skylapse.sky.cloud_transmission` (Kasten & Czeplak) and flattens the light (the direct sun
falls with the square of the cover, the diffuse skylight makes up its luminance); a
meteorological ``visibility_m`` under 10 km is fog or haze: the extinction ``3.912 / V``
(Koschmieder) veils the terrain by distance and the sky by a 1 km layer, lowering contrast.

A frame is rendered in two bands (:attr:`MountainScene.bands`): the terrain
(:func:`_terrain`) and the sky with its clouds (:func:`_sky`, :func:`_sky_with_clouds`), added
where they overlap along the skyline. Nothing here does I/O; :mod:`skylapse.testing` writes
sequences of these frames with their ground truth to a folder.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from skylapse import sky
from skylapse.scene.clouds import CloudLayer
from skylapse.scene.light import Light, light_at, sky_radiance, weathered_light
from skylapse.scene.mountain import MountainScene
from skylapse.scene.noise import smoothstep

#: Reported visibility at or above this is clear air (OpenWeatherMap's maximum is 10 km).
CLEAR_AIR_VISIBILITY_M = 10_000.0
#: Depth of the fog between the camera and the sky, metres.
FOG_LAYER_M = 1000.0
#: Metered brightness: a grey card (0.18 x (sun + skylight)) reads about 0.18.
_METERED_SCALE = 0.55

#: A colour as ``cv2.multiply`` takes a per-channel scalar.
Scalar = tuple[float, float, float, float]


def render_frame(
    scene: MountainScene,
    t: float = 0.0,
    *,
    sun_altitude_deg: float = 8.0,
    sun_x: float = 0.85,
    clouds: CloudLayer | None = None,
    exposure_ev: float | None = None,
    cloud_cover: float = 0.0,
    visibility_m: float | None = None,
    sun_glow: float = 1.0,
) -> np.ndarray:
    """Light ``scene`` at time ``t`` (seconds) and return linear RGB, ``float32 (H, W, 3)``.

    Terrain radiance is reflectance x (direct sun x Lambert shading x alpenglow mask + skylight),
    attenuated by aerial perspective and veiled with haze; the sky is :func:`sky_radiance` with
    ``clouds`` composited over it (lit by the same sun, darker where thick). At low sun only the
    high terrain is in sunlight (alpenglow), the line rising as the sun sinks.

    Brightness: with ``exposure_ev=None`` the frame is metered for the light of
    ``sun_altitude_deg`` (a grey card in full light reads about 0.18); otherwise the frame is
    scaled by ``2 ** (sky.ev100(sun_altitude_deg) - exposure_ev)``, i.e. what a camera set to
    that exposure value records. Values are not clipped: a sensor clips at 1. ``sun_glow``
    scales the sky's glow around the sun (see :func:`sky_radiance`).

    Weather (module docstring): ``cloud_cover`` in [0, 1] darkens and flattens the light;
    ``visibility_m`` (meteorological, None = clear air) below 10 km veils it.
    """
    if not 0.0 <= cloud_cover <= 1.0:
        raise ValueError("cloud_cover must be in [0, 1]")
    clear_light = light_at(sun_altitude_deg)
    light = weathered_light(clear_light, cloud_cover)
    scale = _METERED_SCALE
    if exposure_ev is not None:
        scale *= 2.0 ** (float(sky.ev100(sun_altitude_deg)) - exposure_ev)
    dim = sky.cloud_transmission(100.0 * cloud_cover)  # terrain and clouds; blue gaps stay
    extinction = fog_extinction(visibility_m)
    t0, s1 = scene.bands
    frame = np.zeros((scene.height, scene.width, 3), np.float32)
    frame[t0:] = _terrain(scene, light, sun_altitude_deg, extinction, scale * dim)
    sky_rgb = _sky(scene, light, sun_altitude_deg, sun_x, sun_glow, extinction)
    sky_part = _sky_with_clouds(scene, sky_rgb, clouds, t, clear_light, scale, dim)
    cv2.add(frame[:s1], sky_part, dst=frame[:s1])
    return frame


def fog_extinction(visibility_m: float | None) -> float:
    """Extinction per metre beyond the clear air's (Koschmieder, ``3.912 / V``); 0 for clear
    air (no visibility, or one of `CLEAR_AIR_VISIBILITY_M` and more)."""
    if visibility_m is None or visibility_m >= CLEAR_AIR_VISIBILITY_M:
        return 0.0
    return 3.912 / max(visibility_m, 1.0)


def _scalar(colour: np.ndarray, k: float) -> Scalar:
    """``colour`` times ``k`` as a per-channel scalar."""
    return (float(colour[0] * k), float(colour[1] * k), float(colour[2] * k), 0.0)


def _terrain(
    scene: MountainScene, light: Light, sun_altitude_deg: float, extinction: float, k: float
) -> np.ndarray:
    """Terrain radiance of the rows from the first with terrain (``scene.bands[0]``) down:
    reflectance through the air x (skylight + direct sun x shading, above the alpenglow line)
    plus the haze veil, the light's colours times ``k``."""
    t0 = scene.bands[0]
    ambient_albedo, direct_albedo, haze3 = scene.air_terms(extinction)
    terrain = cv2.multiply(ambient_albedo[t0:], _scalar(light.skylight, k))
    if light.sun.any():
        direct = cv2.multiply(direct_albedo[t0:], _scalar(light.sun, k))
        # Alpenglow: the sun lights terrain above a line that rises as it nears the horizon.
        sun_line = float(np.clip((6.0 - sun_altitude_deg) / 6.5, 0.0, 1.1))
        if sun_line > 0:
            sunlit = smoothstep((scene.elevation[t0:] - sun_line) / 0.08 + 0.5)
            direct = cv2.multiply(
                direct, cv2.cvtColor(sunlit.astype(np.float32), cv2.COLOR_GRAY2RGB)
            )
        cv2.add(terrain, direct, dst=terrain)
    cv2.add(terrain, cv2.multiply(haze3[t0:], _scalar(light.haze, k)), dst=terrain)
    return terrain


def _sky(
    scene: MountainScene,
    light: Light,
    sun_altitude_deg: float,
    sun_x: float,
    sun_glow: float,
    extinction: float,
) -> np.ndarray:
    """The clear sky of the rows above the lowest skyline point (``scene.bands[1]``), faded
    toward the haze colour by the fog between the camera and it; relative brightness."""
    sky_rgb = sky_radiance(
        scene.width,
        scene.height,
        sun_altitude_deg,
        horizon_row=scene.horizon_row,
        sun_x=sun_x,
        rows=scene.bands[1],
        sun_glow=sun_glow,
    )
    if extinction > 0.0:  # fog between the camera and the sky: the sky fades to the veil
        fog = 1.0 - math.exp(-extinction * FOG_LAYER_M)
        sky_rgb = cv2.addWeighted(
            sky_rgb, 1.0 - fog, np.broadcast_to(light.haze, sky_rgb.shape).astype(np.float32),
            fog, 0.0,
        )  # fmt: skip
    return sky_rgb


def _sky_with_clouds(
    scene: MountainScene,
    sky_rgb: np.ndarray,
    clouds: CloudLayer | None,
    t: float,
    clear_light: Light,
    scale: float,
    dim: float,
) -> np.ndarray:
    """The sky band's radiance where it is sky (the scene's soft sky mask): the clouds at
    ``t`` over ``sky_rgb``, lit by the clear light and dimmed by the cover (``dim``) like the
    terrain; without a cloud layer the cover dims the sky as a whole."""
    s1 = scene.bands[1]
    mask = scene.sky_mask[:s1]
    if clouds is None:
        return cv2.multiply(sky_rgb, cv2.cvtColor(mask, cv2.COLOR_GRAY2RGB), scale=scale * dim)
    if (clouds.width, clouds.height) != (scene.width, scene.height):
        raise ValueError("the cloud layer was made for another frame size")
    alpha = clouds.alpha(t)[:s1]
    # sky (1 - a) + cloud a, the cloud darker where thick: cloud = c (1.1 - 0.5 a).
    keep = (1.0 - alpha) * mask
    cover = (1.1 * alpha - 0.5 * alpha * alpha) * mask
    # the clouds keep the clear light's colour; the cover dims them like the terrain
    cloud_rgb = 0.9 * clear_light.sun + 0.27 * clear_light.skylight
    sky_part = cv2.multiply(sky_rgb, cv2.cvtColor(keep, cv2.COLOR_GRAY2RGB), scale=scale)
    cv2.add(
        sky_part,
        cv2.multiply(cv2.cvtColor(cover, cv2.COLOR_GRAY2RGB), _scalar(cloud_rgb, scale * dim)),
        dst=sky_part,
    )
    return sky_part
