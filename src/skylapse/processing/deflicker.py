"""Deflicker: remove frame-to-frame exposure error while keeping real brightness trends.

A timelapse flickers when each frame's exposure differs slightly from its neighbours' (shutter
and aperture tolerances, auto-exposure hunting, quantised exposure steps). The scene's own slow
changes - a sunset, a holy-grail exposure ramp - must survive. The stage works in three steps:

1. **Undo the known steps.** Where the frame carries the exposure it was taken with (EXIF
   exposure time, ISO/gain, aperture) its log-exposure ``known_ev`` (see :func:`exposure_ev`) is
   subtracted from the measurement, so a 1/3 EV shutter step is neither seen as flicker nor kept
   as a jump: the camera's staircase is turned into the continuous ramp it stands for
   (:func:`camera_ramp`), smoothed on its own (removing reported-exposure jitter) and put back.
2. **Measure** each frame's log2 exposure from the linear luminance of blocks that are unclipped,
   not too dark and static. Each block's log ratio to a running, exposure-normalised reference is
   combined by a weighted median followed by a trimmed mean; the weights are the inverse of each
   block's recent residual variance, so blocks crossed by moving clouds, by the skyline under
   camera shake or by passers-by lose their say. Blocks are tens of pixels wide, large against
   the shake, and the reference adapts (exponential average) to drift and slow lighting changes.
3. **Smooth** the log-exposure curve with a centred, zero-phase Whittaker-Henderson smoother
   penalising third differences (Whittaker 1923; Eilers, "A perfect smoother", Anal. Chem. 75,
   2003), with LOWESS-style bisquare robustness iterations (Cleveland, JASA 74, 1979). Its null
   space is the quadratics, so a steady or accelerating trend passes unchanged - also at the ends
   of the sequence, which it handles without padding - while independent frame-to-frame errors are
   averaged out. How hard it smooths is chosen per sequence by (modified) generalized
   cross-validation, so a long slow sunset is smoothed hard and a short fast one is followed.
   A causal/forward window (as ffmpeg's ``deflicker``) instead lags or leads a ramp.

The correction ``gain = 2 ** (smoothed - measured)`` is applied in linear light.

Streaming API (pass 1 keeps a few floats per frame plus one block grid of state)::

    analysis = DeflickerAnalysis()
    for reduced in pass1_frames:                  # e.g. cv2.IMREAD_REDUCED_GRAYSCALE_4
        analysis.add(reduced, known_ev=exposure_ev(t_s, iso, f_number))  # or known_ev=None
    gains = analysis.gains()                      # np.ndarray, one linear gain per frame
    for i, frame in enumerate(pass2_frames):      # full resolution, uint16 sRGB
        frame = apply_gain(frame, gains[i])

Pure functions: :func:`exposure_ev`, :func:`block_log_luminance`,
:func:`robust_log_offset`, :func:`smooth_log_exposure`, :func:`camera_ramp`,
:func:`gains_from_log_exposure`, :func:`apply_gain` (pass 2: ~6 ms per 1080p frame).
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from skylapse.imaging import luma, srgb
from skylapse.imaging.scratch import ScratchBuffer

#: Range of the automatically chosen smoothing cutoff (frames; see :func:`smooth_log_exposure`).
#: A cutoff of 8 frames still averages white flicker down to ~0.4 of its standard deviation,
#: 200 to ~0.1 (long, slow sequences); the old fixed 80 frames leaked ~0.14.
AUTO_CUTOFF_BOUNDS = (8.0, 200.0)
_GCV_GRID = 16  # cutoffs tried, geometrically spaced, before a parabolic refinement
_GCV_GAMMA = 2.0  # modified GCV (Kim & Gu use 1.4): errs toward stiff, flicker shows more
#: Block grid (columns, rows) of the luminance measurement: 60x60 px blocks at 1080p.
DEFAULT_GRID = (32, 18)
#: Linear luminance at or above which a sample counts as (nearly) clipped.
CLIP_LEVEL = 0.90
#: Linear block mean below which a block is too dark (noise, quantisation) to measure.
DARK_LEVEL = 0.004
_PRIOR_VARIANCE = 0.05**2  # a block's residual variance before it has a history (EV^2)
_WEIGHT_FLOOR_VARIANCE = 0.01**2  # keeps a handful of very quiet blocks from taking over


def exposure_ev(
    exposure_time_s: float, iso: float | None = None, f_number: float | None = None
) -> float:
    """Log2 of the light a frame's settings let into the image, relative to 1 s, ISO 100, f/1.

    One unit is one stop *more* image brightness (the opposite sign of the photographic EV
    number): ``log2(t) + log2(iso / 100) - 2 log2(N)``. ISO (or analogue gain x 100) and the
    f-number are optional; left out, they are taken as constant over the sequence.
    """
    if exposure_time_s <= 0:
        raise ValueError(f"exposure time must be positive, got {exposure_time_s}")
    ev = math.log2(exposure_time_s)
    if iso is not None:
        if iso <= 0:
            raise ValueError(f"ISO must be positive, got {iso}")
        ev += math.log2(iso / 100.0)
    if f_number is not None:
        if f_number <= 0:
            raise ValueError(f"f-number must be positive, got {f_number}")
        ev -= 2.0 * math.log2(f_number)
    return ev


def _clip_mask(image: np.ndarray) -> np.ndarray:
    """Float32 1 where any channel is nearly clipped (in linear light), else 0."""
    if image.dtype == np.uint8:
        level = 255.0 * float(srgb.encode(CLIP_LEVEL))
    elif image.dtype == np.uint16:
        level = 65535.0 * float(srgb.encode(CLIP_LEVEL))
    else:
        level = CLIP_LEVEL
    peak = image.max(axis=2) if image.ndim == 3 else image
    return (peak >= level).astype(np.float32)


def block_log_luminance(
    image: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Log2 mean linear luminance per block of a ``grid = (columns, rows)`` tiling, and validity.

    The mean is taken in linear light (``cv2.resize`` with ``INTER_AREA`` is an exact box mean),
    so an exposure gain ``g`` shifts every unclipped block by exactly ``log2 g``. A block is
    valid when none of its samples is near white (a clipped sample does not follow the gain)
    and its mean is above the noise/quantisation floor ``DARK_LEVEL``.

    ``image`` is an analysis image of any reduced size, as
    :func:`skylapse.imaging.luma.linear_luminance` takes it: ``uint8``/``uint16`` sRGB-encoded,
    grey ``(H, W)`` - e.g. from ``cv2.IMREAD_REDUCED_GRAYSCALE_4``, whose JPEG luma decoded as an
    sRGB grey is exact for grey and, on the curve's power segment, scales exactly with exposure -
    or RGB ``(H, W, 3)``; floating point is linear light already. Returns float32
    ``(rows, columns)`` and bool, same shape.
    """
    cols, rows = grid
    lum = luma.linear_luminance(image).astype(np.float32, copy=False)
    if lum.shape[0] < rows or lum.shape[1] < cols:
        raise ValueError(f"image {lum.shape} is smaller than the {cols}x{rows} grid")
    means = cv2.resize(lum, (cols, rows), interpolation=cv2.INTER_AREA)
    clipped = cv2.resize(_clip_mask(image), (cols, rows), interpolation=cv2.INTER_AREA)
    valid = (clipped == 0) & (means > DARK_LEVEL)
    logs = np.log2(np.maximum(means, 1e-12)).astype(np.float32)
    return logs, valid


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def robust_log_offset(
    log_ratios: np.ndarray, weights: np.ndarray, trim_sigmas: float = 2.5
) -> float:
    """Robust weighted location of per-block log ratios: the frame's log exposure offset.

    A weighted median, then the weighted mean of the samples within ``trim_sigmas`` robust
    standard deviations (1.4826 x weighted MAD, at least 0.005 EV) of it - a one-step trimmed
    mean, as efficient as a mean on the static blocks and not pulled by a minority of blocks
    that changed for other reasons (clouds, motion). NaN if there is nothing to measure.
    """
    log_ratios = np.asarray(log_ratios, dtype=np.float64).ravel()
    weights = np.asarray(weights, dtype=np.float64).ravel()
    keep = np.isfinite(log_ratios) & (weights > 0)
    if not keep.any():
        return math.nan
    x, w = log_ratios[keep], weights[keep]
    med = _weighted_median(x, w)
    scale = max(1.4826 * _weighted_median(np.abs(x - med), w), 0.005)
    inl = np.abs(x - med) <= trim_sigmas * scale
    return float(np.sum(w[inl] * x[inl]) / np.sum(w[inl]))


def _cutoff_to_lambda(cutoff_frames: float, order: int) -> float:
    # Whittaker's transfer function is 1 / (1 + lam * (2 sin(w/2))^(2 order)); solve for 1/2.
    if cutoff_frames <= 2:
        raise ValueError(f"cutoff must exceed 2 frames, got {cutoff_frames}")
    return 1.0 / (2.0 * math.sin(math.pi / cutoff_frames)) ** (2 * order)


@lru_cache(maxsize=8)
def _penalty_bands(n: int, order: int) -> np.ndarray:
    """``bands[k, i] = (D'D)[i + k, i]``, ``D`` the ``order``-th difference matrix (n-order x n)."""
    coeffs = [math.comb(order, k) * (-1) ** (order - k) for k in range(order + 1)]
    bands = np.zeros((order + 1, n))
    rows = np.arange(max(n - order, 0))
    for a in range(order + 1):
        for b in range(a + 1):  # D'D[r + a, r + b] += c_a c_b for every row r of D
            bands[a - b, rows + b] += coeffs[a] * coeffs[b]
    bands.setflags(write=False)
    return bands


def _block_tridiagonal(bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric band matrices ``bands[..., k, i] = A[i + k, i]`` (k <= p) as block-tridiagonal.

    Blocks are p x p (p = bandwidth), so the band fits in the diagonal and first off-diagonal
    blocks. ``n`` is padded to whole blocks with decoupled identity rows. Returns the diagonal
    blocks ``(..., m, p, p)`` and the sub-diagonal blocks ``A[block i + 1, block i]``.
    """
    *batch, kp1, n = bands.shape
    p = kp1 - 1
    m = -(-n // p)
    pad = np.zeros((*batch, kp1, m * p))
    pad[..., :n] = bands
    pad[..., 0, n:] = 1.0
    a, b = np.arange(p)[:, None], np.arange(p)[None, :]
    start = (np.arange(m) * p)[:, None, None]
    diag = pad[..., np.abs(a - b), start + np.minimum(a, b)]
    offset = p + a - b  # row (i + 1) p + a, column i p + b: band offset p + a - b, zero beyond p
    sub = np.where(offset <= p, pad[..., np.minimum(offset, p), start + b], 0.0)
    sub[..., -1, :, :] = 0.0
    return diag, sub


def _solve_block_tridiagonal(
    diag: np.ndarray, lower: np.ndarray, upper: np.ndarray, rhs: np.ndarray
) -> np.ndarray:
    """Solve ``lower_i x_{i-1} + diag_i x_i + upper_i x_{i+1} = rhs_i`` by block cyclic reduction.

    Each level eliminates the odd block rows from the even ones with batched p x p inverses
    (numerically stable for symmetric positive-definite systems: the reduced blocks are Schur
    complements), halving the system; ~log2(m) vectorised steps instead of an m-step loop
    (Hockney 1965; Golub & Van Loan, "Matrix Computations", 4.5.4). Leading batch dimensions
    solve several systems at once. Shapes ``(..., m, p, p)``, ``rhs (..., m, p, 1)``.
    """
    m, p = diag.shape[-3], diag.shape[-1]
    if m <= 3:  # assemble the last few blocks densely
        dense = np.zeros((*diag.shape[:-3], m * p, m * p))
        for i in range(m):
            dense[..., i * p : (i + 1) * p, i * p : (i + 1) * p] = diag[..., i, :, :]
            if i > 0:
                dense[..., i * p : (i + 1) * p, (i - 1) * p : i * p] = lower[..., i, :, :]
                dense[..., (i - 1) * p : i * p, i * p : (i + 1) * p] = upper[..., i - 1, :, :]
        flat = np.linalg.solve(dense, rhs.reshape(*rhs.shape[:-3], m * p, 1))
        return flat.reshape(rhs.shape)
    if m % 2 == 0:  # an odd count keeps both end rows: pad with a decoupled identity row

        def grow(x: np.ndarray, fill: np.ndarray | float) -> np.ndarray:
            extra = np.zeros_like(x[..., :1, :, :])
            extra[...] = fill
            return np.concatenate([x, extra], axis=-3)

        x = _solve_block_tridiagonal(
            grow(diag, np.eye(p)), grow(lower, 0.0), grow(upper, 0.0), grow(rhs, 0.0)
        )
        return x[..., :m, :, :]

    def around(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the odd rows left and right of each even row (zero past the ends)
        none = np.zeros_like(x[..., :1, :, :])
        return np.concatenate([none, x], axis=-3), np.concatenate([x, none], axis=-3)

    odd_inv = np.linalg.inv(diag[..., 1::2, :, :])
    inv_left, inv_right = around(odd_inv)
    lower_left, lower_right = around(lower[..., 1::2, :, :])
    upper_left, upper_right = around(upper[..., 1::2, :, :])
    rhs_left, rhs_right = around(rhs[..., 1::2, :, :])
    alpha = -lower[..., 0::2, :, :] @ inv_left
    gamma = -upper[..., 0::2, :, :] @ inv_right
    even = _solve_block_tridiagonal(
        diag[..., 0::2, :, :] + alpha @ upper_left + gamma @ lower_right,
        alpha @ lower_left,
        gamma @ upper_right,
        rhs[..., 0::2, :, :] + alpha @ rhs_left + gamma @ rhs_right,
    )
    odd = odd_inv @ (
        rhs[..., 1::2, :, :]
        - lower[..., 1::2, :, :] @ even[..., :-1, :, :]
        - upper[..., 1::2, :, :] @ even[..., 1:, :, :]
    )
    out = np.empty_like(rhs)
    out[..., 0::2, :, :] = even
    out[..., 1::2, :, :] = odd
    return out


def _whittaker(
    y: NDArray[np.float64], w: NDArray[np.float64], lams: ArrayLike, order: int
) -> NDArray[np.float64]:
    """Whittaker fits ``(W + lam D'D)^-1 W y``, one row per ``lam``: ``(len(lams), n)``."""
    n = y.size
    lams = np.atleast_1d(np.asarray(lams, dtype=np.float64))
    bands = lams[:, None, None] * _penalty_bands(n, order)
    bands[:, 0] += w
    diag, sub = _block_tridiagonal(bands)
    m, p = diag.shape[-3], order
    lower = np.zeros_like(diag)
    lower[:, 1:] = sub[:, :-1]
    rhs = np.zeros(m * p)
    rhs[:n] = w * y
    rhs = np.broadcast_to(rhs.reshape(m, p, 1), (lams.size, m, p, 1))
    x = _solve_block_tridiagonal(diag, lower, np.swapaxes(sub, -1, -2), rhs)
    return x.reshape(lams.size, m * p)[:, :n]


def _hat_trace(n: int, lams: NDArray[np.float64], order: int) -> NDArray[np.float64]:
    """Approximate ``tr (I + lam D'D)^-1`` (the fit's degrees of freedom), one per ``lam``.

    ``D'D`` has ``order`` zero eigenvalues (the polynomials it leaves alone); the others are
    those of the banded Toeplitz ``DD'``, close to its symbol ``(2 - 2 cos w)^order`` sampled at
    ``w = pi (k + (order - 1) / 2) / n`` - within 0.1 degree of freedom of the exact trace for
    cutoffs of 8 frames and more (checked against dense inverses for n = 10..200).
    """
    k = np.arange(1, max(n - order, 0) + 1)
    mu = (2.0 - 2.0 * np.cos(np.pi * (k + 0.5 * (order - 1)) / n)) ** order
    trace: NDArray[np.float64] = order + np.sum(1.0 / (1.0 + np.outer(lams, mu)), axis=1)
    return trace


def _gcv_fit(
    y: np.ndarray, w: np.ndarray, order: int, bounds: tuple[float, float]
) -> tuple[np.ndarray, float]:
    """The Whittaker fit whose cutoff (within ``bounds``) minimises the modified GCV score."""
    cutoffs = np.geomspace(bounds[0], bounds[1], _GCV_GRID)
    lams = np.array([_cutoff_to_lambda(c, order) for c in cutoffs])
    fits = _whittaker(y, w, lams, order)
    total = float(np.sum(w))
    rss = np.sum(w * (y - fits) ** 2, axis=1)
    # uneven weights are approximated by their mean for the trace
    dof = _hat_trace(y.size, lams * y.size / total, order)
    score = rss / np.maximum(1.0 - _GCV_GAMMA * dof / total, 1e-3) ** 2
    best = int(np.argmin(score))
    if 0 < best < cutoffs.size - 1:  # parabola through the neighbours, in log cutoff
        s0, s1, s2 = np.log(score[best - 1 : best + 2])
        curvature = s0 - 2.0 * s1 + s2
        if curvature > 0:
            step = 0.5 * (s0 - s2) / curvature
            ratio = cutoffs[1] / cutoffs[0]
            cutoff = float(cutoffs[best] * ratio ** np.clip(step, -0.5, 0.5))
            return _whittaker(y, w, [_cutoff_to_lambda(cutoff, order)], order)[0], cutoff
    return fits[best], float(cutoffs[best])


def _smooth(
    curve: np.ndarray,
    cutoff_frames: float | None,
    weights: np.ndarray | None,
    robust_iterations: int,
    order: int,
) -> tuple[np.ndarray, float]:
    y = np.asarray(curve, dtype=np.float64)
    n = y.size
    w0 = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    finite = np.isfinite(y)
    w0[~finite] = 0.0
    y = np.where(finite, y, 0.0)
    good = w0 > 0
    if good.sum() < order:  # too few points to pin a polynomial: constant (or nothing)
        level = float(np.sum(w0 * y) / np.sum(w0)) if good.any() else 0.0
        return np.full(n, level), math.inf

    def fit(w: np.ndarray) -> tuple[np.ndarray, float]:
        if cutoff_frames is not None:
            lam = _cutoff_to_lambda(cutoff_frames, order)
            return _whittaker(y, w, [lam], order)[0], float(cutoff_frames)
        return _gcv_fit(y, w, order, AUTO_CUTOFF_BOUNDS)

    z, cutoff = fit(w0)
    for i in range(robust_iterations):
        r = np.abs(y - z)
        scale = 6.0 * float(np.median(r[good]))
        if scale < 1e-9:
            break
        w = w0 * np.clip(1.0 - (r / scale) ** 2, 0.0, None) ** 2
        if np.count_nonzero(w) < order:
            break
        if i == 0:  # choose again without the wild frames' pull, then keep that cutoff
            z, cutoff = fit(w)
        else:
            z = _whittaker(y, w, [_cutoff_to_lambda(cutoff, order)], order)[0]
    return z, cutoff


def smooth_log_exposure(
    curve: np.ndarray,
    cutoff_frames: float | None = None,
    weights: np.ndarray | None = None,
    robust_iterations: int = 2,
    order: int = 3,
) -> np.ndarray:
    """Zero-phase smoothing of a log-exposure curve that keeps trends and removes jitter.

    Whittaker-Henderson smoothing (Whittaker 1923; Eilers 2003): the ``z`` minimising
    ``sum w (y - z)^2 + lam sum (D^order z)^2``, solved as one banded linear system. The
    ``order = 3`` penalty leaves any quadratic - a steady or accelerating sunset, an exposure
    ramp - untouched, including at the sequence's ends, where it needs no padding. The filter is
    symmetric (centred, zero phase), so it neither lags nor leads a ramp. ``lam`` is set so that
    a fluctuation with a period of ``cutoff_frames`` is halved.

    ``cutoff_frames=None`` (the default) chooses it per sequence from the data, within
    ``AUTO_CUTOFF_BOUNDS``: flicker is white from frame to frame while the trend is smooth, so
    the cutoff that best predicts left-out frames - generalized cross-validation (Craven & Wahba,
    Numer. Math. 31, 1979; for this smoother Eilers 2003, section 5), with a factor 2.0 on the
    degrees of freedom against GCV's occasional undersmoothing (Kim & Gu, JRSS B 66, 2004, use
    1.4; 2.0 errs further toward stiff) - is
    stiff on a slow sequence and follows a short, fast one (whose trend is far from quadratic
    over its length) closely enough not to leave a ramp of error at its ends.

    ``weights`` (0 for frames that could not be measured; NaNs in ``curve`` get weight 0 and are
    interpolated) are combined with ``robust_iterations`` rounds of bisquare weights on
    6 x median |residual| (Cleveland 1979), so a single wild frame does not pull its neighbours;
    an automatic cutoff is chosen again with the first round's weights, so wild frames do not
    make it follow them.
    """
    return _smooth(curve, cutoff_frames, weights, robust_iterations, order)[0]


def camera_ramp(known_ev: np.ndarray) -> np.ndarray:
    """The continuous ramp a camera's stepped exposures stand for: linear through step centres.

    A holy-grail sequence holds each exposure for a run of frames, then steps (e.g. 1/3 EV).
    The intended brightness is a ramp through the middle of each run, extended at the ends with
    the slope of the nearest pair of runs, so no step survives however far apart the steps
    are. Exposures that change every frame are returned unchanged (runs of one).
    """
    e = np.asarray(known_ev, dtype=np.float64)
    if e.size < 2:
        return e.copy()
    starts = np.flatnonzero(np.concatenate([[True], np.abs(np.diff(e)) > 1e-6]))
    if starts.size < 2:
        return e.copy()
    ends = np.append(starts[1:], e.size)
    centres = 0.5 * (starts + ends - 1)
    values = e[starts]
    idx = np.arange(e.size, dtype=np.float64)
    ramp = np.interp(idx, centres, values)
    head, tail = idx < centres[0], idx > centres[-1]
    ramp[head] = values[0] + (idx[head] - centres[0]) * (
        (values[1] - values[0]) / (centres[1] - centres[0])
    )
    ramp[tail] = values[-1] + (idx[tail] - centres[-1]) * (
        (values[-1] - values[-2]) / (centres[-1] - centres[-2])
    )
    return ramp


def gains_from_log_exposure(
    measured: np.ndarray,
    known_ev: np.ndarray | None = None,
    cutoff_frames: float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per-frame linear gains from measured log2 exposures (and the camera's known ones).

    ``measured`` is each frame's log2 image brightness (NaN where unmeasurable); ``known_ev``
    the camera's own log2 exposure (:func:`exposure_ev`; NaN or None where unknown - missing
    values are interpolated). The scene part ``measured - known_ev`` is smoothed (robustly) and
    the camera ramp ``known_ev`` is smoothed on its own, so exposure steps become a gentle ramp;
    the target brightness is their sum and ``gain = 2 ** (target - measured)``. The camera's
    part is first turned into the ramp its steps stand for (:func:`camera_ramp`) and then
    smoothed like the scene, which also removes any per-frame jitter in the reported exposures.
    Frames that could not be measured only get their camera step smoothed.
    """
    m = np.asarray(measured, dtype=np.float64)
    n = m.size
    e = np.zeros(n) if known_ev is None else np.asarray(known_ev, dtype=np.float64).copy()
    if e.shape != m.shape:
        raise ValueError("known_ev must have one value per frame")
    have = np.isfinite(e)
    if not have.any():
        e[:] = 0.0
    elif not have.all():
        idx = np.arange(n)
        e = np.interp(idx, idx[have], e[have])
    scene, cutoff = _smooth(m - e, cutoff_frames, weights, robust_iterations=2, order=3)
    # the camera's ramp is smoothed as much as the scene (choosing for it alone would keep
    # every kink of a noise-free ramp)
    ramp_cutoff = cutoff if math.isfinite(cutoff) else AUTO_CUTOFF_BOUNDS[1]
    ramp = smooth_log_exposure(camera_ramp(e), ramp_cutoff, robust_iterations=0)
    log_gain = np.where(np.isfinite(m), scene + ramp - m, ramp - e)
    return np.exp2(log_gain)


class DeflickerAnalysis:
    """Pass-1 accumulator: measures each frame's log2 exposure; :meth:`gains` after the pass.

    Memory: two floats per frame plus one ``grid``-sized reference, weight and count array.

    Parameters
    ----------
    grid : (columns, rows) of measurement blocks; keep blocks large against camera shake.
    cutoff_frames : smoothing period, see :func:`smooth_log_exposure`; None (the default)
        chooses it per sequence from the measurements.
    reference_frames : time constant (frames) of the exponentially averaged block reference;
        long enough to average noise, short enough to follow drift and changing light.
    variance_frames : time constant of each block's residual variance, which sets its weight.
    """

    def __init__(
        self,
        grid: tuple[int, int] = DEFAULT_GRID,
        cutoff_frames: float | None = None,
        reference_frames: float = 8.0,
        variance_frames: float = 16.0,
    ) -> None:
        self.grid = grid
        self.cutoff_frames = cutoff_frames
        self._alpha = 1.0 / max(reference_frames, 1.0)
        self._beta = 1.0 / max(variance_frames, 1.0)
        shape = (grid[1], grid[0])
        self._reference = np.zeros(shape, np.float64)  # log2 block luminance at exposure 0
        self._seen = np.zeros(shape, bool)
        self._variance = np.full(shape, _PRIOR_VARIANCE)
        self._measured: list[float] = []
        self._known: list[float] = []

    def add(self, image: np.ndarray, known_ev: float | None = None) -> float:
        """Measure the next frame; returns its log2 exposure (NaN if nothing could be measured).

        ``image``: the frame at any reduced size at least ``grid`` - ``uint8``/``uint16`` sRGB
        grey ``(H, W)`` (e.g. ``cv2.IMREAD_REDUCED_GRAYSCALE_4``) or RGB ``(H, W, 3)``, or float
        linear luminance ``(H, W)``. Keep the same size and framing for the whole sequence.
        ``known_ev``: the camera's log2 exposure for the frame (:func:`exposure_ev`) or None.
        """
        logs, valid = block_log_luminance(image, self.grid)
        logs = logs.astype(np.float64)
        usable = valid & self._seen
        weights = 1.0 / (self._variance + _WEIGHT_FLOOR_VARIANCE)
        if not self._seen.any():
            level = float(np.median(logs[valid])) if valid.any() else math.nan
        else:
            level = robust_log_offset((logs - self._reference)[usable], weights[usable])
        if math.isfinite(level):
            resid = logs - self._reference - level
            upd = usable
            self._reference[upd] += self._alpha * resid[upd]
            self._variance[upd] += self._beta * (
                np.minimum(resid[upd] ** 2, 1.0) - self._variance[upd]
            )
            new = valid & ~self._seen
            self._reference[new] = logs[new] - level
            self._seen |= new
        self._measured.append(level)
        self._known.append(math.nan if known_ev is None else float(known_ev))
        return level

    def __len__(self) -> int:
        return len(self._measured)

    @property
    def measured(self) -> np.ndarray:
        """Each frame's measured log2 image brightness so far (NaN where unmeasurable)."""
        return np.array(self._measured, dtype=np.float64)

    def gains(self) -> np.ndarray:
        """Per-frame linear gains (float64, one per added frame) for :func:`apply_gain`."""
        if not self._measured:
            return np.zeros(0)
        known = np.array(self._known, dtype=np.float64)
        return gains_from_log_exposure(self.measured, known, self.cutoff_frames)


@lru_cache(maxsize=64)
def _cached_gain_lut(gain: float) -> np.ndarray:
    lut = srgb.gain_lut(gain)
    lut.setflags(write=False)
    return lut


#: ``apply_gain``'s toe line, one per thread: a fresh 12 MB array per frame costs page faults.
_TOE = ScratchBuffer()


def apply_gain(frame: np.ndarray, gain: float, out: np.ndarray | None = None) -> np.ndarray:
    """Multiply a uint16 sRGB frame's linear light by ``gain``; highlights clip to white.

    On the sRGB curve's power segment, scaling linear light by ``g`` maps an encoded value
    ``v`` exactly to ``g^(1/2.4) (v + 0.055) - 0.055``, and on its linear toe to ``g v``; the
    true curve is the lower (``g > 1``) or upper (``g < 1``) of the two lines, to within 2/65535
    for gains within +-0.15 EV and 104/65535 within +-1 EV. Two saturating ``cv2.addWeighted``
    and a ``cv2.min``/``max`` cost ~6 ms of one core at 1080p, against ~19 ms for a 16-bit table
    lookup, which is used (exact, cached per 1/1000 EV) beyond +-1 EV. ``out`` (same shape and
    type; ``frame`` itself to work in place) receives the result if given, else a new array
    does: the result is never ``frame`` unless ``out`` is, even for a gain of 1 (to within
    1/10000 EV), which copies the frame unchanged.

    >>> frame = np.full((2, 2, 3), 30000, np.uint16)
    >>> same = apply_gain(frame, 1.0)
    >>> same is frame, bool(np.array_equal(same, frame))
    (False, True)
    >>> apply_gain(frame, 2.0, out=frame) is frame, int(frame.max())
    (True, 41252)
    """
    if frame.dtype != np.uint16:
        raise TypeError(f"expected a uint16 frame, got {frame.dtype}")
    if not gain > 0 or not math.isfinite(gain):
        raise ValueError(f"gain must be positive and finite, got {gain}")
    if out is None:
        out = np.empty_like(frame)
    elif out.shape != frame.shape or out.dtype != np.uint16:
        raise ValueError("out must be a uint16 array of the frame's shape")
    log_gain = math.log2(gain)
    if abs(log_gain) < 1e-4:
        if out is not frame:
            np.copyto(out, frame)
        return out
    if abs(log_gain) > 1.0:
        np.take(_cached_gain_lut(2.0 ** (round(log_gain * 1000) / 1000)), frame, out=out)
        return out
    flat = frame.reshape(frame.shape[0], -1)
    dst = out.reshape(flat.shape)
    toe = _TOE.get(flat.shape, flat.dtype)
    s = gain ** (1 / 2.4)
    # The toe first: with ``out=frame`` the power-segment line below overwrites the input.
    cv2.addWeighted(flat, gain, flat, 0.0, 0.0, dst=toe)
    cv2.addWeighted(flat, s, flat, 0.0, 0.055 * srgb.MAX16 * (s - 1.0), dst=dst)
    if gain > 1:
        cv2.min(dst, toe, dst=dst)
    else:
        cv2.max(dst, toe, dst=dst)
    return out
