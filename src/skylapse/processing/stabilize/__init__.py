"""Video stabilization for fixed (tripod) and moving (pan, slider) timelapse cameras.

Streaming API (see ``render_passes.py``)::

    tracker = MotionTracker(mode="tripod", scale=2)   # pass 1, reduced-resolution gray
    for gray in reduced_frames:                        # any dtype, (H // 2, W // 2)
        tracker.add(gray)
    transforms = tracker.transforms()                  # one 2x3 per frame, full-res pixels
    crop = common_crop(transforms, (W, H))             # (x, y, w, h), valid in every frame
    for frame, m in zip(full_res_frames, transforms):  # pass 2
        out = warp_frame(frame, m, crop, out_size)     # one resample: stabilize+crop+scale

Conventions. A *stabilizing transform* ``M`` is a 2x3 float64 affine matrix in full-resolution
pixel-centre coordinates that maps a point of the frame onto the output ("reference") canvas:
warping the frame by ``M`` puts the static scene where it was in the reference. In ``"tripod"``
mode the reference is the first frame, so jitter *and* slow drift are removed; in ``"smooth"``
mode the canvas follows a smoothed camera path (``smooth_trajectory``), so deliberate pans and
slider moves stay and only shake is removed.

One module per part, each with its method and references:

- :mod:`.registration`: one image onto a keyframe (sparse, brightness-compensated, robust
  inverse-compositional Lucas-Kanade); :func:`estimate_transform` for a single pair;
- :mod:`.tracker`: pass 1, :class:`MotionTracker` (keyframes, the motion map that keeps moving
  sky out, re-anchoring without drift);
- :mod:`.trajectory`: the camera path's parameters and :func:`smooth_trajectory`;
- :mod:`.crop`: :func:`common_crop`, the area valid in every frame;
- :mod:`.warp`: pass 2, :func:`warp_frame` and its matrix, :func:`output_matrix`;
- :mod:`.sampling`: the tracker's exact bilinear sampling (the same on OpenCV 4 and 5).

This package's own namespace is the public API (``__all__``); the rest is internal to it.
"""

from skylapse.processing.stabilize.crop import common_crop
from skylapse.processing.stabilize.registration import Model, estimate_transform
from skylapse.processing.stabilize.tracker import Mode, MotionTracker
from skylapse.processing.stabilize.trajectory import smooth_trajectory
from skylapse.processing.stabilize.warp import output_matrix, warp_frame

__all__ = [
    "Mode",
    "Model",
    "MotionTracker",
    "common_crop",
    "estimate_transform",
    "output_matrix",
    "smooth_trajectory",
    "warp_frame",
]
