"""How good a rendered timelapse is: residual flicker, jitter and drift of decoded frames.

The render bench, the demo's summary and the tests all measure with these.

All functions are pure: they take frames (``uint8`` or ``uint16`` sRGB-encoded RGB arrays, as
PyAV decodes them as ``rgb24`` / ``rgb48le``) and return numbers.

- :func:`central_log2_luminance` - log2 of the mean linear luminance of the central 50 % of a
  frame, the one definition of :mod:`skylapse.imaging.luma` (``truth.json`` of
  :mod:`skylapse.testing` is stated in it too). The central region is used because stabilizers
  crop and rescale; a few pixels of shift change it negligibly.
- :func:`residual_flicker` - the standard deviation over frames of (output brightness - true
  brightness), in EV. A constant offset (an output that is uniformly brighter) does not count;
  both flicker and any wobble of the slow trend do.
- :func:`register_translation` - sub-pixel translation between two images: windowed phase
  correlation (Kuglin & Hines 1975) for the coarse shift, refined by Gauss-Newton iterations
  of the brightness-constancy equation on contrast-normalised images (Lucas & Kanade 1981), so
  it stays accurate to a few hundredths of a pixel under the changing light of a sunset.
- :func:`residual_jitter_and_drift` - registers every frame to the first on the static lower
  part of the frame (terrain, not sky and clouds) and reports the RMS frame-to-frame shift
  (jitter) and the largest shift from the first frame (drift). Works on any video, but on a
  sunset it also counts the apparent shift of terrain texture as the shading changes with the
  sun (about 1.7 px at 1080p on the synthetic sunset, with a perfect stabilizer).
- :func:`stabilization_error_against_truth` - the geometric error only, for outputs whose
  inputs and true camera motion are known (:mod:`skylapse.testing`): every output frame is
  compared with its own input frame warped as a perfect stabilizer would have warped it, so both
  sides share the lighting, the noise and the clouds, and only geometry differs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from skylapse.imaging.affine import homogeneous, rescale

# Re-exported: the brightness measure is the imaging package's; the bench, the demo and the
# tests read it here beside the metrics built on it.
from skylapse.imaging.luma import central_log2_luminance as central_log2_luminance
from skylapse.testing.truth import FrameTruth, SequenceTruth


@dataclass(frozen=True)
class FlickerResult:
    """Residual flicker: ``std`` (EV) of ``difference`` = output minus truth, per frame."""

    std: float
    difference: np.ndarray


def residual_flicker(
    frames: Iterable[np.ndarray], truth: SequenceTruth | ArrayLike
) -> FlickerResult:
    """Standard deviation over frames of (output central log2 luminance - the true one), EV.

    ``truth`` is an array of true log2 luminances (one per frame) or a
    ``skylapse.testing.SequenceTruth`` (its ``log2_luminance`` column: the same generator
    without flicker, exposure steps or shake).
    """
    expected = (
        truth.column("log2_luminance")
        if isinstance(truth, SequenceTruth)
        else np.asarray(truth, dtype=np.float64)
    )
    measured = np.array([central_log2_luminance(f) for f in frames], dtype=np.float64)
    if measured.size != expected.size:
        raise ValueError(f"{measured.size} output frames for {expected.size} truth frames")
    diff = measured - expected
    return FlickerResult(std=float(diff.std()), difference=diff)


def _normalised(image: np.ndarray) -> np.ndarray:
    img = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)  # tame noise and aliasing
    normalised: np.ndarray = (img - img.mean()) / max(float(img.std()), 1e-6)
    return normalised


def _cubic_taps(t: float) -> np.ndarray:
    """Weights of the samples at offsets -1, 0, 1, 2 for a position ``t`` in [0, 1) past the
    second: Keys' cubic convolution with a = -0.75, the kernel of OpenCV's INTER_CUBIC."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.array([w0, w1, w2, 1.0 - w0 - w1 - w2], dtype=np.float32)


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` (float32) sampled at ``(x + dx, y + dy)``: bicubic, ``BORDER_REFLECT`` outside.

    The same as ``cv2.warpAffine(image, [[1, 0, dx], [0, 1, dy]], ..., INTER_CUBIC |
    WARP_INVERSE_MAP)`` on OpenCV 5, which interpolates at the exact position, but also on 4.x,
    which rounds positions to 1/32 px (imgproc/src/imgwarp.cpp, ``INTER_TAB_SIZE``): that
    rounding would cap this measure's accuracy at 1/64 px and make it differ between versions.
    A translation has the same fraction everywhere, so it is a separable 4-tap filter.
    """
    h, w = image.shape
    ix, iy = math.floor(dx), math.floor(dy)
    pad = max(abs(ix), abs(iy)) + 3
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    # sepFilter2D correlates: out(x) = sum_k taps[k] * in(x + k - anchor), anchor 1
    out = cv2.sepFilter2D(
        padded, cv2.CV_32F, _cubic_taps(dx - ix), _cubic_taps(dy - iy), anchor=(1, 1)
    )
    return out[pad + iy : pad + iy + h, pad + ix : pad + ix + w]


def register_translation(
    reference: np.ndarray, image: np.ndarray, *, iterations: int = 8, border: int = 12
) -> tuple[float, float]:
    """The shift ``(dx, dy)`` of ``image``'s content relative to ``reference``, sub-pixel.

    Positive ``dx`` means the content moved right. Both are single-channel images of the same
    size. Coarse: phase correlation with a Hann window. Fine: Gauss-Newton on the normalised
    images, warping ``image`` back by the current estimate (bicubic), matching its gain and
    offset to the reference on the interior (``border`` pixels off), and solving the 2x2 normal
    equations of the linearised brightness constancy there.
    """
    ref = _normalised(reference)
    img = _normalised(image)
    h, w = ref.shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    # The window is applied here, to copies. OpenCV 4.x's cv::phaseCorrelate (imgproc/src/
    # phasecorr.cpp) aliases its inputs when their size is already DFT-optimal (``padded1 = src1``)
    # and then windows them in place (``multiply(paddedWin, padded1, padded1)``), so on 4.x the
    # refinement below ran on Hann-windowed images, which biases it towards zero shift; 5.x
    # writes the product to new buffers. Without a window argument both leave the inputs alone.
    (dx, dy), _ = cv2.phaseCorrelate(ref * window, img * window)
    gx = cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    inner = (slice(border, h - border), slice(border, w - border))
    gx, gy = gx[inner], gy[inner]
    ref_inner = ref[inner]
    ref_mean, ref_std = float(ref_inner.mean()), float(ref_inner.std())
    a = np.array(
        [
            [float((gx * gx).sum()), float((gx * gy).sum())],
            [float((gx * gy).sum()), float((gy * gy).sum())],
        ]
    )
    if abs(np.linalg.det(a)) < 1e-9:
        return float(dx), float(dy)
    for _ in range(iterations):
        back = _shifted(img, dx, dy)[inner]
        # Match the gain and offset of the overlap (ECC-like): content entering at the edges
        # changes the whole-image normalisation, which would otherwise bias large shifts.
        back = (back - float(back.mean())) * (ref_std / max(float(back.std()), 1e-6)) + ref_mean
        err = back - ref_inner
        b = np.array([float((gx * err).sum()), float((gy * err).sum())])
        step = np.linalg.solve(a, b)
        # back(x) = img(x + d) ~ ref(x + d - d_true): err ~ g . (d - d_true) => d -= step.
        dx, dy = dx - step[0], dy - step[1]
        if math.hypot(*step) < 1e-4:
            break
    return float(dx), float(dy)


@dataclass(frozen=True)
class MotionResult:
    """Registration of every frame to the first.

    ``shifts`` is ``(N, 2)``: each frame's content shift from the first, pixels of the frame as
    given. ``jitter_rms``: RMS length of the frame-to-frame shift. ``drift_max``: the largest
    shift from the first frame.
    """

    shifts: np.ndarray
    jitter_rms: float
    drift_max: float


def _static_part(frame: np.ndarray, lower_fraction: float, scale: float) -> np.ndarray:
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h = gray.shape[0]
    part = gray[h - round(h * lower_fraction) :]
    if scale != 1.0:
        part = cv2.resize(
            part.astype(np.float32), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
        )
    return part.astype(np.float32)


def residual_jitter_and_drift(
    frames: Iterable[np.ndarray], *, lower_fraction: float = 0.45, max_width: int = 960
) -> MotionResult:
    """Jitter (RMS frame-to-frame shift) and drift (largest shift from frame 0) in pixels.

    Every frame is registered to the first on its lower ``lower_fraction`` (the static terrain;
    the sky holds drifting clouds), downscaled to at most ``max_width`` pixels wide for speed
    (shifts are reported in full-resolution pixels).
    """
    shifts = []
    reference = None
    scale = 1.0
    for frame in frames:
        if reference is None:
            scale = min(1.0, max_width / frame.shape[1])
            reference = _static_part(frame, lower_fraction, scale)
            shifts.append((0.0, 0.0))
            continue
        dx, dy = register_translation(reference, _static_part(frame, lower_fraction, scale))
        shifts.append((dx / scale, dy / scale))
    if not shifts:
        raise ValueError("no frames")
    arr = np.array(shifts, dtype=np.float64)
    steps = np.diff(arr, axis=0)
    jitter = float(np.sqrt((steps**2).sum(axis=1).mean())) if len(steps) else 0.0
    drift = float(np.hypot(arr[:, 0], arr[:, 1]).max())
    return MotionResult(shifts=arr, jitter_rms=jitter, drift_max=drift)


# --------------------------------------------------------------------------------------------
# Geometric error against the true camera motion
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthErrorResult(MotionResult):
    """Geometric error of a stabilized video against the true camera motion.

    ``shifts`` is ``(N, 2)``: per frame, the content shift of the output frame relative to what
    a perfect stabilizer would have produced (output pixels; frame 0 is close to 0 because the
    output geometry is fitted on it). ``jitter_rms``: RMS length of the frame-to-frame change of
    that error. ``drift_max``: the largest ``|error_i - error_0|``. ``output_to_input``: the
    fitted 2x3 affine map from output pixels to input-frame-0 pixels (crop and scale).
    """

    output_to_input: np.ndarray


def camera_matrix(dx: float, dy: float, rotation_deg: float, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 map from steady-scene pixels to the pixels of a shaken frame of ``size`` (W, H).

    The :class:`skylapse.testing.FrameTruth` convention: ``p -> R(rotation) (p - c) + c +
    (dx, dy)``, ``c`` the frame centre in pixel-centre coordinates, positive rotation clockwise
    on screen (image rows point down).
    """
    w, h = size
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    a = math.radians(rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([rot, (c - rot @ c + np.array([dx, dy]))[:, None]])


def _gray32(frame: np.ndarray) -> np.ndarray:
    """Gray float32 in [0, 1] of an 8- or 16-bit RGB (or gray) frame."""
    peak = 255.0 if frame.dtype == np.uint8 else 65535.0
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return gray.astype(np.float32) * np.float32(1.0 / peak)


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return image
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def _feature_guess(output: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """A similarity from output to reference pixels by ORB matches and RANSAC, or None."""
    orb = cv2.ORB.create(nfeatures=3000)
    to8 = [np.clip(img * 255.0, 0, 255).astype(np.uint8) for img in (output, reference)]
    (ko, do), (kr, dr) = (orb.detectAndCompute(img, None) for img in to8)
    if do is None or dr is None or len(ko) < 10 or len(kr) < 10:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(do, dr)
    if len(matches) < 10:
        return None
    src = np.array([ko[m.queryIdx].pt for m in matches], dtype=np.float32)
    dst = np.array([kr[m.trainIdx].pt for m in matches], dtype=np.float32)
    m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
    if m is None or int(inliers.sum()) < 10:
        return None
    return m.astype(np.float64)


def fit_output_geometry(
    output: np.ndarray, reference: np.ndarray, *, levels: int = 4
) -> np.ndarray:
    """The affine map (2x3) from ``output`` pixel coordinates to ``reference`` pixel coordinates.

    For an output frame and the input frame it was made from (same lighting): crop, scale and
    any residual rotation of the output. Initialised by ORB feature matches with a RANSAC
    similarity fit (Rublee et al. 2011; Fischler & Bolles 1981), falling back to a centred
    scale of the two sizes; refined coarse-to-fine by the enhanced correlation coefficient
    (ECC, Evangelidis & Psarakis 2008, ``cv2.findTransformECC``, affine), which is invariant to
    gain and offset (the output may be deflickered and graded). Both are gray float32 images.
    """
    (oh, ow), (rh, rw) = output.shape[:2], reference.shape[:2]
    guess = _feature_guess(output, reference)
    if guess is None:
        sx, sy = rw / ow, rh / oh
        guess = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    m = guess
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-6)
    for level in range(levels - 1, -1, -1):
        f = 0.5**level
        if min(oh, ow) * f < 32:
            continue
        small = rescale(m, f).astype(np.float32)
        try:
            # OpenCV's stubs want a mask array when gaussFiltSize is given; None means no mask
            _, small = cv2.findTransformECC(  # type: ignore[call-overload]
                _resized(output, f),
                _resized(reference, f),
                small,
                cv2.MOTION_AFFINE,
                criteria,
                None,
                3,
            )
        except cv2.error:  # did not converge on this level; keep the estimate so far
            continue
        m = rescale(small.astype(np.float64), 1.0 / f)
    return m


def _truth_motion(
    truth: SequenceTruth | Sequence[FrameTruth] | np.ndarray,
) -> NDArray[np.float64]:
    """``(N, 3)`` of dx, dy, rotation_deg from a SequenceTruth, FrameTruths or an array."""
    frames = truth.frames if isinstance(truth, SequenceTruth) else truth
    if isinstance(frames, np.ndarray):
        return np.asarray(frames, dtype=np.float64).reshape(-1, 3)
    return np.array([(f.dx, f.dy, f.rotation_deg) for f in frames], dtype=np.float64)


def _common_valid_box(
    maps: Sequence[np.ndarray],
    out_size: tuple[int, int],
    in_size: tuple[int, int],
    margin: int,
) -> tuple[int, int, int, int]:
    """The largest centred box (x0, y0, x1, y1) of output pixels that every map sends inside
    the input frame, shrunk by ``margin`` more (stabilizers' and codecs' edge effects)."""
    ow, oh = out_size
    iw, ih = in_size
    for inset in range(min(ow, oh) // 3):
        ix, iy = inset, round(inset * oh / ow)
        x0, y0, x1, y1 = ix, iy, ow - 1 - ix, oh - 1 - iy
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
        mapped = np.concatenate([corners @ m.T for m in maps])
        inside = ((mapped >= 0) & (mapped <= np.array([iw - 1, ih - 1]))).all()
        if inside:
            mx, my = margin, round(margin * oh / ow)
            return x0 + mx, y0 + my, x1 + 1 - mx, y1 + 1 - my
    raise ValueError("the output frames share no area inside the inputs")


def stabilization_error_against_truth(
    outputs: Iterable[np.ndarray],
    inputs: Iterable[np.ndarray],
    truth: SequenceTruth | Sequence[FrameTruth] | np.ndarray,
    *,
    lower_fraction: float = 1.0,
    max_width: int = 960,
    margin_fraction: float = 0.01,
) -> TruthErrorResult:
    """Jitter and drift of a stabilized video's geometry against the true camera motion, px.

    ``outputs`` are the decoded output frames; ``inputs`` the source frames they were made from,
    in the same order (8- or 16-bit RGB); ``truth`` a :class:`skylapse.testing.SequenceTruth`,
    its ``frames``, or an ``(N, 3)`` array of ``dx, dy, rotation_deg`` (see
    :func:`camera_matrix`, steady scene to shaken frame ``S_i``).

    1. The output geometry of frame 0, the affine map ``M0`` from output to input-frame-0 pixels
       (:func:`fit_output_geometry`): the same picture under the same light, so it is accurate.
    2. For frame ``i``, the *expected* output is input ``i`` resampled by
       ``S_i ∘ S_0^-1 ∘ M0``: what a perfect stabilizer, holding frame 0's view, would show.
    3. The error is :func:`register_translation` of the output against the expected frame
       (both downscaled to at most ``max_width``, on the lower ``lower_fraction`` of the box of
       output pixels that is valid in every frame, less ``margin_fraction`` at the edges).

    Expected and output share the lighting, sensor noise and clouds of frame ``i``, so unlike
    :func:`residual_jitter_and_drift` a sunset's moving shading does not read as motion. An
    error of ``M0`` shifts every expected frame alike and cancels in jitter and drift. The whole
    frame is the default (``lower_fraction=1``): the far ridges add texture, the clouds are the
    same on both sides, and the error is measured at the frame centre, so a rotation error does
    not read as a shift. A temporal denoiser that mixes in neighbouring frames' light still adds
    a little (their shading differs), the more so the sparser the sampling of the sunset.
    """
    motion = _truth_motion(truth)
    out_iter, in_iter = iter(outputs), iter(inputs)
    first_out, first_in = _gray32(next(out_iter)), _gray32(next(in_iter))
    (oh, ow), (ih, iw) = first_out.shape, first_in.shape
    m0 = fit_output_geometry(first_out, first_in)
    dx0, dy0, rot0 = motion[0]
    steady_to_0_inv = np.linalg.inv(homogeneous(camera_matrix(dx0, dy0, rot0, (iw, ih))))
    maps = [
        (homogeneous(camera_matrix(dx, dy, rot, (iw, ih))) @ steady_to_0_inv @ homogeneous(m0))[:2]
        for dx, dy, rot in motion
    ]
    x0, y0, x1, y1 = _common_valid_box(maps, (ow, oh), (iw, ih), round(margin_fraction * ow))
    y0 = max(y0, y1 - round((y1 - y0) * lower_fraction))
    scale = min(1.0, max_width / (x1 - x0))

    def region(full: np.ndarray) -> np.ndarray:
        return _resized(full[y0:y1, x0:x1], scale)

    def error(out_gray: np.ndarray, in_gray: np.ndarray, k: int) -> tuple[float, float]:
        if k >= len(maps):
            raise ValueError(f"more frames than the {len(maps)} of the truth")
        expected = cv2.warpAffine(
            in_gray,
            maps[k],
            (ow, oh),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        dx, dy = register_translation(region(expected), region(out_gray))
        return dx / scale, dy / scale

    errors = [error(first_out, first_in, 0)]
    for k, (out_frame, in_frame) in enumerate(zip(out_iter, in_iter, strict=True), start=1):
        errors.append(error(_gray32(out_frame), _gray32(in_frame), k))
    if len(errors) != len(maps):
        raise ValueError(f"{len(errors)} output frames for {len(maps)} truth frames")
    arr = np.array(errors, dtype=np.float64)
    steps = np.diff(arr, axis=0)
    jitter = float(np.sqrt((steps**2).sum(axis=1).mean())) if len(steps) else 0.0
    drift = float(np.hypot(*(arr - arr[0]).T).max())
    return TruthErrorResult(shifts=arr, jitter_rms=jitter, drift_max=drift, output_to_input=m0)
