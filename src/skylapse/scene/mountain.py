"""The static mountain scene the simulated camera looks at, with known ground truth.

The scene is built once and lit many times (`skylapse.scene.render`), so that a 1080p sequence
of hundreds of frames costs a few tens of milliseconds per frame. :func:`mountain_scene` builds
it for a size and seed: the linear-light reflectance of layered ridges (rock strata, snow on the
high peaks, forest lower down, a textured foreground meadow), a soft sky mask, the distance of
every pixel (for aerial haze), a relative terrain elevation (for alpenglow: at low sun only the
peaks stay lit) and a Lambert shading term. Everything is procedural fractal noise, made with
``cv2.resize`` of random grids, so it is deterministic for a seed and costs well under a second
at 1080p. :meth:`MountainScene.air_terms` gives what the light falls on through the air.

Procedural methods: fractal (fBm) value noise (Perlin, "An image synthesizer", SIGGRAPH 1985;
Musgrave et al., "Texturing and Modeling", 2003), ridged multifractal skylines, exponential
aerial perspective (Koschmieder 1924).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from skylapse.scene.noise import fractal_noise, fractal_profile, smoothstep

#: Meteorological visibility used for aerial perspective, metres.
VISIBILITY_M = 45_000.0

#: Depth given to sky pixels, metres (effectively infinite).
SKY_DEPTH_M = 1.0e6


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
    def bands(self) -> tuple[int, int]:
        """First row with terrain, and one past the last row with sky (a frame is rendered in
        these two bands: the terrain below the highest skyline point, the sky above the
        lowest)."""
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
