"""Pass 1 of stabilization: the streaming motion tracker.

:class:`MotionTracker` registers every reduced gray frame to a keyframe (:mod:`.registration`)
and returns one stabilizing transform per frame. Moving sky, clouds and anything else that
changes are kept out of the keyframe's template by a *motion map*: a running average of the
normalised residual of every aligned frame against the keyframe on the coarsest level, from
which template pixels are re-selected every few frames. The first ``warmup`` frames are
re-estimated once the motion map has formed, so early frames are not pulled by clouds either.

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
from typing import Literal

import cv2
import numpy as np

from skylapse.imaging.affine import compose, invert, rescale
from skylapse.imaging.pyramid import gaussian_pyramid, to_level
from skylapse.processing.stabilize.registration import Fit, Model, Template, gray_float
from skylapse.processing.stabilize.sampling import warp_bilinear
from skylapse.processing.stabilize.trajectory import smooth_trajectory

#: ``"tripod"``: every frame onto the first one's canvas (jitter and drift removed);
#: ``"smooth"``: onto a smoothed camera path (pans and slider moves kept, shake removed).
Mode = Literal["tripod", "smooth"]


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
        self._template: Template | None = None
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
        img = gray_float(np.asarray(gray))
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
        self._template = Template(
            gray, self._usable(gray.shape, valid), self.levels, self.model, self.points
        )
        self._key_valid = valid
        self._key_corr = []
        self._since_select = 0
        self._since_anchor = 0
        self.keyframes.append(len(self._to_stab))

    def _reselect(self) -> None:
        assert self._key_gray is not None
        self._template = Template(
            self._key_gray,
            self._usable(self._key_gray.shape, self._key_valid),
            self.levels,
            self.model,
            self.points,
        )
        self._since_select = 0

    def _register(self, pyr: Sequence[np.ndarray]) -> Fit:
        assert self._template is not None
        ref_to_key = invert(self._key_to_ref)
        # previous frame's estimate, as keyframe -> image
        prev = invert(compose(ref_to_key, self._to_stab[-1]))
        init = prev
        if self.mode == "smooth" and len(self._to_stab) >= 2:
            before = invert(compose(ref_to_key, self._to_stab[-2]))
            init = compose(compose(prev, invert(before)), prev)  # constant-velocity prediction
        return self._template.align(pyr, init)

    def _update_motion(self, coarse: np.ndarray, fit: Fit) -> None:
        """Accumulate where the aligned frame differs from the keyframe (moving or changing)."""
        assert self._template is not None
        key = self._template.pyramid[-1]
        lvl = self.levels - 1
        warp_l = to_level(fit.warp, lvl)
        h, w = key.shape
        aligned = warp_bilinear(coarse, warp_l, (w, h))
        resid = cv2.absdiff((aligned - np.float32(fit.offset)) / np.float32(fit.gain), key)
        resid = cv2.blur(resid, (5, 5))
        noise = float(np.median(resid)) + 1e-6
        score = (resid / noise).astype(np.float32, copy=False)  # float32 already: no copy
        if self._motion is None:
            self._motion = score
        else:
            cv2.accumulateWeighted(score, self._motion, 0.2)

    def _needs_anchor(self, fit: Fit) -> bool:
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
            total += warp_bilinear(normal, invert(m), (w, h), zero_border=True)
            count += warp_bilinear(ones, invert(m), (w, h), zero_border=True)
        valid = count > len(self._recent) - 0.01
        average = np.where(valid, total / np.maximum(count, 1e-6), 0).astype(np.float32)
        if self.mode == "smooth" and self._motion is not None:
            move = compose(ref_to_key, self._key_to_ref)  # old keyframe canvas -> new one
            move_l = to_level(move, self.levels - 1)
            mh, mw = self._motion.shape
            self._motion = warp_bilinear(self._motion, invert(move_l), (mw, mh))
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
