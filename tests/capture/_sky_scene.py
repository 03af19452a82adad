"""A small photometric model of a camera looking at a landscape under the sky of skylapse.sky.

Scene EV100 = clear-sky table at the sun's elevation + cloud dimming + slow random flicker; the
frame's linear luminance = 18 % grey at the incident-meter exposure, times the exposure error,
times a fixed landscape pattern (the mountain scene of skylapse.scene in daylight, relative to
an 18 % grey card: bright sky above, darker textured ridges, snow and forest), with shot and read
noise, clipped at sensor white. Used by the closed-loop exposure tests.
"""

from __future__ import annotations

import math

import numpy as np

from skylapse import sky
from skylapse.capture.exposure import ExposureSettings, camera_calibration_log2
from skylapse.imaging.luma import luminance
from skylapse.scene import mountain_scene, render_frame

#: Sun altitude the landscape pattern is lit for (full daylight), degrees.
PATTERN_SUN_DEG = 10.0


class SkyScene:
    def __init__(
        self, aperture_f: float = 1.8, shape=(90, 160), seed: int = 0, flicker_ev: float = 0.01
    ) -> None:
        rng = np.random.default_rng(seed)
        h, w = shape
        # metered render: an 18 % grey card in full light reads 0.18
        lit = render_frame(mountain_scene(w, h, seed), sun_altitude_deg=PATTERN_SUN_DEG)
        self.pattern_log2 = np.log2(np.maximum(luminance(lit), 1e-6) / 0.18).astype(np.float64)
        self.calibration = camera_calibration_log2(aperture_f)
        self.rng = rng
        self.flicker_ev = flicker_ev

    def scene_ev(self, sun_elevation: float, cloud_ev: float = 0.0) -> float:
        return (
            float(sky.ev100(sun_elevation))
            + cloud_ev
            + self.flicker_ev * float(self.rng.standard_normal())
        )

    def frame(self, settings: ExposureSettings, scene_ev: float) -> np.ndarray:
        log2_level = self.calibration + scene_ev + math.log2(settings.exposure_s * settings.gain)
        lin = 2.0 ** (log2_level + self.pattern_log2)
        # photons: full well ~ 10 000 e- at white; gain amplifies shot and read noise alike
        electrons = lin * 10000.0 / settings.gain
        shot = np.sqrt(np.maximum(electrons, 0.0)) * self.rng.standard_normal(lin.shape)
        read = 3.0 * self.rng.standard_normal(lin.shape)
        noisy = (electrons + shot + read) * settings.gain / 10000.0
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)
