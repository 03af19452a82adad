import cv2
import numpy as np
import pytest

from skylapse.imaging import srgb
from skylapse.processing.focus_stack import (
    align_focus_stack,
    estimate_focus_warps,
    focus_weights,
    fuse_focus_stack,
)

H, W = 240, 320
FOCUS = [0.1, 0.3, 0.5, 0.7, 0.9]
MAX_BLUR = 5.0  # Gaussian sigma (px) at a depth distance of 1


def sharp_scene(rng):
    """All-in-focus linear RGB texture (fine and coarse detail, coloured) and its depth map."""

    def tex(sigma):
        t = cv2.GaussianBlur(rng.standard_normal((H, W)).astype(np.float32), (0, 0), sigma)
        return t / t.std()

    lum = 0.25 * np.exp(0.5 * tex(0.8) + 0.4 * tex(4.0))
    colour = np.stack([1 + 0.2 * tex(6.0), np.ones((H, W), np.float32), 1 - 0.2 * tex(6.0)], 2)
    truth = np.clip(lum[..., None] * colour, 0, 1).astype(np.float32)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = 0.05 + 0.9 * x / W  # a receding plane
    disc = (x - W * 0.3) ** 2 + (y - H * 0.5) ** 2 < (H * 0.25) ** 2
    depth = np.where(disc, 0.85, depth)  # a near object in front of it
    depth = np.where((y < H * 0.2) & (x > W * 0.6), 0.15, depth)  # and a far patch
    return truth, depth.astype(np.float32)


def defocus(truth, depth, focus):
    """Depth-dependent Gaussian blur: sigma = MAX_BLUR * |depth - focus|, by interpolating
    between a ladder of uniformly blurred copies."""
    sigmas = np.linspace(0, MAX_BLUR, 11)
    want = MAX_BLUR * np.abs(depth - focus)
    out = np.zeros_like(truth)
    for s in sigmas:
        blurred = truth if s == 0 else cv2.GaussianBlur(truth, (0, 0), s)
        step = sigmas[1]
        w = np.clip(1 - np.abs(want - s) / step, 0, 1)
        out += blurred * w[..., None]
    return out


def breathe(img, i):
    """Focus breathing: magnification grows 0.4 % per step, plus a drift of a few tenths px."""
    s = 1 + 0.004 * (i - 2)
    c = np.array([W / 2, H / 2])
    m = np.float32([[s, 0, (1 - s) * c[0] + 0.3 * (i - 2)], [0, s, (1 - s) * c[1] - 0.2 * (i - 2)]])
    return cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT), m


def to_frame(lin, rng):
    noisy = lin + rng.standard_normal(lin.shape).astype(np.float32) * 0.002
    return srgb.from_linear(np.clip(noisy, 0, 1))


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(11)
    truth, depth = sharp_scene(rng)
    frames, true_warps = [], []
    for i, f in enumerate(FOCUS):
        moved, m = breathe(defocus(truth, depth, f), i)
        frames.append(to_frame(moved, rng))
        true_warps.append(m)
    return srgb.from_linear(truth), depth, frames, true_warps


def psnr(a, b, margin=12):
    a = a[margin:-margin, margin:-margin].astype(np.float64) / srgb.MAX16
    b = b[margin:-margin, margin:-margin].astype(np.float64) / srgb.MAX16
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


def test_alignment_undoes_focus_breathing(stack):
    _, _, frames, true_warps = stack
    warps = estimate_focus_warps(frames)
    ys, xs = np.mgrid[20 : H - 20 : 40, 20 : W - 20 : 40]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    for w, m in zip(warps, true_warps, strict=True):
        # truth: frame i = reference content mapped by m_i, so reference -> frame is m_i m_ref^-1
        m_ref = np.vstack([true_warps[2], [0, 0, 1]])
        expected = (np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(m_ref))[:2]
        err = np.abs(w @ pts - expected @ pts).max()
        assert err < 0.2, (w, expected)


def test_fused_stack_beats_every_frame(stack):
    truth, _, frames, _ = stack
    aligned = align_focus_stack(frames)
    fused = fuse_focus_stack(aligned)
    assert fused.dtype == np.uint16 and fused.shape == truth.shape
    singles = [psnr(f, truth) for f in aligned]
    got = psnr(fused, truth)
    assert got > max(singles) + 3.0, (got, singles)


def test_selection_follows_depth(stack):
    _, depth, frames, _ = stack
    weights = focus_weights(align_focus_stack(frames))
    np.testing.assert_allclose(np.sum(weights, axis=0), 1.0, atol=1e-5)
    chosen = np.argmax(np.stack(weights), axis=0)
    nearest = np.argmin(np.abs(depth[..., None] - np.array(FOCUS)), axis=2)
    inner = (slice(12, -12), slice(12, -12))
    assert np.mean(chosen[inner] == nearest[inner]) > 0.8


def test_flat_areas_are_averaged_not_picked():
    rng = np.random.default_rng(4)
    flat = np.full((80, 100, 3), 20000.0)
    frames = [
        np.clip(flat + rng.normal(0, 600, flat.shape), 0, 65535).astype(np.uint16) for _ in range(4)
    ]
    fused = fuse_focus_stack(frames)
    noise_single = frames[0][10:-10, 10:-10].astype(float).std()
    noise_fused = fused[10:-10, 10:-10].astype(float).std()
    assert noise_fused < 0.75 * noise_single  # 4 frames averaged would give 0.5


def test_single_frame_and_identical_frames():
    rng = np.random.default_rng(2)
    frame = (rng.random((60, 80, 3)) * 60000).astype(np.uint16)
    assert np.array_equal(fuse_focus_stack([frame]), frame)
    fused = fuse_focus_stack([frame, frame, frame])
    assert np.abs(fused.astype(int) - frame).max() <= 1
