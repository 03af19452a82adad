"""HDR exposure fusion of bracket sets: grouping, sub-pixel alignment and Mertens fusion.

API (pure functions on pipeline frames, uint16 HxWx3 sRGB; see ``srgb.py``):

- ``group_brackets(exposure_evs, n=None) -> list[list[int]]``: split a frame sequence into
  bracket sets, by a fixed size (``--brackets N``) or from the EXIF exposure values.
- ``estimate_bracket_warps(frames) -> list[2x3]`` / ``align_brackets(frames) -> frames``:
  register every bracket onto the middle exposure with sub-pixel accuracy.
- ``fuse_exposures(frames, contrast_weight=1, saturation_weight=1, exposure_weight=1, ...)``:
  Mertens-Kautz-Van Reeth exposure fusion with Laplacian-pyramid blending.
- ``laplacian_blend(frames, weights, weight_level)``: the multiresolution blend itself,
  also used by focus stacking.

In the render's pass 2 the per-set work is ``fuse_exposures(align_brackets(set_frames))``; the
sets come from ``group_brackets`` on the EVs read in pass 1. Memory: the blend streams the
frames (one Laplacian pyramid alive at a time plus the accumulator), about 2.7x one float32
frame on top of the inputs.

Exposure fusion is a display-referred operator: Mertens et al. weight and blend the
gamma-encoded pixel values, and so does enfuse for untagged images. Blending linear light
instead would re-expand the range the fusion is meant to compress, so unlike the gain stages
this one deliberately works on the sRGB-encoded values.

References
----------
T. Mertens, J. Kautz, F. Van Reeth, "Exposure Fusion", Pacific Graphics 2007.
P. J. Burt, E. H. Adelson, "The Laplacian pyramid as a compact image code", IEEE Trans.
Commun. 31(4), 1983; "A multiresolution spline with application to image mosaics", ACM TOG 1983.
G. Ward, "Fast, robust image registration for compositing high dynamic range photographs
from hand-held exposures", J. Graphics Tools 8(2), 2003 (why compare exposures only where both
are well exposed).
G. D. Evangelidis, E. Z. Psarakis, "Parametric image alignment using enhanced correlation
coefficient maximization", IEEE TPAMI 30(10), 2008.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import cv2
import numpy as np
from numpy.typing import NDArray

from skylapse.imaging.srgb import MAX16
from skylapse.processing.ecc_align import apply_warp, ecc_warp, working_level

#: The largest shift between the frames of one bracket set that is believed, as a fraction of
#: the frame's larger side: a set is shot within a second from a fixed station, so a larger
#: estimate is ECC lost on too little detail (an underexposed frame that is black but for a
#: smooth sky), and the frame is left where it was taken.
MAX_BRACKET_SHIFT = 0.02

# ---------------------------------------------------------------------------------------------
# Grouping


def _distinct(evs: Sequence[float] | NDArray[np.float64], tol: float) -> bool:
    s = sorted(evs)
    return all(b - a > tol for a, b in pairwise(s))


def _preferred_phase(pattern: np.ndarray) -> int:
    """The rotation of a repeating bracket pattern at which a set starts.

    A cyclic pattern has several readings (0/-2/+2 repeats like +2/0/-2), so rank the common
    camera orders: ascending (-/0/+, Skylapse's own capture order), then middle exposure first
    (0/-/+, most cameras' AEB default), else as found.
    """
    p = len(pattern)
    rotations = [np.roll(pattern, -r) for r in range(p)]
    for r, rot in enumerate(rotations):
        if np.all(np.diff(rot) > 0):
            return r
    median = np.sort(pattern)[(p - 1) // 2]
    for r, rot in enumerate(rotations):
        if abs(rot[0] - median) < 1e-9:
            return r
    return 0


def group_brackets(
    exposure_evs: Sequence[float], n: int | None = None, *, tolerance: float = 0.3
) -> list[list[int]]:
    """Split a frame sequence into bracket sets (lists of frame indices, in order).

    Parameters
    ----------
    exposure_evs : exposure value of every frame (e.g. log2 of exposure time x gain from EXIF);
        only the differences within a set matter, so slow auto-exposure drift over the
        sequence is fine.
    n : fixed set size (``--brackets N``); the frames are cut into consecutive runs of ``n``.
        ``None`` detects the bracket pattern from ``exposure_evs``.
    tolerance : EVs closer than this (in stops) count as equal.

    Automatic detection looks for the smallest period ``p >= 2`` at which the EV offsets within
    consecutive runs of ``p`` frames repeat (a set = a run of frames whose EVs all differ, with
    the same pattern as its neighbours, e.g. 0/-2/+2 or -2/0/+2), tolerating a few broken sets.
    Frames before the first complete set and after the last one form shorter sets of their
    own, so no frame is dropped. Without a repeating pattern every frame is its own set.
    """
    count = len(exposure_evs)
    if n is not None:
        if n < 1:
            raise ValueError("bracket size must be at least 1")
        return [list(range(i, min(i + n, count))) for i in range(0, count, n)]
    evs = np.asarray(exposure_evs, dtype=np.float64)
    if not np.all(np.isfinite(evs)):
        raise ValueError("automatic bracket grouping needs a finite EV for every frame")

    for period in range(2, min(count // 2, 9) + 1):
        best = None
        for phase in range(period):
            starts = range(phase, count - period + 1, period)
            sets = [evs[s : s + period] for s in starts]
            if len(sets) < 2:
                continue
            offsets = np.array([s - s.mean() for s in sets])
            pattern = np.median(offsets, axis=0)
            good = [
                bool(np.all(np.abs(o - pattern) <= tolerance)) and _distinct(s, tolerance)
                for o, s in zip(offsets, sets, strict=True)
            ]
            score = float(np.mean(good))
            if best is None or score > best[0]:
                best = (score, phase, pattern)
        if best is None or best[0] < 0.8 or not _distinct(best[2], tolerance):
            continue
        _, phase, pattern = best
        # phase puts sets where the pattern repeats; shift it to where a set starts
        phase = (phase + _preferred_phase(pattern)) % period
        groups = [list(range(0, phase))] if phase else []
        groups += [list(range(s, min(s + period, count))) for s in range(phase, count, period)]
        return groups
    return [[i] for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Alignment


def _gray_small(frame: np.ndarray, level: int) -> np.ndarray:
    """Channel-mean grey in [0, 1] at pyramid ``level`` (area-averaged), float32."""
    h, w = frame.shape[:2]
    for _ in range(level):
        h, w = (h + 1) // 2, (w + 1) // 2
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) if level else frame
    grey = cv2.transform(small.astype(np.float32), np.full((1, 3), 1.0 / (3 * MAX16), np.float32))
    return grey


def _valid_mask(grey: np.ndarray, low: float, high: float) -> np.ndarray:
    mask = ((grey > low) & (grey < high)).astype(np.uint8) * 255
    # stay clear of clipped areas: their borders move with the misalignment
    return cv2.erode(mask, np.ones((5, 5), np.uint8))


def _match_tones(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Map ``image``'s grey levels onto ``reference``'s by matching quantiles over ``mask``.

    Brackets relate by a monotone tone curve (a gain in linear light seen through the sRGB
    curve, the sensor toe and the clip), not by the affine map ECC is invariant to; matching
    their histograms (the equalisation behind Ward's median threshold bitmaps) removes the
    difference, and quantiles barely depend on a few pixels of misalignment.
    """
    sel = mask > 0
    if np.count_nonzero(sel) < 64:
        return image
    q = np.linspace(0.0, 1.0, 65)
    src = np.quantile(image[sel], q)
    dst = np.quantile(reference[sel], q)
    src = np.maximum.accumulate(src + np.arange(65) * 1e-9)  # strictly increasing for interp
    matched: NDArray[np.float32] = np.interp(image, src, dst).astype(np.float32)
    return matched


def middle_exposure_index(frames: Sequence[np.ndarray]) -> int:
    """Index of the bracket with the median mean brightness (the reference for alignment)."""
    means = [float(cv2.mean(cv2.resize(f, None, fx=0.125, fy=0.125))[:3][1]) for f in frames]
    order = np.argsort(means)
    return int(order[(len(frames) - 1) // 2])


def estimate_bracket_warps(
    frames: Sequence[np.ndarray],
    reference_index: int | None = None,
    *,
    motion: str = "translation",
    level: int | None = None,
    valid_range: tuple[float, float] = (0.04, 0.96),
) -> list[np.ndarray]:
    """Sub-pixel warps that register every bracket onto the reference exposure.

    Brackets several EV apart are compared where both are well exposed (Ward 2003): pixels
    that are near black or near white in either frame are masked out. On the remaining pixels
    an exposure change is close to a gain on the sRGB-encoded values, to which ECC is
    invariant, so ECC on the grey images gives the warp directly (after matching their
    histograms, which absorbs the non-linear part). The estimate runs on a coarse-to-fine
    pyramid down to ``level`` (``None``: the coarsest level at least 256 px high, level 2 for
    1080p, where it is accurate to ~0.05 px in ~50 ms).

    A shift beyond :data:`MAX_BRACKET_SHIFT` of the frame is not believed (identity instead).

    Returns one 2x3 warp per frame (identity for the reference), in the convention of
    ``ecc_align.ecc_warp``: a frame that is the reference shifted by (dx, dy) gets a
    translation column of (dx, dy).
    """
    if reference_index is None:
        reference_index = middle_exposure_index(frames)
    if level is None:
        level = working_level(frames[0].shape)
    grey = [_gray_small(f, level) for f in frames]
    masks = [_valid_mask(g, *valid_range) for g in grey]
    ref = grey[reference_index]
    warps = []
    scale = 2.0**level
    for i, g in enumerate(grey):
        if i == reference_index:
            warps.append(np.eye(2, 3))
            continue
        both = cv2.bitwise_and(masks[i], masks[reference_index])
        matched = _match_tones(g, ref, both)
        w = ecc_warp(ref, matched, motion=motion, template_mask=both, image_mask=masks[i])
        w[:, 2] *= scale
        if np.hypot(*w[:, 2]) > MAX_BRACKET_SHIFT * max(frames[0].shape[:2]):
            w = np.eye(2, 3)
        warps.append(w)
    return warps


def align_brackets(
    frames: Sequence[np.ndarray],
    reference_index: int | None = None,
    *,
    motion: str = "translation",
) -> list[np.ndarray]:
    """Align a bracket set to its middle exposure (see ``estimate_bracket_warps``).

    The reference frame is returned as is; the others are resampled with bicubic
    interpolation (edges replicated).
    """
    if reference_index is None:
        reference_index = middle_exposure_index(frames)
    warps = estimate_bracket_warps(frames, reference_index, motion=motion)
    return [
        f if i == reference_index else apply_warp(f, w)
        for i, (f, w) in enumerate(zip(frames, warps, strict=True))
    ]


# ---------------------------------------------------------------------------------------------
# Fusion


def _level_sizes(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def auto_levels(h: int, w: int, coarsest: int = 8) -> int:
    """As many pyramid levels as keep the coarsest level's shorter side >= ``coarsest``.

    A deep pyramid blends the lowest frequencies over the whole frame, which avoids the halos
    and flat "patchy" look of a shallow one (Mertens et al. 2007, Sec. 3.2).
    """
    levels = 1
    while min(h, w) >> levels >= coarsest:
        levels += 1
    return levels


def laplacian_blend(
    frames: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    weight_level: int = 0,
    levels: int | None = None,
) -> np.ndarray:
    """Blend frames by weight maps in a Laplacian pyramid (Burt & Adelson 1983).

    Parameters
    ----------
    frames : HxWxC arrays (any dtype; blended in float32 on their own scale).
    weights : one 2-D float32 map per frame, normalised to sum to one per pixel, given at
        pyramid level ``weight_level`` (its size is that of the level: ceil-halved
        ``weight_level`` times). Finer levels get the map upsampled with ``pyrUp``: computing
        weights at half resolution costs a quarter and loses nothing visible, because the
        weights only decide which frame contributes, the detail comes from the frames.
    levels : pyramid depth; ``None`` for ``auto_levels``.

    Returns
    -------
    float32 HxWxC blend on the frames' scale (not clipped).
    """
    h, w = frames[0].shape[:2]
    if levels is None:
        levels = auto_levels(h, w)
    levels = max(levels, weight_level + 1)
    sizes = _level_sizes(h, w, levels)
    acc: list[np.ndarray] = []
    for frame, weight in zip(frames, weights, strict=True):
        # weight pyramid: upsample to finer levels, Gaussian-reduce to coarser ones
        wpyr: dict[int, np.ndarray] = {weight_level: weight}
        for lv in range(weight_level - 1, -1, -1):
            wpyr[lv] = cv2.pyrUp(wpyr[lv + 1], dstsize=sizes[lv][::-1])
        for lv in range(weight_level + 1, levels):
            wpyr[lv] = cv2.pyrDown(wpyr[lv - 1])
        current: np.ndarray = frame.astype(np.float32)
        channels = current.shape[2] if current.ndim == 3 else 1
        for lv in range(levels):
            if lv < levels - 1:
                smaller = cv2.pyrDown(current)
                band = cv2.pyrUp(smaller, dstsize=sizes[lv][::-1])
                cv2.subtract(current, band, dst=band)
            else:
                smaller = band = current  # the last level: the loop ends here
            wl = wpyr[lv]
            if channels > 1:
                wl = cv2.merge([wl] * channels)
            if len(acc) <= lv:
                acc.append(cv2.multiply(band, wl))
            else:
                cv2.accumulateProduct(band, wl, acc[lv])  # multi-threaded, one pass
            current = smaller
    out = acc[-1]
    for lv in range(levels - 2, -1, -1):
        out = cv2.add(cv2.pyrUp(out, dstsize=sizes[lv][::-1]), acc[lv])
    return out


def mertens_weights(
    frame: np.ndarray,
    *,
    contrast_weight: float,
    saturation_weight: float,
    exposure_weight: float,
    exposure_optimum: float = 0.5,
    exposure_width: float = 0.2,
) -> np.ndarray:
    """Unnormalised Mertens quality map of one float32 RGB frame in [0, 1].

    ``C**wc * S**ws * E**we`` with C = |Laplacian| of the grey image, S = standard deviation of
    R, G, B, and E a Gaussian around ``exposure_optimum`` of the channel-mean grey (enfuse's
    default "average" grey projector; Mertens et al. take the product over channels).
    """
    grey = cv2.transform(frame, np.full((1, 3), 1.0 / 3.0, np.float32))
    weight = np.ones(grey.shape, np.float32)
    if contrast_weight:
        contrast = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))
        weight *= contrast if contrast_weight == 1 else contrast**contrast_weight
    if saturation_weight:
        dev = frame - grey[..., None]
        sat = np.sqrt(np.einsum("ijk,ijk->ij", dev, dev) / 3.0)
        weight *= sat if saturation_weight == 1 else sat**saturation_weight
    if exposure_weight:
        z = (grey - exposure_optimum) * (1.0 / exposure_width)
        weight *= np.exp(-0.5 * exposure_weight * z * z)
    return weight


def fuse_exposures(
    frames_u16: Sequence[np.ndarray],
    contrast_weight: float = 1.0,
    saturation_weight: float = 1.0,
    exposure_weight: float = 1.0,
    *,
    exposure_optimum: float = 0.5,
    exposure_width: float = 0.2,
    weight_level: int = 1,
    levels: int | None = None,
) -> np.ndarray:
    """Fuse a bracket set into one well-exposed frame (Mertens, Kautz & Van Reeth 2007).

    Each pixel of each frame gets a quality weight (``mertens_weights``: local contrast,
    colour saturation, well-exposedness, each raised to its ``*_weight`` exponent); the
    weights are normalised across the set and the frames blended in a Laplacian pyramid so the
    seams between regions taken from different exposures stay invisible. enfuse's defaults are
    ``contrast_weight=0, saturation_weight=0.2, exposure_weight=1``.

    Parameters
    ----------
    frames_u16 : aligned uint16 HxWx3 sRGB frames of one bracket set.
    weight_level : pyramid level at which the weights are computed (0 = full resolution,
        1 = half: 4x cheaper, visually equivalent).
    levels : pyramid depth (``None``: as deep as the frame allows).

    Returns
    -------
    The fused uint16 HxWx3 sRGB frame.
    """
    frames_u16 = list(frames_u16)
    if not frames_u16:
        raise ValueError("no frames to fuse")
    if len(frames_u16) == 1:
        return frames_u16[0].copy()
    h, w = frames_u16[0].shape[:2]
    wh, ww = _level_sizes(h, w, weight_level + 1)[-1]
    raw = []
    for f in frames_u16:
        if f.dtype != np.uint16 or f.shape != frames_u16[0].shape:
            raise ValueError("frames must be uint16 arrays of one shape")
        small = f if weight_level == 0 else cv2.resize(f, (ww, wh), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32) * np.float32(1.0 / MAX16)
        raw.append(
            mertens_weights(
                small,
                contrast_weight=contrast_weight,
                saturation_weight=saturation_weight,
                exposure_weight=exposure_weight,
                exposure_optimum=exposure_optimum,
                exposure_width=exposure_width,
            )
        )
    total = np.add.reduce(raw) + np.float32(1e-12 * len(raw))
    weights = [(r + np.float32(1e-12)) / total for r in raw]
    fused = laplacian_blend(frames_u16, weights, weight_level=weight_level, levels=levels)
    np.clip(fused, 0.0, MAX16, out=fused)
    fused += 0.5
    return fused.astype(np.uint16)
