"""The procedural mountain scene: what the simulated camera looks at, and what the synthetic test
sequences (:mod:`skylapse.testing`) are made of. One scene generator, pure functions, no I/O.

- :mod:`skylapse.scene.mountain`: the static scene (:func:`mountain_scene`: terrain, sky mask,
  depth, elevation, shading);
- :mod:`skylapse.scene.light`: its light for a sun altitude (:func:`light_at`, under clouds
  :func:`weathered_light`) and the sky (:func:`sky_radiance`);
- :mod:`skylapse.scene.clouds`: drifting clouds (:func:`cloud_layer`);
- :mod:`skylapse.scene.render`: :func:`render_frame`, the scene lit, linear float32 RGB;
- :mod:`skylapse.scene.noise`: the fractal value noise everything is made of.

This package's own namespace is the public API (``__all__``).
"""

from skylapse.scene.clouds import CloudLayer, cloud_layer
from skylapse.scene.light import Light, light_at, sky_radiance, weathered_light
from skylapse.scene.mountain import SKY_DEPTH_M, VISIBILITY_M, MountainScene, mountain_scene
from skylapse.scene.noise import fractal_noise, fractal_profile, smoothstep
from skylapse.scene.render import render_frame

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
    "weathered_light",
]
