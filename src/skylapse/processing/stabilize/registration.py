"""Registration of one image to a keyframe: sparse inverse-compositional Lucas-Kanade.

Each frame is registered to a *keyframe* by an inverse-compositional Lucas-Kanade estimator
(Baker & Matthews 2004, "Lucas-Kanade 20 years on: a unifying framework", IJCV 56(3)) on a
Gaussian pyramid of the reduced gray image, using only a few thousand high-gradient template
pixels spread over a grid (sparse direct alignment: the template gradients and Jacobians are
computed once per keyframe, so a frame costs a few point look-ups per iteration). Per iteration
the warped samples are fitted to the template with a gain and offset, which makes the error,
like the ECC criterion (Evangelidis & Psarakis 2008, IEEE TPAMI 30(10)), invariant to global
brightness changes (flicker, a sunset falling several EV). Moving sky, clouds and anything else
that changes get Tukey-biweight IRLS weights per iteration (robust M-estimation, Huber 1981);
the tracker (:mod:`.tracker`) also keeps them out of the template with its motion map, through
the ``usable`` mask a :class:`Template` is built with.

:func:`estimate_transform` registers one pair of images; :class:`Template` is the keyframe the
tracker keeps and aligns every frame to. Coordinates are pixel centres; a *warp* here maps
template (keyframe) coordinates to image coordinates, the inverse of a stabilizing transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from skylapse.imaging.affine import compose, invert
from skylapse.imaging.pyramid import from_level, gaussian_pyramid, to_level
from skylapse.processing.stabilize.sampling import sample_bilinear

#: The motion model: 4 parameters (shift, rotation, scale) or a full 6-parameter affine map.
Model = Literal["similarity", "affine"]

_TUKEY_C = 4.685
_MAD_TO_SIGMA = 1.4826


def _params_to_matrix(p: np.ndarray, model: Model) -> np.ndarray:
    if model == "similarity":
        a, b, tx, ty = p
        return np.array([[1 + a, -b, tx], [b, 1 + a, ty]])
    p1, p2, p3, p4, p5, p6 = p
    return np.array([[1 + p1, p3, p5], [p2, 1 + p4, p6]])


@dataclass
class _Level:
    points: np.ndarray  # (N, 2) float64 pixel-centre coordinates in the template
    values: np.ndarray  # (N,) template samples
    sd: np.ndarray  # (N, P) steepest-descent images (gradient times warp Jacobian)
    centre: np.ndarray  # (2,) origin of the centred parameterisation
    shape: tuple[int, int]


def gray_float(image: np.ndarray) -> np.ndarray:
    """A gray or RGB image of any dtype as gray float32, values unscaled (RGB: ``RGB2GRAY``)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32, copy=False)


def _select_points(
    image: np.ndarray, usable: np.ndarray, cell: int, per_cell: int, model: Model
) -> _Level:
    """Template pixels with the strongest gradients, ``per_cell`` in every ``cell``-sized square.

    Spreading the pixels over a grid keeps rotation and scale well conditioned and stops one
    very contrasty region (the horizon) from dominating.
    """
    gx = cv2.Scharr(image, cv2.CV_32F, 1, 0, scale=1 / 32)
    gy = cv2.Scharr(image, cv2.CV_32F, 0, 1, scale=1 / 32)
    score = gx * gx + gy * gy
    score[~usable] = 0
    h, w = image.shape
    ny, nx = h // cell, w // cell
    oy, ox = (h - ny * cell) // 2, (w - nx * cell) // 2
    blocks = score[oy : oy + ny * cell, ox : ox + nx * cell]
    blocks = blocks.reshape(ny, cell, nx, cell).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    k = min(per_cell, cell * cell - 1)
    best = np.argpartition(-blocks, k, axis=-1)[..., :k]
    best_score = np.take_along_axis(blocks, best, axis=-1)
    # keep only real structure: stronger than a fraction of the typical selected gradient
    positive = best_score[best_score > 0]
    floor = 0.05 * np.median(positive) if positive.size else np.inf
    keep = best_score > floor
    yy = (np.arange(ny)[:, None, None] * cell + oy + best // cell)[keep]
    xx = (np.arange(nx)[None, :, None] * cell + ox + best % cell)[keep]
    gxs = gx[yy, xx].astype(np.float64)
    gys = gy[yy, xx].astype(np.float64)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    x = xx - centre[0]
    y = yy - centre[1]
    if model == "similarity":
        sd = np.stack([gxs * x + gys * y, -gxs * y + gys * x, gxs, gys], axis=1)
    else:
        sd = np.stack([gxs * x, gys * x, gxs * y, gys * y, gxs, gys], axis=1)
    points = np.stack([xx, yy], axis=1).astype(np.float64)
    return _Level(points, image[yy, xx].astype(np.float64), sd, centre, (h, w))


@dataclass
class Fit:
    """How a template aligns with an image (:meth:`Template.align`)."""

    warp: np.ndarray  # template -> image, level-0 pixel coordinates
    correlation: float  # weighted correlation of the aligned samples with the template
    gain: float  # photometric fit of the aligned samples: image = gain * template + offset
    offset: float
    inlier_fraction: float


class Template:
    """A keyframe prepared for inverse-compositional alignment on every pyramid level."""

    def __init__(
        self,
        gray: np.ndarray,
        usable: np.ndarray,
        levels: int,
        model: Model,
        points: int,
    ) -> None:
        self.model = model
        self.pyramid = gaussian_pyramid(gray, levels)
        self.levels: list[_Level] = []
        for lvl, img in enumerate(self.pyramid):
            lh, lw = img.shape
            mask = cv2.resize(usable.astype(np.uint8), (lw, lh), interpolation=cv2.INTER_NEAREST)
            margin = 2
            mask[:margin] = 0
            mask[-margin:] = 0
            mask[:, :margin] = 0
            mask[:, -margin:] = 0
            # cells sized so that every level gets about `points` samples (fewer on coarse ones)
            target = points / (1.6**lvl)
            per_cell = 4
            cell = max(4, int(np.sqrt(lh * lw * per_cell / target)))
            self.levels.append(_select_points(img, mask.astype(bool), cell, per_cell, model))

    def align(
        self,
        image_pyramid: Sequence[np.ndarray],
        init: np.ndarray,
        iterations: int = 12,
        tolerance: float = 0.002,
    ) -> Fit:
        """Gauss-Newton with IRLS weights, coarse to fine; ``init`` maps template to image."""
        warp = np.asarray(init, dtype=np.float64)
        fit = Fit(warp, 0.0, 1.0, 0.0, 0.0)
        for lvl in range(len(self.levels) - 1, -1, -1):
            warp_l = to_level(warp, lvl)
            fit = self._align_level(
                self.levels[lvl],
                image_pyramid[lvl],
                warp_l,
                iterations,
                tolerance * 2.0**lvl,
            )
            warp = from_level(fit.warp, lvl)
            fit.warp = warp
        return fit

    def _align_level(
        self,
        lev: _Level,
        image: np.ndarray,
        warp: np.ndarray,
        iterations: int,
        tol: float,
    ) -> Fit:
        h, w = image.shape
        pts = lev.points
        t = lev.values
        sd = lev.sd
        weights = np.ones(len(t))
        to_c = np.array([[1.0, 0, -lev.centre[0]], [0, 1.0, -lev.centre[1]]])
        from_c = invert(to_c)
        # corners used to measure how far an update moves the image
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
        corr = gain = 0.0
        offset = 0.0
        inliers = 0.0
        for it in range(iterations):
            xy = pts @ warp[:, :2].T + warp[:, 2]
            inside = (
                (xy[:, 0] >= 0)
                & (xy[:, 0] <= w - 1.001)
                & (xy[:, 1] >= 0)
                & (xy[:, 1] <= h - 1.001)
            )
            v = sample_bilinear(image, xy[:, 0], xy[:, 1])
            wgt = weights * inside
            sw = wgt.sum()
            if sw < 0.05 * len(t) or sw <= 10:
                break
            # photometric gain and offset, weighted least squares of v on t
            mt = (wgt @ t) / sw
            mv = (wgt @ v) / sw
            dt = t - mt
            dv = v - mv
            vt = wgt @ (dt * dt)
            vv = wgt @ (dv * dv)
            cov = wgt @ (dt * dv)
            gain = cov / vt if vt > 0 else 1.0
            if not np.isfinite(gain) or abs(gain) < 1e-6:
                break
            corr = cov / np.sqrt(vt * vv) if vv > 0 else 0.0
            offset = mv - gain * mt
            err = dv / gain - dt
            # Tukey biweight on the residual, scale from the median absolute deviation
            sigma = _MAD_TO_SIGMA * np.median(np.abs(err[inside])) + 1e-9
            r = err / (_TUKEY_C * sigma)
            weights = np.where(np.abs(r) < 1, (1 - r * r) ** 2, 0.0)
            wgt = weights * inside
            inliers = float(wgt.sum() / max(inside.sum(), 1))
            wsd = sd * wgt[:, None]
            hess = wsd.T @ sd
            grad = wsd.T @ err
            try:
                dp = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                break
            inc = compose(from_c, compose(_params_to_matrix(dp, self.model), to_c))
            warp = compose(warp, invert(inc))
            moved = corners @ inc[:, :2].T + inc[:, 2] - corners
            if np.abs(moved).max() < tol and it > 0:
                break
        return Fit(warp, float(corr), float(gain), float(offset), inliers)


def estimate_transform(
    reference: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    init: np.ndarray | None = None,
    *,
    model: Model = "similarity",
    levels: int = 3,
    points: int = 4000,
) -> np.ndarray:
    """The 2x3 transform that maps ``image`` pixel coordinates onto ``reference`` coordinates.

    ``cv2.warpAffine(image, m, size)`` (or ``warp_frame``) then overlays the image on the
    reference. Both images are gray or RGB of one size, any dtype; ``mask`` (non-zero = static,
    reliable) restricts which reference pixels are used; ``init`` is a starting estimate in the
    same convention. Robust to a global gain/offset between the images and to outliers (moving
    regions) thanks to IRLS; see the module docstring for the method.
    """
    ref = gray_float(reference)
    img = gray_float(image)
    usable = np.ones(ref.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    template = Template(ref, usable, levels, model, points)
    start = np.eye(2, 3) if init is None else invert(init)
    fit = template.align(gaussian_pyramid(img, levels), start)
    return invert(fit.warp)
