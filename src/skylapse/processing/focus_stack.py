"""Focus stacking: align a focus bracket and fuse it into one all-in-focus frame.

API (pure functions on pipeline frames, uint16 HxWx3 sRGB; see :mod:`skylapse.imaging.srgb`):

- ``estimate_focus_warps(frames) -> list[2x3]`` / ``align_focus_stack(frames) -> frames``:
  undo focus breathing (a small magnification change plus shift between focus steps) with an
  affine ECC registration of each frame onto its neighbour, chained to the middle frame.
- ``focus_measure(grey) -> map``: smoothed local Laplacian energy, the per-pixel sharpness.
- ``focus_weights(frames) -> list[map]``: per-frame blending weights, a noise-aware soft
  selection of the sharpest frame.
- ``fuse_focus_stack(frames) -> frame``: the weights blended in a Laplacian pyramid.

In the render's pass 2 a focus set is handled like a bracket set:
``fuse_focus_stack(align_focus_stack(set_frames))``.

Method. Sharpness is measured as the energy of the Laplacian, averaged over a Gaussian window
(the "sum of modified Laplacian" family of focus operators; Nayar & Nakagawa 1994, ranked
among the best by Pertuz, Puig & Garcia 2013). Each pixel takes the frame where that energy is
largest, through a soft-max whose temperature is the smallest energy in the stack at that
pixel: a clear winner in textured areas, an average where no frame is sharper than another
(flat areas, where a hard choice would only pick noise; the same idea as the
consistency verification of Li, Manjunath & Mitra 1995, without its blocky decisions). The
frames are then blended with those weights in a Laplacian pyramid (Burt & Adelson 1983), which
hides the seams at coarse scales while the finest scale follows the full-resolution weights.
Measuring sharpness over a window instead of per pixel (enfuse's ``--hard-mask`` contrast
fusion takes the local standard deviation in a 5x5 window and a hard winner) makes the choice
less sensitive to noise.

References
----------
S. K. Nayar, Y. Nakagawa, "Shape from focus", IEEE TPAMI 16(8), 1994.
S. Pertuz, D. Puig, M. A. Garcia, "Analysis of focus measure operators for shape-from-focus",
Pattern Recognition 46(5), 2013.
H. Li, B. S. Manjunath, S. K. Mitra, "Multisensor image fusion using the wavelet transform",
Graphical Models and Image Processing 57(3), 1995.
P. J. Burt, E. H. Adelson, "A multiresolution spline with application to image mosaics",
ACM TOG 2(4), 1983.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from skylapse.imaging.affine import compose
from skylapse.imaging.pyramid import from_level, gaussian_pyramid
from skylapse.imaging.srgb import MAX16
from skylapse.processing.ecc_align import apply_warp, ecc_warp, working_level
from skylapse.processing.exposure_fusion import laplacian_blend


def _grey(frame: np.ndarray) -> np.ndarray:
    """Channel-mean grey of a uint16 frame, float32 in [0, 1]."""
    return cv2.transform(frame.astype(np.float32), np.full((1, 3), 1.0 / (3 * MAX16), np.float32))


def estimate_focus_warps(
    frames: Sequence[np.ndarray],
    reference_index: int | None = None,
    *,
    motion: str = "affine",
    level: int | None = None,
) -> list[np.ndarray]:
    """Warps (template = reference frame coordinates -> frame coordinates) for a focus stack.

    Focus breathing changes the magnification by a fraction of a percent per step and the
    frames far from the reference are blurred where it is sharp, so each frame is registered
    onto its neighbour towards the reference (the most similar image), and the warps are
    chained. ``motion="affine"`` covers scale + shift (+ the small rotation or shear of a
    tilting lens); ECC has no similarity model. The estimate runs down to pyramid ``level``
    (``None``: the coarsest level at least 256 px high) and is expressed in full-resolution
    pixels.
    """
    count = len(frames)
    if reference_index is None:
        reference_index = (count - 1) // 2
    if level is None:
        level = working_level(frames[0].shape)
    grey = [gaussian_pyramid(_grey(f), level + 1)[-1] for f in frames]
    warps: list[np.ndarray | None] = [None] * count
    warps[reference_index] = np.eye(2, 3)
    for step in (1, -1):
        i = reference_index + step
        previous = np.eye(2, 3)  # reference -> frame i - step, at full resolution
        while 0 <= i < count:
            # neighbour (closer to the reference) -> frame i, at the working level
            pair = ecc_warp(grey[i - step], grey[i], motion=motion)
            previous = warps[i] = compose(from_level(pair, level), previous)
            i += step
    return [np.asarray(w) for w in warps]


def align_focus_stack(
    frames: Sequence[np.ndarray],
    reference_index: int | None = None,
    *,
    motion: str = "affine",
) -> list[np.ndarray]:
    """Resample every frame of a focus stack onto the reference (middle) frame's geometry."""
    if reference_index is None:
        reference_index = (len(frames) - 1) // 2
    warps = estimate_focus_warps(frames, reference_index, motion=motion)
    return [
        f if i == reference_index else apply_warp(f, w)
        for i, (f, w) in enumerate(zip(frames, warps, strict=True))
    ]


def focus_measure(grey: np.ndarray, window_sigma: float = 1.0) -> np.ndarray:
    """Local Laplacian energy: Laplacian squared, averaged over a Gaussian window."""
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    return cv2.GaussianBlur(lap * lap, (0, 0), window_sigma)


def focus_weights(
    frames_u16: Sequence[np.ndarray],
    *,
    window_sigma: float = 1.0,
    softness: float = 1.0,
) -> list[np.ndarray]:
    """Per-frame float32 blending weights that sum to one at every pixel.

    ``w_i ~ exp(-(F_max - F_i) / (softness * F_min))`` with ``F`` the focus measure of each
    frame and ``F_max``, ``F_min`` its largest and smallest value over the stack at that
    pixel. Where one frame is clearly sharper (textured areas: the differences dwarf the
    least-sharp frame's energy) this is a winner-take-all selection; where no frame is sharper
    than the others (smooth sky, defocused-everywhere areas: every ``F_i`` is just noise
    energy, so ``F_min`` is of the order of the differences) the frames are averaged, which
    lowers the noise instead of copying one frame's noise as a hard selection does.
    """
    measures = np.stack([focus_measure(_grey(f), window_sigma) for f in frames_u16])
    best = measures.max(axis=0)
    scale = measures.min(axis=0) * np.float32(softness) + np.float32(1e-12)
    measures -= best
    measures /= scale
    weights = np.exp(measures, out=measures)
    weights /= weights.sum(axis=0)
    return list(weights)


def fuse_focus_stack(
    frames_u16: Sequence[np.ndarray],
    *,
    window_sigma: float = 1.0,
    softness: float = 1.0,
    levels: int | None = None,
) -> np.ndarray:
    """Fuse an aligned focus stack into one all-in-focus uint16 frame (see module docstring)."""
    frames_u16 = list(frames_u16)
    if not frames_u16:
        raise ValueError("no frames to fuse")
    if len(frames_u16) == 1:
        return frames_u16[0].copy()
    weights = focus_weights(frames_u16, window_sigma=window_sigma, softness=softness)
    fused = laplacian_blend(frames_u16, weights, weight_level=0, levels=levels)
    np.clip(fused, 0.0, MAX16, out=fused)
    fused += 0.5
    return fused.astype(np.uint16)
