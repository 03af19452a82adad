"""The procedural mountain scene: what the simulated camera looks at, and what the synthetic test
sequences (:mod:`skylapse.testing`) are made of. One scene generator, pure functions, no I/O.

- :mod:`skylapse.scene.mountain`: the static scene (:func:`mountain_scene`), its light
  (:func:`light_at`, :func:`sky_radiance`), drifting clouds (:func:`cloud_layer`) and
  :func:`render_frame`, linear float32 RGB;
- :mod:`skylapse.scene.noise`: the fractal value noise everything is made of.
"""

from skylapse.scene.mountain import (
    SKY_DEPTH_M,
    VISIBILITY_M,
    CloudLayer,
    Light,
    MountainScene,
    cloud_layer,
    light_at,
    mountain_scene,
    render_frame,
    sky_radiance,
)
from skylapse.scene.noise import fractal_noise, fractal_profile, smoothstep

__all__ = [
    "SKY_DEPTH_M",
    "VISIBILITY_M",
    "CloudLayer",
    "Light",
    "MountainScene",
    "cloud_layer",
    "fractal_noise",
    "fractal_profile",
    "light_at",
    "mountain_scene",
    "render_frame",
    "sky_radiance",
    "smoothstep",
]
