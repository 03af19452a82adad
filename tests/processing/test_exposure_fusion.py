import cv2
import numpy as np
import pytest

from skylapse.imaging import srgb
from skylapse.processing.exposure_fusion import (
    align_brackets,
    estimate_bracket_warps,
    fuse_exposures,
    group_brackets,
    laplacian_blend,
    middle_exposure_index,
)

H, W = 240, 320
CLIP_LOW, CLIP_HIGH = 64, srgb.MAX16 - 64


def _texture(rng, sigma, shape=(H, W)):
    t = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return t / t.std()


def hdr_scene(rng):
    """Linear radiance (1.0 = white at EV 0): bright textured sky with a sun, dark textured
    ground with a deep shadow; about 15 EV from the shadow to the sun."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    horizon = H * 0.45 + 12 * np.sin(x / 37.0)
    sky = 2.5 * np.exp(0.35 * _texture(rng, 3.0) + 0.15 * _texture(rng, 1.2))
    ground = 0.03 * np.exp(0.5 * _texture(rng, 2.0) + 0.3 * _texture(rng, 1.0))
    shadow = cv2.GaussianBlur(((x < W * 0.4) & (y > H * 0.7)).astype(np.float32), (0, 0), 2)
    ground = ground * (1 - shadow * 0.97)
    is_sky = cv2.GaussianBlur((y < horizon).astype(np.float32), (0, 0), 1.0)
    lum = is_sky * sky + (1 - is_sky) * ground
    sun = cv2.GaussianBlur(
        ((x - W * 0.7) ** 2 + (y - H * 0.15) ** 2 < 64).astype(np.float32), (0, 0), 1.5
    )
    lum = lum + 40 * sun
    tint = np.where(is_sky[..., None] > 0.5, [0.75, 0.9, 1.15], [1.1, 1.0, 0.8]).astype(np.float32)
    return lum[..., None] * tint, is_sky, shadow


def bracket(scene, ev, shift, rng):
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    moved = cv2.warpAffine(scene, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    lin = np.maximum(moved, 0) * 2.0**ev
    lin = lin + rng.standard_normal(lin.shape) * np.sqrt(2e-5 * lin + 1e-7)
    return srgb.from_linear(np.clip(lin, 0, 1))


SHIFTS = [(0.37, -0.61), (0.0, 0.0), (-1.28, 0.44)]
EVS = [-2, 0, 2]


@pytest.fixture(scope="module")
def brackets():
    rng = np.random.default_rng(7)
    scene, is_sky, shadow = hdr_scene(rng)
    frames = [bracket(scene, ev, s, rng) for ev, s in zip(EVS, SHIFTS, strict=True)]
    return scene, is_sky, shadow, frames


def clipped_fraction(frame):
    return float(np.mean(np.any((frame <= CLIP_LOW) | (frame >= CLIP_HIGH), axis=2)))


def highpass(img):
    g = img.astype(np.float32).mean(axis=2) if img.ndim == 3 else img.astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), 2.0)


def test_scene_has_more_than_ten_stops(brackets):
    scene = brackets[0]
    lum = scene.mean(axis=2)
    assert np.log2(np.percentile(lum, 99.9) / np.percentile(lum, 1)) > 10


def test_reference_is_middle_exposure(brackets):
    frames = brackets[3]
    assert middle_exposure_index(frames) == 1
    assert middle_exposure_index([frames[1], frames[2], frames[0]]) == 0


def test_alignment_recovers_subpixel_shifts(brackets):
    frames = brackets[3]
    warps = estimate_bracket_warps(frames)
    for w, s in zip(warps, SHIFTS, strict=True):
        np.testing.assert_allclose(w[:, :2], np.eye(2), atol=1e-9)
        assert abs(w[0, 2] - s[0]) < 0.1 and abs(w[1, 2] - s[1]) < 0.1, (w[:, 2], s)


def test_aligned_brackets_match_the_reference_geometry(brackets):
    frames = brackets[3]
    aligned = align_brackets(frames)
    assert aligned[1] is frames[1]
    ref = highpass(frames[1])[20:-20, 20:-20]
    before = highpass(frames[2])[20:-20, 20:-20]
    after = highpass(aligned[2])[20:-20, 20:-20]
    sky = brackets[1][20:-20, 20:-20] < 0.5  # compare on the ground, well exposed in both
    corr = lambda a, b: np.corrcoef(a[sky], b[sky])[0, 1]  # noqa: E731
    assert corr(ref, after) > 0.85  # an unshifted bracket with fresh noise scores 0.86
    assert corr(ref, after) > corr(ref, before) + 0.2


def test_fusion_has_fewer_clipped_pixels_and_detail_everywhere(brackets):
    scene, is_sky, shadow, frames = brackets
    aligned = align_brackets(frames)
    fused = fuse_exposures(aligned)
    assert fused.dtype == np.uint16 and fused.shape == frames[0].shape
    fused_clip = clipped_fraction(fused)
    bracket_clips = [clipped_fraction(f) for f in frames]
    assert fused_clip < min(bracket_clips) * 0.7, (fused_clip, bracket_clips)

    truth = highpass(np.log(scene[..., 1:2] * 2 + 1e-4))  # texture in perceptual terms
    m = 14
    sky = (is_sky > 0.99)[m:-m, m:-m]
    deep = (shadow > 0.99)[m:-m, m:-m]
    highlights = sky & (scene[m:-m, m:-m, 1] < 15)  # the sky, without the sun
    hp_truth = truth[m:-m, m:-m]

    def detail(img, region):
        hp = highpass(img)[m:-m, m:-m]
        return np.corrcoef(hp[region], hp_truth[region])[0, 1]

    # highlights: the +2 EV bracket is blown out there, the fusion keeps the texture
    assert detail(fused, highlights) > 0.8
    assert detail(frames[2], highlights) < 0.3
    # shadows: the -2 EV bracket is crushed, the fusion keeps the texture
    assert detail(fused, deep) > 0.5
    assert detail(fused, deep) > detail(frames[0], deep) + 0.2


def test_fusion_of_identical_frames_is_identity():
    rng = np.random.default_rng(1)
    frame = (rng.random((90, 120, 3)) * 50000 + 5000).astype(np.uint16)
    fused = fuse_exposures([frame, frame, frame], 0.0, 0.2, 1.0)
    assert np.abs(fused.astype(int) - frame).max() <= 2


def test_fusion_prefers_the_well_exposed_frame():
    dark = np.full((64, 96, 3), 3000, np.uint16)
    mid = np.full((64, 96, 3), 32000, np.uint16)
    mid[..., 0] = 36000  # some saturation so the saturation term is non-zero
    bright = np.full((64, 96, 3), 64000, np.uint16)
    fused = fuse_exposures([dark, mid, bright], 0.0, 0.2, 1.0)
    assert np.abs(fused.astype(int) - mid).max() < 2500


def test_laplacian_blend_with_binary_weights_reproduces_the_selected_frame():
    rng = np.random.default_rng(3)
    a = rng.random((64, 80, 3)).astype(np.float32)
    b = rng.random((64, 80, 3)).astype(np.float32)
    ones, zeros = np.ones((64, 80), np.float32), np.zeros((64, 80), np.float32)
    np.testing.assert_allclose(laplacian_blend([a, b], [ones, zeros]), a, atol=1e-4)
    half = laplacian_blend([a, b], [ones * 0.5, ones * 0.5])
    np.testing.assert_allclose(half, (a + b) / 2, atol=1e-4)


@pytest.mark.parametrize(
    ("evs", "expected"),
    [
        # 0/-2/+2, with slow auto-exposure drift across the day
        ([10, 8, 12, 10.2, 8.2, 12.2, 10.4, 8.4, 12.4], [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
        # -2/0/+2 starting one frame into a set: the leading frames form a short set
        ([0, 2, -2, 0, 2, -2, 0, 2], [[0, 1], [2, 3, 4], [5, 6, 7]]),
        # 5-frame bracket middle first
        ([0, -1, 1, -2, 2] * 3, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]),
        # two-frame bracket
        ([0, 3, 0, 3, 0, 3], [[0, 1], [2, 3], [4, 5]]),
        # 0/-2/+2 from its second frame, trailing partial set kept
        ([-2, 2, 0, -2, 2, 0, -2, 2, 0], [[0, 1], [2, 3, 4], [5, 6, 7], [8]]),
        # no bracketing: every frame alone
        ([5.0, 5.1, 5.0, 4.9, 5.0], [[0], [1], [2], [3], [4]]),
    ],
)
def test_group_brackets_detects_patterns(evs, expected):
    assert group_brackets(evs) == expected


def test_group_brackets_tolerates_one_broken_set():
    evs = [0, -2, 2] * 6
    evs[7] = 0  # one misfired bracket frame
    groups = group_brackets(evs)
    assert groups == [list(range(i, i + 3)) for i in range(0, 18, 3)]


def test_group_brackets_fixed_size():
    assert group_brackets([0.0] * 7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert group_brackets([], 3) == []
    with pytest.raises(ValueError):
        group_brackets([0.0], 0)
    with pytest.raises(ValueError):
        group_brackets([0.0, float("nan")])
