"""Video stabilization for fixed (tripod) and moving (pan, slider) timelapse cameras.

Streaming API (see ``render.py``)::

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

Method. Each frame is registered to a *keyframe* by an inverse-compositional Lucas-Kanade
estimator (Baker & Matthews 2004, "Lucas-Kanade 20 years on: a unifying framework", IJCV 56(3))
on a Gaussian pyramid of the reduced gray image, using only a few thousand high-gradient
template pixels spread over a grid (sparse direct alignment: the template gradients and
Jacobians are computed once per keyframe, so a frame costs a few point look-ups per iteration).
Per iteration the warped samples are fitted to the template with a gain and offset, which makes
the error, like the ECC criterion (Evangelidis & Psarakis 2008, IEEE TPAMI 30(10)), invariant to
global brightness changes (flicker, a sunset falling several EV). Moving sky, clouds and anything
else that changes is kept out in two ways: Tukey-biweight IRLS weights per iteration (robust
M-estimation, Huber 1981), and a *motion map*, a running average of the normalised residual of
every aligned frame against the keyframe on the coarsest level, from which template pixels are
re-selected every few frames. The first ``warmup`` frames are re-estimated once the motion map
has formed, so early frames are not pulled by clouds either.

No drift accumulates: frames are registered to the keyframe, not to their predecessor. When the
light changes so much that the keyframe's correlation with the current frames drops (day to
night, shadows moving), the tracker re-anchors: the new keyframe is the average of the last few
frames warped by their own estimates onto the keyframe canvas, so its position error is the mean
of several estimates (the noise also falls) and the chain through keyframes random-walks only by
that small amount, once per re-anchoring (template update with drift correction, after Matthews,
Ishikawa & Baker 2004, "The template update problem", IEEE TPAMI 26(6)).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from skylapse.imaging.affine import compose, invert, rescale
from skylapse.imaging.pyramid import from_level, gaussian_pyramid, to_level
from skylapse.imaging.scratch import ScratchBuffer

Mode = Literal["tripod", "smooth"]
Model = Literal["similarity", "affine"]

_TUKEY_C = 4.685
_MAD_TO_SIGMA = 1.4826


def _params_to_matrix(p: np.ndarray, model: Model) -> np.ndarray:
    if model == "similarity":
        a, b, tx, ty = p
        return np.array([[1 + a, -b, tx], [b, 1 + a, ty]])
    p1, p2, p3, p4, p5, p6 = p
    return np.array([[1 + p1, p3, p5], [p2, 1 + p4, p6]])


# ---------------------------------------------------------------------------------------------
# sparse inverse-compositional Lucas-Kanade
# ---------------------------------------------------------------------------------------------


@dataclass
class _Level:
    points: np.ndarray  # (N, 2) float64 pixel-centre coordinates in the template
    values: np.ndarray  # (N,) template samples
    sd: np.ndarray  # (N, P) steepest-descent images (gradient times warp Jacobian)
    centre: np.ndarray  # (2,) origin of the centred parameterisation
    shape: tuple[int, int]


def _gray_float(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32, copy=False)


# Why the tracker samples images itself rather than with cv2.remap / cv2.warpAffine: OpenCV 4.x
# rounds every INTER_LINEAR source position to 1/32 px (imgproc/src/imgwarp.cpp, RemapInvoker and
# warpAffine: ``cvRound(x * INTER_TAB_SIZE)``, INTER_TAB_SIZE = 32), while 5.x interpolates at the
# exact float position (remapLinearInvoker_* / warpAffineLinearInvoker_*, warp_kernels.simd.hpp).
# Gauss-Newton, IRLS and the motion-map threshold amplify that sub-1/64 px difference into
# different transforms (up to 0.06 px on the render test's sequence), so the tracker would give
# other results on 4.x and 5.x. Bilinear sampling at float64 positions is the same on both.


def _sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (2-D, at least 2x2) at the positions ``(x, y)``, bilinear, as float64.

    Pixel centres are at integer coordinates; positions outside the image are clamped to its
    edge (``BORDER_REPLICATE``).
    """
    h, w = image.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.intp), w - 2)
    y0 = np.minimum(y.astype(np.intp), h - 2)
    fx = x - x0
    fy = y - y0
    flat = np.ascontiguousarray(image).ravel()
    i = y0 * w + x0
    top = flat.take(i) * (1 - fx) + flat.take(i + 1) * fx
    bottom = flat.take(i + w) * (1 - fx) + flat.take(i + w + 1) * fx
    sampled: np.ndarray = top * (1 - fy) + bottom * fy
    return sampled


def _warp_bilinear(
    image: np.ndarray, m: np.ndarray, size: tuple[int, int], *, zero_border: bool = False
) -> np.ndarray:
    """``cv2.warpAffine(image, m, size, flags=INTER_LINEAR | WARP_INVERSE_MAP)`` at exact
    positions: output pixel ``p`` is ``image`` at ``m @ [p, 1]``, float32.

    Outside the image the edge is replicated, or with ``zero_border`` the image continues with
    zeros (``BORDER_CONSTANT``: samples within one pixel of the edge blend towards 0).
    """
    if zero_border:
        image = np.pad(image, 1)
        m = np.asarray(m, np.float64) + np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    w, h = size
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    x = np.add.outer(m[0, 1] * ys + m[0, 2], m[0, 0] * xs)
    y = np.add.outer(m[1, 1] * ys + m[1, 2], m[1, 0] * xs)
    return _sample_bilinear(image, x, y).astype(np.float32)


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
class _Fit:
    warp: np.ndarray  # template -> image, level-0 pixel coordinates
    correlation: float  # weighted correlation of the aligned samples with the template
    gain: float
    offset: float
    inlier_fraction: float


class _Template:
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
    ) -> _Fit:
        """Gauss-Newton with IRLS weights, coarse to fine; ``init`` maps template to image."""
        warp = np.asarray(init, dtype=np.float64)
        fit = _Fit(warp, 0.0, 1.0, 0.0, 0.0)
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
    ) -> _Fit:
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
            v = _sample_bilinear(image, xy[:, 0], xy[:, 1])
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
        return _Fit(warp, float(corr), float(gain), float(offset), inliers)


# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------


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
    ref = _gray_float(reference)
    img = _gray_float(image)
    usable = np.ones(ref.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    template = _Template(ref, usable, levels, model, points)
    start = np.eye(2, 3) if init is None else invert(init)
    fit = template.align(gaussian_pyramid(img, levels), start)
    return invert(fit.warp)


def _params(m: np.ndarray) -> np.ndarray:
    """Affine matrix to smooth-able parameters: translation, rotation, log-scale, shear terms."""
    a, b, tx = m[0]
    c, d, ty = m[1]
    angle = np.arctan2(c - b, a + d)
    scale = np.log(np.sqrt(abs(a * d - b * c)))
    return np.array([tx, ty, angle, scale, a - d, b + c])


def _from_params(p: np.ndarray) -> np.ndarray:
    tx, ty, angle, log_scale, s1, s2 = p
    # invert _params: a + d = 2 r cos, c - b = 2 r sin, a - d = s1, b + c = s2
    k = np.exp(log_scale)
    cs, sn = np.cos(angle), np.sin(angle)
    # solve for r so that det matches: det = r^2 - (s1^2 + s2^2)/4
    r = np.sqrt(k * k + (s1 * s1 + s2 * s2) / 4)
    a = r * cs + s1 / 2
    d = r * cs - s1 / 2
    c = r * sn + s2 / 2
    b = -r * sn + s2 / 2
    return np.array([[a, b, tx], [c, d, ty]])


def smooth_trajectory(transforms: Sequence[np.ndarray], radius: float) -> list[np.ndarray]:
    """Stabilizing transforms that keep intentional camera motion and remove only shake.

    ``transforms`` are tripod-mode transforms (frame -> first frame). Their parameters
    (translation, rotation, log-scale, shear) are smoothed by a centred Gaussian-weighted local
    *linear* regression of standard deviation ``radius`` frames (a LOESS-style filter, Cleveland
    1979), which reproduces a constant-speed pan exactly, also at the ends of the sequence, where
    a plain moving average would lag. The result for frame ``t`` is ``S_t^-1 ∘ M_t``: the frame
    is brought to the reference and then moved back along the smoothed path ``S_t``.
    """
    ms = [np.asarray(m, dtype=np.float64) for m in transforms]
    n = len(ms)
    if n == 0:
        return []
    p = np.array([_params(m) for m in ms])
    p[:, 2] = np.unwrap(p[:, 2])
    t = np.arange(n, dtype=np.float64)
    half = int(np.ceil(3 * radius))
    smoothed = np.empty_like(p)
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        tt = t[lo:hi] - i
        w = np.exp(-0.5 * (tt / max(radius, 1e-9)) ** 2)
        # weighted linear fit; intercept is the smoothed value at i
        s0, s1, s2 = w.sum(), w @ tt, w @ (tt * tt)
        y = p[lo:hi]
        b0, b1 = w @ y, (w * tt) @ y
        det = s0 * s2 - s1 * s1
        smoothed[i] = (s2 * b0 - s1 * b1) / det if det > 1e-12 * s0 * s0 else b0 / s0
    return [compose(invert(_from_params(smoothed[i])), ms[i]) for i in range(n)]


def common_crop(
    transforms: Sequence[np.ndarray], size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The largest rectangle ``(x, y, w, h)`` that holds valid pixels in every warped frame.

    ``size`` is the source ``(width, height)``. The rectangle has the source's aspect ratio (to
    rounding; ``w`` and ``h`` are even, as 4:2:0 video needs) and lies, for every frame, inside
    the quadrilateral onto which the transform maps the frame's pixel centres. A rectangle of
    fixed aspect inside an intersection of half-planes is a linear programme in its centre and
    size; the size is concave in the centre, which is found by a shrinking grid search.
    """
    width, height = size
    aspect = width / height
    quad = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)
    normals, offsets = [], []
    for m in transforms:
        q = quad @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]
        e1, e2 = q[1] - q[0], q[2] - q[0]
        area2 = e1[0] * e2[1] - e1[1] * e2[0]
        for k in range(4):
            a, b = q[k], q[(k + 1) % 4]
            edge = b - a
            n = np.array([edge[1], -edge[0]])  # outward for a clockwise-in-y-down quad
            if area2 < 0:
                n = -n
            n /= np.linalg.norm(n)
            normals.append(n)
            offsets.append(n @ a)
    normals_a = np.array(normals)
    offsets_a = np.array(offsets)
    # the rectangle corner that is furthest along n: half extents (s*aspect/2, s/2) for height s
    reach = np.abs(normals_a[:, 0]) * aspect / 2 + np.abs(normals_a[:, 1]) / 2

    def height_at(cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
        slack = offsets_a[None, :] - (cx[:, None] * normals_a[:, 0] + cy[:, None] * normals_a[:, 1])
        heights: np.ndarray = (slack / reach[None, :]).min(axis=1)
        return heights

    cx, cy = (width - 1) / 2, (height - 1) / 2
    step = max(width, height) / 8
    for _ in range(40):
        gx, gy = np.meshgrid(np.arange(-4, 5) * step + cx, np.arange(-4, 5) * step + cy)
        hs = height_at(gx.ravel(), gy.ravel())
        best = int(np.argmax(hs))
        cx, cy = gx.ravel()[best], gy.ravel()[best]
        step /= 3
        if step < 1e-3:
            break
    best_h = float(height_at(np.array([cx]), np.array([cy]))[0])
    if best_h <= 2:
        raise ValueError("the frames share no valid area; the motion is too large to crop")
    # integer, even sizes inside the continuous optimum; pixel-centre region [x-.5, x+w-.5]
    h_int = int(np.floor(min(best_h + 1, height) / 2) * 2)
    w_int = int(np.floor(min(h_int * aspect, width) / 2) * 2)
    while h_int >= 2:
        x0 = int(np.ceil(cx - (w_int - 1) / 2 - 1e-9))
        y0 = int(np.ceil(cy - (h_int - 1) / 2 - 1e-9))
        for x, y in ((x0, y0), (x0 - 1, y0), (x0, y0 - 1), (x0 - 1, y0 - 1)):
            if _crop_valid(transforms, size, (x, y, w_int, h_int)):
                return (x, y, w_int, h_int)
        h_int -= 2
        w_int = int(np.floor(min(h_int * aspect, width) / 2) * 2)
    raise ValueError("the frames share no valid area")


def _crop_valid(
    transforms: Sequence[np.ndarray], size: tuple[int, int], crop: tuple[int, int, int, int]
) -> bool:
    """Whether the crop's outermost pixel centres fall inside every source frame."""
    width, height = size
    x, y, w, h = crop
    corners = np.array([[x, y], [x + w - 1, y], [x, y + h - 1], [x + w - 1, y + h - 1]], float)
    for m in transforms:
        src = corners @ invert(m)[:, :2].T + invert(m)[:, 2]
        if (src < -1e-6).any() or (src[:, 0] > width - 1 + 1e-6).any():
            return False
        if (src[:, 1] > height - 1 + 1e-6).any():
            return False
    return True


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
    places each sample to within 1/64 px (see ``_sample_bilinear``), 5.x exactly; unlike in the
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


# ---------------------------------------------------------------------------------------------
# pass 1: streaming motion tracker
# ---------------------------------------------------------------------------------------------


class MotionTracker:
    """Pass 1 of stabilization: reduced-resolution gray frames in, stabilizing transforms out.

    Feed every frame in order with ``add(gray)``: a 2-D array of any dtype (uint8 JPEG
    ``IMREAD_REDUCED_GRAYSCALE_2`` output is ideal) at ``1/scale`` of the full resolution, with
    edges aligned (``cv2.resize`` INTER_AREA convention). ``transforms()`` then returns one 2x3
    stabilizing transform per frame in *full-resolution* pixel coordinates, ready for
    ``common_crop`` and ``warp_frame``. Per frame only a 2x3 matrix is kept, plus the keyframe,
    a short ring of recent frames for re-anchoring and the first ``warmup`` frames.
    """

    def __init__(
        self,
        mode: Mode = "tripod",
        scale: float = 2,
        *,
        model: Model = "similarity",
        levels: int = 3,
        points: int = 3000,
        smooth_radius: float = 15.0,
        warmup: int = 8,
        reselect_every: int = 10,
        reanchor_correlation: float = 0.85,
        average_frames: int = 4,
    ) -> None:
        if mode not in ("tripod", "smooth"):
            raise ValueError(f"unknown stabilization mode {mode!r}")
        self.mode = mode
        self.scale = float(scale)
        self.model: Model = model
        self.levels = levels
        self.points = points
        self.smooth_radius = smooth_radius
        self.warmup = warmup
        self.reselect_every = reselect_every
        self.reanchor_correlation = reanchor_correlation
        self.average_frames = average_frames
        self._to_stab: list[np.ndarray] = []  # frame -> reference, reduced coordinates
        self._template: _Template | None = None
        self._key_gray: np.ndarray | None = None
        self._key_to_ref = np.eye(2, 3)  # keyframe canvas -> reference, reduced coordinates
        self._motion: np.ndarray | None = None  # running residual score, coarsest level
        self._key_corr: list[float] = []  # correlations of the first frames after anchoring
        self._since_select = 0
        self._since_anchor = 0
        self._recent: deque[tuple[np.ndarray, np.ndarray, float, float]] = deque(
            maxlen=average_frames
        )
        self._warmup_frames: list[np.ndarray] | None = []
        self.keyframes: list[int] = []  # indices of the frames where a keyframe was set

    # -- public -----------------------------------------------------------------------------

    def add(self, gray: np.ndarray) -> None:
        """Register the next frame (reduced-resolution gray, see the class docstring)."""
        img = _gray_float(np.asarray(gray))
        pyr = gaussian_pyramid(img, self.levels)
        if self._template is None:
            self._anchor(img, np.eye(2, 3))
            self._to_stab.append(np.eye(2, 3))
            self._recent.append((img, np.eye(2, 3), 1.0, 0.0))
            if self._warmup_frames is not None:
                self._warmup_frames.append(img)
            return
        fit = self._register(pyr)
        self._to_stab.append(compose(self._key_to_ref, invert(fit.warp)))
        self._update_motion(pyr[-1], fit)
        self._recent.append((img, self._to_stab[-1], fit.gain, fit.offset))
        self._since_select += 1
        self._since_anchor += 1
        if len(self._key_corr) < 5:
            self._key_corr.append(fit.correlation)
        if self._warmup_frames is not None:
            self._warmup_frames.append(img)
            if len(self._warmup_frames) > self.warmup:
                self._finish_warmup()
        elif self._needs_anchor(fit):
            self._reanchor()
        elif self._since_select >= self.reselect_every:
            self._reselect()

    def transforms(self) -> list[np.ndarray]:
        """Stabilizing transforms of all frames so far, full-resolution pixel coordinates."""
        if self._warmup_frames is not None and len(self._warmup_frames) > 1:
            self._finish_warmup()
        full = [rescale(m, self.scale) for m in self._to_stab]
        if self.mode == "smooth":
            return smooth_trajectory(full, self.smooth_radius)
        return full

    # -- internals ----------------------------------------------------------------------------

    def _usable(self, shape: tuple[int, int], valid: np.ndarray | None = None) -> np.ndarray:
        usable = np.ones(shape, bool) if valid is None else valid
        if self._motion is not None:
            motion = cv2.resize(self._motion, shape[::-1], interpolation=cv2.INTER_LINEAR)
            usable &= motion < 3.0
            if usable.mean() < 0.15:  # too little deemed static: keep the calmest half
                usable = (valid if valid is not None else True) & (motion <= np.median(motion))
        return usable

    def _anchor(
        self, gray: np.ndarray, key_to_ref: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        self._key_gray = gray
        self._key_to_ref = key_to_ref
        self._template = _Template(
            gray, self._usable(gray.shape, valid), self.levels, self.model, self.points
        )
        self._key_valid = valid
        self._key_corr = []
        self._since_select = 0
        self._since_anchor = 0
        self.keyframes.append(len(self._to_stab))

    def _reselect(self) -> None:
        assert self._key_gray is not None
        self._template = _Template(
            self._key_gray,
            self._usable(self._key_gray.shape, self._key_valid),
            self.levels,
            self.model,
            self.points,
        )
        self._since_select = 0

    def _register(self, pyr: Sequence[np.ndarray]) -> _Fit:
        assert self._template is not None
        ref_to_key = invert(self._key_to_ref)
        # previous frame's estimate, as keyframe -> image
        prev = invert(compose(ref_to_key, self._to_stab[-1]))
        init = prev
        if self.mode == "smooth" and len(self._to_stab) >= 2:
            before = invert(compose(ref_to_key, self._to_stab[-2]))
            init = compose(compose(prev, invert(before)), prev)  # constant-velocity prediction
        return self._template.align(pyr, init)

    def _update_motion(self, coarse: np.ndarray, fit: _Fit) -> None:
        """Accumulate where the aligned frame differs from the keyframe (moving or changing)."""
        assert self._template is not None
        key = self._template.pyramid[-1]
        lvl = self.levels - 1
        warp_l = to_level(fit.warp, lvl)
        h, w = key.shape
        aligned = _warp_bilinear(coarse, warp_l, (w, h))
        resid = cv2.absdiff((aligned - np.float32(fit.offset)) / np.float32(fit.gain), key)
        resid = cv2.blur(resid, (5, 5))
        noise = float(np.median(resid)) + 1e-6
        score = (resid / noise).astype(np.float32, copy=False)  # float32 already: no copy
        if self._motion is None:
            self._motion = score
        else:
            cv2.accumulateWeighted(score, self._motion, 0.2)

    def _needs_anchor(self, fit: _Fit) -> bool:
        if self._since_anchor < 2 * self.average_frames or len(self._key_corr) < 3:
            return False
        baseline = float(np.median(self._key_corr))
        return fit.correlation < self.reanchor_correlation * baseline

    def _reanchor(self) -> None:
        """New keyframe: the recent frames averaged on one canvas (less noise, less error)."""
        newest = self._to_stab[-1]
        # tripod: keep the reference canvas; smooth: the newest frame's own canvas
        key_to_ref = np.eye(2, 3) if self.mode == "tripod" else newest
        ref_to_key = invert(key_to_ref)
        h, w = self._recent[-1][0].shape
        total = np.zeros((h, w), np.float32)
        count = np.zeros((h, w), np.float32)
        ones = np.ones((h, w), np.float32)
        for img, to_stab, gain, offset in self._recent:
            m = compose(ref_to_key, to_stab)
            normal = (img - np.float32(offset)) / np.float32(gain)
            total += _warp_bilinear(normal, invert(m), (w, h), zero_border=True)
            count += _warp_bilinear(ones, invert(m), (w, h), zero_border=True)
        valid = count > len(self._recent) - 0.01
        average = np.where(valid, total / np.maximum(count, 1e-6), 0).astype(np.float32)
        if self.mode == "smooth" and self._motion is not None:
            move = compose(ref_to_key, self._key_to_ref)  # old keyframe canvas -> new one
            move_l = to_level(move, self.levels - 1)
            mh, mw = self._motion.shape
            self._motion = _warp_bilinear(self._motion, invert(move_l), (mw, mh))
        self._anchor(average, key_to_ref, valid)
        self.keyframes[-1] = len(self._to_stab) - 1

    def _finish_warmup(self) -> None:
        """Re-select template pixels with the motion map and redo the early frames."""
        frames = self._warmup_frames
        self._warmup_frames = None
        if frames is None:
            return
        self._reselect()
        assert self._template is not None
        start = invert(self._key_to_ref)
        for i in range(1, len(frames)):
            init = invert(compose(start, self._to_stab[i]))
            fit = self._template.align(gaussian_pyramid(frames[i], self.levels), init)
            self._to_stab[i] = compose(self._key_to_ref, invert(fit.warp))
