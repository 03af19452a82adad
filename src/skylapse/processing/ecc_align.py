"""Coarse-to-fine ECC image registration, shared by bracket and focus-stack alignment.

``ecc_warp(template, image, ...)`` estimates the 2x3 warp ``W`` that maps template pixel
coordinates to image coordinates (``image(W @ [x, y, 1]) ~ template(x, y)``), so
``cv2.warpAffine(image, W, size, flags=... | cv2.WARP_INVERSE_MAP)`` brings the image onto the
template. ``apply_warp`` does exactly that for pipeline frames.

Why ECC: the enhanced correlation coefficient (Evangelidis & Psarakis 2008, "Parametric image
alignment using enhanced correlation coefficient maximization", IEEE TPAMI 30(10)) is invariant
to a global gain and offset of intensities, which is what differently exposed or differently
focused frames of one scene look like to each other once clipped pixels are masked out, and it
converges to sub-pixel accuracy. Running it on a Gaussian pyramid (coarse level first, the
estimate doubled in translation at each finer level) widens the capture range to several
pixels and keeps the full-resolution work small.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from skylapse.imaging.pyramid import gaussian_pyramid

MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
}


def _mask_pyramid(
    mask: np.ndarray | None, shapes: list[tuple[int, ...]]
) -> Sequence[np.ndarray | None]:
    if mask is None:
        return [None] * len(shapes)
    out = [mask]
    for shape in shapes[1:]:
        # a coarse pixel is valid only if its whole footprint is: erode before decimating
        eroded = cv2.erode(out[-1], np.ones((3, 3), np.uint8))
        out.append(cv2.resize(eroded, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST))
    return out


def ecc_warp(
    template: np.ndarray,
    image: np.ndarray,
    *,
    motion: str = "translation",
    template_mask: np.ndarray | None = None,
    image_mask: np.ndarray | None = None,
    init: np.ndarray | None = None,
    finest_level: int = 0,
    coarsest_size: int = 48,
    iterations: int = 30,
    epsilon: float = 1e-5,
    min_pixels: int = 1500,
    max_step: float = 2.0,
) -> np.ndarray:
    """Estimate the 2x3 warp from ``template`` coordinates to ``image`` coordinates.

    Parameters
    ----------
    template, image : 2-D float32 arrays of the same shape (grey levels).
    motion : ``"translation"``, ``"euclidean"`` or ``"affine"``.
    template_mask, image_mask : optional uint8 masks (non-zero = usable pixel).
    init : optional initial 2x3 warp at full resolution.
    finest_level : stop the refinement at this pyramid level (0 = full resolution, 1 = half);
        the result is still expressed in full-resolution pixels.
    coarsest_size : the coarsest level is the last one whose shorter side is at least this.
    min_pixels : coarse levels with fewer usable template pixels are skipped.
    max_step : at levels after the first estimate, a translation update larger than this
        (in that level's pixels) is rejected as divergence.

    Returns
    -------
    The 2x3 float64 warp. Levels at which ECC does not converge keep the previous estimate.
    """
    if template.shape != image.shape or template.ndim != 2:
        raise ValueError("template and image must be 2-D arrays of the same shape")
    levels = 1
    while min(template.shape) >> levels >= coarsest_size:
        levels += 1
    finest_level = min(finest_level, levels - 1)
    t_pyr = gaussian_pyramid(template.astype(np.float32, copy=False), levels)
    i_pyr = gaussian_pyramid(image.astype(np.float32, copy=False), levels)
    shapes = [p.shape for p in t_pyr]
    tm_pyr = _mask_pyramid(template_mask, shapes)
    im_pyr = _mask_pyramid(image_mask, shapes)

    warp: np.ndarray = (
        np.eye(2, 3, dtype=np.float32) if init is None else init.astype(np.float32).copy()
    )
    scale = 2.0 ** (levels - 1)
    warp[:, 2] /= scale
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, epsilon)
    estimated = False
    for level in range(levels - 1, finest_level - 1, -1):
        tm, im = tm_pyr[level], im_pyr[level]
        ones = np.full(shapes[level], 255, np.uint8)
        tm = ones if tm is None else tm
        im = ones if im is None else im
        # too few usable pixels at a coarse level make ECC wander off: start finer instead
        if level > finest_level and cv2.countNonZero(tm) < min_pixels:
            warp[:, 2] *= 2.0
            continue
        try:
            _, new = cv2.findTransformECCWithMask(
                t_pyr[level], i_pyr[level], tm, im, warp, MOTIONS[motion], criteria, 5
            )
            # a finer level only refines: a jump of several pixels here is divergence
            if not estimated or np.abs(new[:, 2] - warp[:, 2]).max() <= max_step:
                warp, estimated = new, True
        except cv2.error:
            pass  # not converged at this level: keep the coarser estimate
        if level > finest_level:
            warp[:, 2] *= 2.0
    warp = warp.astype(np.float64)
    warp[:, 2] *= 2.0**finest_level
    return warp


def working_level(shape: tuple[int, ...], min_side: int = 256) -> int:
    """The coarsest pyramid level whose shorter side is still >= ``min_side`` (0 if none).

    ECC's accuracy is a small fraction of a pixel at the level it finishes on, so ~270 px
    (a quarter of 1080p) already gives a few hundredths of a full-resolution pixel at a
    sixteenth of the cost.
    """
    level = 0
    while min(shape[:2]) >> (level + 1) >= min_side:
        level += 1
    return level


def apply_warp(
    frame: np.ndarray, warp: np.ndarray, interpolation: int = cv2.INTER_CUBIC
) -> np.ndarray:
    """Resample ``frame`` onto the template grid of ``warp`` (see ``ecc_warp``).

    Borders that come from outside the frame replicate the edge, so a later fusion never sees
    black wedges; the pipeline's common crop removes them.
    """
    h, w = frame.shape[:2]
    return cv2.warpAffine(
        frame,
        np.asarray(warp, np.float64),
        (w, h),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
