"""The procedural mountain scene the simulated camera looks at, with known ground truth.

The scene is built once and lit many times, so that a 1080p sequence of hundreds of frames costs
a few tens of milliseconds per frame:

- :func:`mountain_scene` builds the static scene for a size and seed: the linear-light
  reflectance of layered ridges (rock strata, snow on the high peaks, forest lower down, a
  textured foreground meadow), a soft sky mask, the distance of every pixel (for aerial haze),
  a relative terrain elevation (for alpenglow: at low sun only the peaks stay lit) and a Lambert
  shading term. Everything is procedural fractal noise, made with ``cv2.resize`` of random
  grids, so it is deterministic for a seed and costs well under a second at 1080p.
- :func:`sky_radiance` is the sky gradient for a sun altitude: blue by day, warm near the horizon
  in the golden hour, red at sunset, cool and blue in the blue hour, dark at night.
- :func:`light_at` gives the colours of the direct sun, the skylight and the haze for a sun
  altitude (shared by the sky, the clouds and the terrain so they agree).
- :func:`cloud_layer` makes a :class:`CloudLayer`: fractal clouds that drift with the wind and
  slowly evolve; ``layer.alpha(t)`` is their opacity at time ``t`` seconds.
- :func:`render_frame` lights the scene: returns linear float32 RGB (``H x W x 3``). The scene is
  scaled by the shared sky-brightness table (:mod:`skylapse.sky`): with ``exposure_ev=None`` the
  frame is metered (an 18 % grey card in full light reads 0.18), with an explicit camera
  exposure value it is ``2 ** (ev100(sun) - exposure_ev)`` times brighter, which is what a
  simulated camera needs. Weather: a ``cloud_cover`` darkens the terrain and the clouds by
  :func:`skylapse.sky.cloud_transmission` (Kasten & Czeplak) and flattens the light (the direct sun
  falls with the square of the cover, the diffuse skylight makes up its luminance); a
  meteorological ``visibility_m`` under 10 km is fog or haze: the extinction ``3.912 / V``
  (Koschmieder) veils the terrain by distance and the sky by a 1 km layer, lowering contrast.

Nothing here does I/O; :mod:`skylapse.testing` writes sequences of these frames with their
ground truth to a folder.

Procedural methods: fractal (fBm) value noise (Perlin, "An image synthesizer", SIGGRAPH 1985;
Musgrave et al., "Texturing and Modeling", 2003), ridged multifractal skylines, exponential
aerial perspective (Koschmieder 1924).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

import cv2
import numpy as np

from skylapse import sky
from skylapse.imaging import luma
from skylapse.scene.noise import fractal_noise, fractal_profile, smoothstep

#: Meteorological visibility used for aerial perspective, metres.
VISIBILITY_M = 45_000.0

#: Depth given to sky pixels, metres (effectively infinite).
SKY_DEPTH_M = 1.0e6

#: Reported visibility at or above this is clear air (OpenWeatherMap's maximum is 10 km).
CLEAR_AIR_VISIBILITY_M = 10_000.0
#: Depth of the fog between the camera and the sky, metres.
FOG_LAYER_M = 1000.0


# --------------------------------------------------------------------------------------------
# The static scene
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountainScene:
    """A static mountain scene; see :func:`mountain_scene`.

    Attributes:
        reflectance: ``float32 (H, W, 3)`` linear albedo of the terrain in [0, 1]; 0 in the sky.
        sky_mask: ``float32 (H, W)`` in [0, 1], 1 where the pixel is sky (anti-aliased skyline).
        depth: ``float32 (H, W)`` distance in metres; :data:`SKY_DEPTH_M` in the sky.
        elevation: ``float32 (H, W)`` relative terrain height in [0, 1] (1 = highest peak);
            the low sun lights only what is above a line that rises as it sets.
        shading: ``float32 (H, W)`` Lambert factor of the direct sun (sun from the right).
        skyline: ``float32 (W,)`` row of the topmost terrain pixel in every column.
        horizon_row: the row of the visual horizon used by the sky gradient.
        seed: the seed the scene was made from.
    """

    reflectance: np.ndarray
    sky_mask: np.ndarray
    depth: np.ndarray
    elevation: np.ndarray
    shading: np.ndarray
    skyline: np.ndarray
    horizon_row: float
    seed: int

    @property
    def height(self) -> int:
        return int(self.reflectance.shape[0])

    @property
    def width(self) -> int:
        return int(self.reflectance.shape[1])

    # Light-independent products, computed once per scene and reused by every render_frame.
    @cached_property
    def _terrain_weight(self) -> np.ndarray:
        return (1.0 - self.sky_mask).astype(np.float32)

    @cached_property
    def _haze(self) -> np.ndarray:
        """Aerial-perspective veil 1 - exp(-d / V), times the terrain weight."""
        veil = 1.0 - np.exp(-self.depth / VISIBILITY_M)
        return (veil * self._terrain_weight).astype(np.float32)

    @cached_property
    def _ambient_albedo(self) -> np.ndarray:
        """Reflectance seen through the haze (what the skylight illuminates)."""
        t = (np.exp(-self.depth / VISIBILITY_M) * self._terrain_weight).astype(np.float32)
        return self.reflectance * t[..., None]

    @cached_property
    def _direct_albedo(self) -> np.ndarray:
        return self._ambient_albedo * self.shading[..., None]

    @cached_property
    def _haze3(self) -> np.ndarray:
        return cv2.cvtColor(self._haze, cv2.COLOR_GRAY2RGB)

    @cached_property
    def _fogged(self) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return {}

    def air_terms(self, extinction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ambient albedo, direct albedo, haze veil RGB) seen through air of ``extinction``
        per metre in addition to the clear air's; the clear-air ones when it is 0. A few
        extinctions are kept (a replayed evening has a handful of visibilities)."""
        if extinction <= 0.0:
            return self._ambient_albedo, self._direct_albedo, self._haze3
        key = round(extinction, 7)
        terms = self._fogged.get(key)
        if terms is None:
            t = np.exp(-self.depth * np.float32(1.0 / VISIBILITY_M + key)) * self._terrain_weight
            ambient = self.reflectance * t[..., None]
            direct = ambient * self.shading[..., None]
            haze = cv2.cvtColor(((1.0 - t) * self._terrain_weight).astype(np.float32),
                                cv2.COLOR_GRAY2RGB)  # fmt: skip
            if len(self._fogged) >= 4:
                self._fogged.pop(next(iter(self._fogged)))
            terms = self._fogged[key] = (ambient.astype(np.float32), direct.astype(np.float32),
                                         haze)  # fmt: skip
        return terms

    @cached_property
    def _bands(self) -> tuple[int, int]:
        """First row with terrain, and one past the last row with sky."""
        terrain_from = int(np.floor(self.skyline.min())) - 1
        sky_to = int(np.ceil(self.skyline.max())) + 2
        return max(0, terrain_from), min(self.height, sky_to)


# Ridge layers from far to near: (base row as a fraction of the height, peak amplitude as a
# fraction of the height, distance in metres, relative altitude of the range, snow amount).
_RIDGES = (
    (0.50, 0.26, 28_000.0, 1.00, 1.0),
    (0.58, 0.18, 14_000.0, 0.80, 0.55),
    (0.66, 0.12, 6_000.0, 0.55, 0.15),
    (0.74, 0.08, 2_200.0, 0.35, 0.0),
)
#: The foreground meadow: base row fraction, amplitude, distance at its top edge.
_FOREGROUND = (0.86, 0.035, 600.0)
#: Linear albedos of the materials.
_ROCK = np.array([0.26, 0.23, 0.20], np.float32)
_DARK_ROCK = np.array([0.12, 0.115, 0.11], np.float32)
_FOREST = np.array([0.045, 0.075, 0.04], np.float32)
_SNOW = np.array([0.86, 0.88, 0.92], np.float32)
_MEADOW = np.array([0.07, 0.10, 0.035], np.float32)


@dataclass(frozen=True)
class _Textures:
    """The fractal fields shared by every layer, ``float32 (H, W)``, zero mean and unit std."""

    detail: np.ndarray
    strata: np.ndarray
    relief: np.ndarray
    gullies: np.ndarray  # ridged noise 1 - |n|: in (-inf, 1]
    snow: np.ndarray

    @classmethod
    def draw(cls, h: int, w: int, rng: np.random.Generator) -> _Textures:
        """The fields in a fixed order (the scene for a seed depends on it)."""
        detail = fractal_noise(h, w, rng, cells=24, octaves=5, persistence=0.6)
        strata = fractal_noise(h, w, rng, cells=3, octaves=3)
        relief = fractal_noise(h, w, rng, cells=10, octaves=6, persistence=0.55)
        # Ridged noise (1 - |n|): sharp crests and gullies, the look of eroded rock faces.
        gullies = 1.0 - np.abs(fractal_noise(h, w, rng, cells=14, octaves=5, persistence=0.6))
        snow = fractal_noise(h, w, rng, cells=16, octaves=4)
        return cls(detail=detail, strata=strata, relief=relief, gullies=gullies, snow=snow)


def _ridge_colour(
    tex: _Textures, rows: np.ndarray, elev: np.ndarray, altitude: float, snow_amount: float
) -> np.ndarray:
    """Albedo ``(H, W, 3)`` of one ridge: rock strata, forest low down, snow high up."""
    h = rows.shape[0]
    # Rock strata: bands that wander with the large-scale noise; fractal detail on top.
    bands = 0.5 + 0.5 * np.sin((rows / h * 38.0) + 2.5 * tex.strata)
    rock = _ROCK + (_DARK_ROCK - _ROCK) * bands[..., None]
    rock = rock * np.exp(0.35 * tex.detail)[..., None]
    # Forest on the low parts of the near ridges.
    forest_frac = smoothstep((0.45 - elev + 0.08 * tex.relief) / 0.12) * (1.0 - altitude * 0.6)
    colour = rock + (_FOREST * np.exp(0.3 * tex.detail)[..., None] - rock) * forest_frac[..., None]
    if snow_amount > 0:
        # Snow high up, and more on gentle ground (where the relief is smooth).
        snowline = 1.0 - 0.32 * snow_amount + 0.08 * tex.snow + 0.05 * np.abs(tex.relief)
        snow_frac = smoothstep((elev - snowline) / 0.04)
        snow_frac *= snow_amount
        colour = colour + (_SNOW - colour) * snow_frac[..., None]
    return colour


def _meadow_colour(tex: _Textures, fine: np.ndarray) -> np.ndarray:
    """Albedo ``(H, W, 3)`` of the foreground meadow, with a few boulders."""
    meadow = _MEADOW * np.exp(0.35 * tex.detail + 0.45 * fine)[..., None]
    boulders = smoothstep((tex.relief - 1.2) / 0.15)
    return meadow + (_ROCK - meadow) * boulders[..., None]


def _lambert_shading(height_field: np.ndarray) -> np.ndarray:
    """Lambert factor of the direct sun from the upper right: slopes facing right are lit."""
    smooth = cv2.GaussianBlur(height_field.astype(np.float32), (0, 0), 1.5)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    nx, ny, nz = -gx, -gy, np.ones_like(gx)
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    sun_dir = np.array([0.55, 0.35, 0.76])  # right, up (image rows point down), toward viewer
    sun_dir /= np.linalg.norm(sun_dir)
    lambert = (nx * sun_dir[0] - ny * sun_dir[1] + nz * sun_dir[2]) / norm
    return np.clip(0.15 + 1.1 * lambert, 0.05, 1.4).astype(np.float32)


def mountain_scene(width: int, height: int, seed: int = 0) -> MountainScene:
    """Build a static layered mountain scene of ``width x height`` pixels for ``seed``.

    Four ridges from far to near (ridged-multifractal skylines: peaks are sharp, valleys round),
    each textured with rock strata and fractal detail, snow on the high far peaks (more snow
    higher up and on gentle slopes), forest on the lower near ridges, and a foreground meadow
    with fine texture (which gives registration something to lock onto). Deterministic for a
    given ``seed``; about 0.5 s at 1080p.
    """
    if width < 16 or height < 16:
        raise ValueError("the scene must be at least 16 x 16 pixels")
    rng = np.random.default_rng(seed)
    h, w = height, width
    rows = np.arange(h, dtype=np.float32)[:, None]

    reflectance = np.zeros((h, w, 3), np.float32)
    depth = np.full((h, w), SKY_DEPTH_M, np.float32)
    elevation = np.zeros((h, w), np.float32)
    height_field = np.zeros((h, w), np.float32)
    skyline = np.full(w, float(h), np.float32)
    tex = _Textures.draw(h, w, rng)

    for base, amp, dist, altitude, snow_amount in _RIDGES:
        ridge = 1.0 - np.abs(fractal_profile(w, rng, cells=2.5, octaves=8)) / 2.5
        ridge = (np.clip(ridge, 0.0, 1.0) ** 1.6).astype(np.float32)
        line = (base - amp * ridge) * h
        line = line.astype(np.float32)
        below = rows >= line[None, :]
        skyline = np.minimum(skyline, line)
        # Local height 1 at the crest, falling to 0 some way below the layer's base.
        local = np.clip(1.0 - (rows - line[None, :]) / (amp * h * 1.5 + 0.08 * h), 0.0, 1.0)
        local = local * (0.35 + 0.65 * ridge[None, :])
        elev = altitude * local
        colour = _ridge_colour(tex, rows, elev, altitude, snow_amount)
        reflectance = np.where(below[..., None], colour, reflectance)
        layer_depth = dist * (1.0 + 0.15 * (rows - line[None, :]) / h)
        depth = np.where(below, layer_depth, depth)
        elevation = np.where(below, elev, elevation)
        layer_height = local * amp * h * 0.6 + (6.0 * tex.relief + 10.0 * tex.gullies) * altitude
        height_field = np.where(below, layer_height, height_field)

    base, amp, dist = _FOREGROUND
    line = ((base - amp * (0.5 + 0.5 * fractal_profile(w, rng, cells=2, octaves=6))) * h).astype(
        np.float32
    )
    below = rows >= line[None, :]
    skyline = np.minimum(skyline, line)
    fine = fractal_noise(h, w, rng, cells=w / 6, octaves=3, persistence=0.6)
    reflectance = np.where(below[..., None], _meadow_colour(tex, fine), reflectance)
    frac_below = np.clip((rows - line[None, :]) / (h - line.min() + 1.0), 0.0, 1.0)
    depth = np.where(below, dist * (1.0 - 0.85 * frac_below), depth)
    elevation = np.where(below, 0.08 * (1.0 - frac_below), elevation)
    height_field = np.where(below, 6.0 * tex.relief + 2.0 * fine, height_field)

    # Anti-aliased skyline: the sky is whatever lies above the topmost terrain line.
    sky_mask = np.clip(skyline[None, :] - rows + 0.5, 0.0, 1.0).astype(np.float32)
    horizon_row = float(np.clip(np.median(skyline) + 0.05 * h, 0, h))
    reflectance = np.clip(reflectance, 0.0, 0.95).astype(np.float32)
    return MountainScene(
        reflectance=reflectance,
        sky_mask=sky_mask,
        depth=depth.astype(np.float32),
        elevation=elevation.astype(np.float32),
        shading=_lambert_shading(height_field),
        skyline=skyline,
        horizon_row=horizon_row,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# Light
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Clouds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudLayer:
    """Fractal clouds drifting with the wind; see :func:`cloud_layer`.

    Two periodic noise textures (coarse resolution) drift at slightly different speeds and are
    cross-faded with weights ``cos, sin`` of ``t / evolve_s`` so the clouds change shape slowly
    while keeping their statistics. ``alpha(t)`` returns their opacity at full resolution.
    """

    texture_a: np.ndarray
    texture_b: np.ndarray
    width: int
    height: int
    scale: int
    wind_px_per_s: tuple[float, float]
    evolve_s: float
    threshold: float
    softness: float
    horizon_row: float

    def alpha(self, t: float) -> np.ndarray:
        """Cloud opacity ``float32 (height, width)`` in [0, 1] at time ``t`` (seconds)."""
        sh, sw = self.texture_a.shape
        out_h = math.ceil(self.height / self.scale)
        out_w = math.ceil(self.width / self.scale)
        wx, wy = (v / self.scale for v in self.wind_px_per_s)
        phase = t / self.evolve_s

        def sample(tex: np.ndarray, speed: float) -> np.ndarray:
            m = np.array([[1.0, 0.0, wx * t * speed], [0.0, 1.0, wy * t * speed]])
            return cv2.warpAffine(
                tex, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
            )

        density = sample(self.texture_a, 1.0) * math.cos(phase) + sample(
            self.texture_b, 0.8
        ) * math.sin(phase)
        a = np.clip((density - self.threshold) / self.softness, 0.0, 1.0)
        # Clouds thin out toward the horizon (they are seen edge-on and hazy there).
        rows = (np.arange(out_h, dtype=np.float32) + 0.5) * self.scale
        fade = np.clip((self.horizon_row - rows) / (0.25 * self.height), 0.0, 1.0)
        a *= (0.3 + 0.7 * fade)[:, None]
        del sh, sw
        return cv2.resize(a, (self.width, self.height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def cloud_layer(
    width: int,
    height: int,
    seed: int = 0,
    *,
    coverage: float = 0.4,
    wind_px_per_s: tuple[float, float] = (0.6, 0.0),
    evolve_s: float = 1800.0,
    horizon_row: float | None = None,
) -> CloudLayer:
    """Fractal clouds for a ``width x height`` frame; ``coverage`` is the cloudy fraction.

    ``wind_px_per_s`` is the drift in full-resolution pixels per second; ``evolve_s`` the time
    over which the clouds change shape. The texture is periodic, so any ``t`` is valid.
    """
    if not 0.0 <= coverage <= 1.0:
        raise ValueError("coverage must be in [0, 1]")
    rng = np.random.default_rng([seed, 7])
    # Coarse grid: about 384 texture pixels across the frame, whatever its size, so the clouds
    # have the same look (about three large cells across) at every resolution.
    scale = max(1, round(width / 384))
    tex_w = 1024  # periodic; divisible by every octave's cell count
    tex_h = max(8, math.ceil(height / scale) + 8)

    def texture() -> np.ndarray:
        tex = fractal_noise(tex_h, tex_w, rng, cells=8, octaves=7, persistence=0.55, wrap_x=True)
        # Periodic across the width by construction; mirrored below itself to be periodic down
        # the height too, so wind with a vertical component wraps without a seam.
        return np.ascontiguousarray(np.vstack([tex, tex[::-1]]))

    a, b = texture(), texture()
    q = min(max(1.0 - coverage, 1e-3), 1 - 1e-3)
    threshold = NormalDist().inv_cdf(q)
    return CloudLayer(
        texture_a=a,
        texture_b=b,
        width=width,
        height=height,
        scale=scale,
        wind_px_per_s=wind_px_per_s,
        evolve_s=evolve_s,
        threshold=float(threshold),
        softness=0.8,
        horizon_row=float(0.6 * height if horizon_row is None else horizon_row),
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _weathered_light(light: Light, cloud_cover: float) -> Light:
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
    h, w = scene.height, scene.width
    clear_light = light_at(sun_altitude_deg)
    light = _weathered_light(clear_light, cloud_cover)
    scale = 0.55  # so that a grey card (0.18 x (sun + skylight)) reads about 0.18
    dim = sky.cloud_transmission(100.0 * cloud_cover)  # terrain and clouds; blue gaps stay
    if exposure_ev is not None:
        scale *= 2.0 ** (float(sky.ev100(sun_altitude_deg)) - exposure_ev)
    extinction = 0.0
    if visibility_m is not None and visibility_m < CLEAR_AIR_VISIBILITY_M:
        extinction = 3.912 / max(visibility_m, 1.0)
    ambient_albedo, direct_albedo, haze3 = scene.air_terms(extinction)
    frame = np.zeros((h, w, 3), np.float32)
    # Work on bands: the terrain lies below the highest skyline point, the sky above the lowest.
    t0, s1 = scene._bands

    def colour(c: np.ndarray) -> tuple[float, float, float, float]:
        k = scale * dim
        return (float(c[0] * k), float(c[1] * k), float(c[2] * k), 0.0)

    terrain = cv2.multiply(ambient_albedo[t0:], colour(light.skylight))
    if light.sun.any():
        direct = cv2.multiply(direct_albedo[t0:], colour(light.sun))
        # Alpenglow: the sun lights terrain above a line that rises as it nears the horizon.
        sun_line = float(np.clip((6.0 - sun_altitude_deg) / 6.5, 0.0, 1.1))
        if sun_line > 0:
            sunlit = smoothstep((scene.elevation[t0:] - sun_line) / 0.08 + 0.5)
            direct = cv2.multiply(
                direct, cv2.cvtColor(sunlit.astype(np.float32), cv2.COLOR_GRAY2RGB)
            )
        cv2.add(terrain, direct, dst=terrain)
    cv2.add(terrain, cv2.multiply(haze3[t0:], colour(light.haze)), dst=terrain)
    frame[t0:] = terrain

    sky_rgb = sky_radiance(
        w,
        h,
        sun_altitude_deg,
        horizon_row=scene.horizon_row,
        sun_x=sun_x,
        rows=s1,
        sun_glow=sun_glow,
    )
    if extinction > 0.0:  # fog between the camera and the sky: the sky fades to the veil
        fog = 1.0 - math.exp(-extinction * FOG_LAYER_M)
        sky_rgb = cv2.addWeighted(
            sky_rgb, 1.0 - fog, np.broadcast_to(light.haze, sky_rgb.shape).astype(np.float32),
            fog, 0.0,
        )  # fmt: skip
    mask = scene.sky_mask[:s1]
    if clouds is not None:
        if (clouds.width, clouds.height) != (w, h):
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
            cv2.multiply(cv2.cvtColor(cover, cv2.COLOR_GRAY2RGB), colour(cloud_rgb)),
            dst=sky_part,
        )
    else:  # a cover without a drawn cloud layer dims the sky as a whole
        sky_part = cv2.multiply(sky_rgb, cv2.cvtColor(mask, cv2.COLOR_GRAY2RGB), scale=scale * dim)
    cv2.add(frame[:s1], sky_part, dst=frame[:s1])
    return frame
