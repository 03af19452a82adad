"""Pass 2 of stabilization: each full-resolution frame stabilized, cropped and scaled at once."""

from __future__ import annotations

import cv2
import numpy as np

from skylapse.imaging.affine import compose, invert
from skylapse.imaging.scratch import ScratchBuffer


def output_matrix(
    transform: np.ndarray, crop: tuple[float, float, float, float], out_size: tuple[int, int]
) -> np.ndarray:
    """The 2x3 matrix from output pixels to source pixels for ``warp_frame``.

    The crop (pixel-edge coordinates on the reference canvas) is scaled to ``out_size`` with its
    edges aligned, then mapped back into the source by the inverse stabilizing transform.
    """
    x, y, w, h = crop
    ow, oh = out_size
    sx, sy = w / ow, h / oh
    out_to_ref = np.array([[sx, 0.0, x + 0.5 * sx - 0.5], [0.0, sy, y + 0.5 * sy - 0.5]])
    return compose(invert(transform), out_to_ref)


#: The RGBA buffers of ``warp_frame``, reused from frame to frame (per thread).
_RGBA_IN = ScratchBuffer()
_RGBA_OUT = ScratchBuffer()


def warp_frame(
    frame: np.ndarray,
    transform: np.ndarray,
    crop: tuple[float, float, float, float],
    out_size: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Stabilize, crop and scale a frame with a single resample.

    ``frame`` is a pipeline frame (uint16 HxWx3; HxWx4 and gray work too), ``transform`` its
    stabilizing transform, ``crop`` from ``common_crop``, ``out_size`` the output
    ``(width, height)``. Composing crop and scale into the warp matrix means one interpolation
    instead of three. RGB is warped as RGBA because OpenCV's 4-channel 16-bit path is
    vectorised and, conversions included, about 1.5x faster than its 3-channel path. OpenCV 4.x
    places each sample to within 1/64 px (see :mod:`.sampling`), 5.x exactly; unlike in the
    tracker, nothing downstream amplifies that.
    """
    m = output_matrix(transform, crop, out_size)
    flags = interpolation | cv2.WARP_INVERSE_MAP
    if frame.ndim == 3 and frame.shape[2] == 3:
        # The two RGBA buffers are reused from frame to frame (per thread): two fresh 16 MB
        # arrays per 1080p frame would cost page faults and fragment the heap.
        rgba_in = _RGBA_IN.get((*frame.shape[:2], 4), frame.dtype)
        rgba = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA, dst=rgba_in)
        out_shape = (out_size[1], out_size[0])
        out = cv2.warpAffine(
            rgba,
            m,
            out_size,
            dst=_RGBA_OUT.get((*out_shape, 4), frame.dtype),
            flags=flags,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)
    return cv2.warpAffine(frame, m, out_size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
