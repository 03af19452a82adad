"""Stabilization on synthetic mountain scenes with known camera motion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skylapse.imaging.affine import compose
from skylapse.processing import stabilize as st

W, H = 640, 360


def _fractal(h: int, w: int, rng: np.random.Generator, octaves: int, base: int, keep: float):
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        n = base * 2**o
        small = rng.standard_normal((max(2, n * h // w) + 2, n + 2)).astype(np.float32)
        out += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * keep**o
    return out / out.std()


class Scene:
    """Linear-light mountain scene: textured rock below a ridge, a sky with drifting clouds."""

    def __init__(self, seed: int = 0, cloud_speed: float = 1.5, cloud_amount: float = 0.4):
        rng = np.random.default_rng(seed)
        ridge = H * (0.45 + 0.08 * _fractal(1, W, rng, 5, 3, 0.6)[0])
        yy = np.arange(H)[:, None]
        self.ground = yy > ridge[None, :]
        rock = np.clip(0.25 + 0.06 * _fractal(H, W, rng, 7, 4, 0.75), 0.02, 1)
        sky = (0.55 + 0.25 * yy / H).astype(np.float32) * np.ones((1, W), np.float32)
        self.base = np.where(self.ground, rock, sky).astype(np.float32)
        self.blobs = [
            (rng.uniform(0, W), rng.uniform(0.05, 0.35) * H, rng.uniform(0.05, 0.12) * W)
            for _ in range(8)
        ]
        self.cloud_texture = 1 + 0.4 * _fractal(H, W, rng, 6, 6, 0.7)
        self.speed = cloud_speed
        self.amount = cloud_amount

    def linear(self, t: int) -> np.ndarray:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        cloud = np.zeros((H, W), np.float32)
        for cx, cy, r in self.blobs:
            cx = (cx + self.speed * t) % (W + 4 * r) - 2 * r
            cloud += np.exp(-((xx - cx) ** 2 / (2 * r * r) + (yy - cy) ** 2 / (0.5 * r * r)))
        shift = round(self.speed * t)
        cloud = np.clip(self.amount * cloud * np.roll(self.cloud_texture, shift, axis=1), 0, 1)
        sky = self.base * (1 - cloud) + 0.95 * cloud
        return np.where(self.ground, self.base, sky).astype(np.float32)


def _motion(n: int, seed: int = 1, shake: float = 2.0, drift: float = 0.03, pan: float = 0.0):
    """Reference -> frame transforms: shake, slow drift, a small rotation, optional pan."""
    rng = np.random.default_rng(seed)
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    out = []
    for t in range(n):
        a = np.deg2rad(rng.uniform(-0.05, 0.05) + 0.001 * t)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shift = rng.uniform(-shake, shake, 2) + np.array([drift * t + pan * t, 0.5 * drift * t])
        out.append(np.hstack([rot, (c - rot @ c + shift)[:, None]]))
    return out


def _frames(scene: Scene, motions, ev_drop: float = 3.0, noise: float = 0.004, seed: int = 2):
    """uint8 sRGB-like gray frames: exposure falls ev_drop EV with 5 % flicker, read noise."""
    rng = np.random.default_rng(seed)
    n = len(motions)
    for t, m in enumerate(motions):
        gain = 2 ** (-ev_drop * t / max(n - 1, 1)) * (1 + 0.05 * rng.standard_normal())
        lin = cv2.warpAffine(
            scene.linear(t), m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )
        lin = lin * gain + noise * rng.standard_normal(lin.shape).astype(np.float32)
        yield np.rint(np.clip(lin, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)


def _reduced(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (W // 2, H // 2), interpolation=cv2.INTER_AREA)


def _static_positions(stabilizing, true_motion) -> np.ndarray:
    """Where ground points of the reference end up in each stabilized frame, (T, P, 2)."""
    gx, gy = np.meshgrid(np.linspace(20, W - 20, 9), np.linspace(0.65 * H, H - 20, 4))
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    out = []
    for m, t in zip(stabilizing, true_motion, strict=True):
        e = compose(m, t)
        out.append(pts @ e[:, :2].T + e[:, 2])
    return np.array(out)


def _jitter_drift(stabilizing, true_motion) -> tuple[float, float]:
    pos = _static_positions(stabilizing, true_motion)
    step = np.diff(pos, axis=0)
    jitter = float(np.sqrt((step**2).sum(-1).mean()))
    drift = float(np.sqrt(((pos - pos[0]) ** 2).sum(-1)).mean(axis=1).max())
    return jitter, drift


def _similarity(angle_deg: float, tx: float, ty: float, scale: float = 1.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, (c - rot @ c + [tx, ty])[:, None]])


def _corner_error(estimate: np.ndarray, truth_inverse: np.ndarray) -> float:
    corners = np.array([[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1]], float)
    e = compose(estimate, truth_inverse)
    return float(np.abs(corners @ e[:, :2].T + e[:, 2] - corners).max())


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("angle", "tx", "ty"), [(0.0, 0.37, -1.62), (0.2, -2.71, 1.18), (-0.1, 4.5, 3.25)]
)
def test_estimate_transform_recovers_subpixel_similarity(angle, tx, ty):
    scene = Scene(cloud_speed=0)
    ref = np.clip(scene.linear(0), 0, 1) ** (1 / 2.2) * 255
    truth = _similarity(angle, tx, ty)
    img = cv2.warpAffine(ref, truth, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    m = st.estimate_transform(ref.astype(np.float32), img.astype(np.float32))
    # m maps image -> reference, so m ∘ truth is the identity up to the estimation error
    assert _corner_error(m, truth) < 0.05
    assert _corner_error(np.eye(2, 3), truth) > 0.3


@pytest.mark.xfail(
    strict=True,
    reason="known gap: a cold 3 EV jump with clipped dark noise is not a gain+offset change; "
    "the sky/ground edge biases the fit (gradual falls work through the tracker)",
)
def test_estimate_transform_keeps_lock_three_ev_darker_and_noisy():
    scene = Scene(cloud_speed=0)
    rng = np.random.default_rng(5)
    lin = scene.linear(0)
    ref = np.clip(lin, 0, 1) ** (1 / 2.2)
    truth = _similarity(0.1, 1.3, -0.8)
    dark = cv2.warpAffine(lin, truth, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    dark = dark / 8 + 0.004 * rng.standard_normal(dark.shape).astype(np.float32)
    dark8 = np.rint(np.clip(dark, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)
    m = st.estimate_transform((ref * 255).astype(np.uint8), dark8)
    assert _corner_error(m, truth) < 0.12


def test_tripod_sequence_removes_jitter_and_drift_despite_sunset_and_clouds():
    n = 40
    motion = _motion(n)
    tracker = st.MotionTracker("tripod", scale=2)
    for frame in _frames(Scene(), motion):
        tracker.add(_reduced(frame))
    transforms = tracker.transforms()
    assert len(transforms) == n
    jitter, drift = _jitter_drift(transforms, motion)
    raw_jitter, raw_drift = _jitter_drift([np.eye(2, 3)] * n, motion)
    assert raw_jitter > 1.5 and raw_drift > 2.5  # the test really shakes
    assert jitter < 0.15
    assert drift < 0.35


@pytest.mark.parametrize("mode", ["tripod", "smooth"])
def test_tracker_gives_the_same_transforms_on_opencv_4_and_5(mode, request):
    n = 16
    frames = [_reduced(f) for f in _frames(Scene(), _motion(n, seed=6), ev_drop=5.0)]

    def track() -> tuple[np.ndarray, list[int]]:
        # a touchy re-anchoring threshold, so the keyframe averaging is exercised too
        tracker = st.MotionTracker(
            mode, scale=2, warmup=4, average_frames=2, reanchor_correlation=0.999
        )
        for frame in frames:
            tracker.add(frame)
        return np.array(tracker.transforms()), tracker.keyframes

    transforms, keyframes = track()
    assert len(keyframes) > 1
    # OpenCV 4.x's warps round sample positions to 1/32 px, 5.x's do not: no matter
    request.getfixturevalue("opencv4")
    on_4, keyframes_4 = track()
    assert keyframes_4 == keyframes
    np.testing.assert_array_equal(on_4, transforms)


def test_moving_clouds_do_not_pull_the_estimate():
    # a heavy, fast, textured cloud deck; the camera is perfectly still
    n = 24
    motion = [np.eye(2, 3)] * n
    scene = Scene(seed=3, cloud_speed=4.0, cloud_amount=0.9)
    tracker = st.MotionTracker("tripod", scale=2)
    for frame in _frames(scene, motion, ev_drop=0, noise=0.002):
        tracker.add(_reduced(frame))
    transforms = tracker.transforms()
    pos = _static_positions(transforms, motion)
    worst = float(np.sqrt(((pos - pos[0]) ** 2).sum(-1)).max())
    assert worst < 0.2
    # the sky is recognised as moving: the motion map is high above the ridge, low below
    motion_map = cv2.resize(tracker._motion, (W, H))
    sky = ~scene.ground & (np.arange(H)[:, None] < 0.35 * H)
    assert np.median(motion_map[sky]) > 2 * np.median(motion_map[scene.ground])


def test_smooth_mode_keeps_a_deliberate_pan_and_removes_shake():
    n = 40
    pan = 1.0  # px per frame to the right (scene content moves right in the frame)
    motion = _motion(n, seed=4, shake=1.5, drift=0.0, pan=pan)
    tracker = st.MotionTracker("smooth", scale=2, smooth_radius=6)
    for frame in _frames(Scene(), motion, ev_drop=0.5):
        tracker.add(_reduced(frame))
    transforms = tracker.transforms()
    pos = _static_positions(transforms, motion).mean(axis=1)  # (T, 2) scene position
    t = np.arange(n)
    slope, intercept = np.polyfit(t, pos[:, 0], 1)
    assert abs(slope - pan) < 0.1  # the pan stays
    resid = pos[:, 0] - (slope * t + intercept)
    assert np.sqrt(np.mean(resid**2)) < 0.25  # the shake goes (it was ~0.9 px RMS)
    raw = _static_positions([np.eye(2, 3)] * n, motion).mean(axis=1)
    raw_resid = raw[:, 0] - np.polyval(np.polyfit(t, raw[:, 0], 1), t)
    assert np.sqrt(np.mean(raw_resid**2)) > 0.6


def test_smooth_trajectory_reproduces_linear_motion_exactly():
    path = [np.array([[1, 0, -2.0 * i], [0, 1, 0.5 * i]]) for i in range(30)]
    out = st.smooth_trajectory(path, radius=5)
    for m in out:  # a constant-speed move is intentional: nothing to correct, even at the ends
        assert np.allclose(m, np.eye(2, 3), atol=1e-9)


def test_common_crop_contains_only_valid_pixels():
    rng = np.random.default_rng(7)
    size = (W, H)
    transforms = [_similarity(rng.uniform(-1, 1), *rng.uniform(-6, 6, 2)) for _ in range(30)]
    x, y, w, h = st.common_crop(transforms, size)
    assert w % 2 == 0 and h % 2 == 0
    assert abs(w / h - W / H) < 0.01
    assert 0.8 * W < w < W  # not needlessly small
    white = np.full((H, W, 3), 60000, np.uint16)
    for m in transforms:
        m_out = st.output_matrix(m, (x, y, w, h), (w, h))
        out = cv2.warpAffine(
            white,
            m_out,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        assert out.min() == 60000


def test_warp_frame_is_one_resample_of_stabilize_crop_and_scale():
    rng = np.random.default_rng(8)
    frame = cv2.GaussianBlur(rng.integers(0, 65535, (H, W, 3)).astype(np.uint16), (0, 0), 3)
    ident = st.warp_frame(frame, np.eye(2, 3), (0, 0, W, H), (W, H))
    assert np.array_equal(ident, frame)
    # a 10 px shift with a crop that undoes it: the output is the shifted crop, scaled
    m = np.array([[1.0, 0, 10], [0, 1.0, 4]])
    out = st.warp_frame(frame, m, (10, 4, 320, 180), (160, 90))
    expected = cv2.resize(frame[:180, :320], (160, 90), interpolation=cv2.INTER_LINEAR)
    assert out.shape == (90, 160, 3) and out.dtype == np.uint16
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2
