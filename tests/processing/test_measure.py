"""The bench's metrics, validated on images with known flicker and shifts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skylapse.imaging import srgb
from skylapse.processing import measure as metrics
from skylapse.scene import mountain_scene, render_frame
from skylapse.testing import SequenceSpec, SequenceTruth, generate_sequence
from skylapse.testing.sequence import _shake_matrix


@pytest.fixture(scope="module")
def base_frame() -> np.ndarray:
    scene = mountain_scene(640, 360, seed=11)
    lin = render_frame(scene, sun_altitude_deg=-5.0)
    enc = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.clip(lin, 0, 1) ** (1 / 2.4) - 0.055)
    return np.rint(np.clip(enc, 0, 1) * 255).astype(np.uint8)


def _shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(
        img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


def test_register_translation_is_subpixel_accurate_under_a_brightness_change(base_frame):
    gray = cv2.cvtColor(base_frame, cv2.COLOR_RGB2GRAY)
    ref = gray[200:].astype(np.float32)
    for dx, dy in [(0.0, 0.0), (0.27, -0.13), (-1.6, 0.8), (4.3, 2.2)]:
        moved = _shift(gray, dx, dy)[200:].astype(np.float32) * 0.6 + 10  # darker, offset
        ex, ey = metrics.register_translation(ref, moved)
        assert ex == pytest.approx(dx, abs=0.04) and ey == pytest.approx(dy, abs=0.04)


def test_register_translation_is_the_same_on_opencv_4_and_5(base_frame, request):
    gray = cv2.cvtColor(base_frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    cases = [(0.27, -0.13), (-1.61, 0.83), (0.011, 0.02)]
    moved = [_shift(gray, dx, dy)[200:] * 0.6 + 10 for dx, dy in cases]
    ref = gray[200:]  # 160 x 640: a DFT-optimal size
    found = [metrics.register_translation(ref, m) for m in moved]
    np.testing.assert_allclose(found, cases, atol=0.04)  # (4.x's _shift is 1/32 px coarse)
    # The same figures under OpenCV 4.x's phase correlation, which windows its inputs in place,
    # and its warps, which round sample positions to 1/32 px.
    request.getfixturevalue("opencv4")
    on_4 = [metrics.register_translation(ref, m) for m in moved]
    np.testing.assert_allclose(on_4, found, atol=1e-5)


def test_jitter_and_drift_of_known_shifts(base_frame):
    rng = np.random.default_rng(0)
    shifts = np.cumsum(rng.normal(0, 0.4, (12, 2)), axis=0)
    shifts[0] = 0
    frames = [_shift(base_frame, dx, dy) for dx, dy in shifts]
    res = metrics.residual_jitter_and_drift(frames)
    np.testing.assert_allclose(res.shifts, shifts, atol=0.05)
    steps = np.diff(shifts, axis=0)
    assert res.jitter_rms == pytest.approx(np.sqrt((steps**2).sum(1).mean()), abs=0.03)
    assert res.drift_max == pytest.approx(np.hypot(*shifts.T).max(), abs=0.05)
    still = metrics.residual_jitter_and_drift([base_frame] * 4)
    assert still.jitter_rms < 1e-3 and still.drift_max < 1e-3


def test_residual_flicker_measures_the_applied_gain(base_frame):
    rng = np.random.default_rng(1)
    ev = rng.normal(0, 0.1, 10)
    lin = srgb.to_linear(base_frame)
    frames = []
    for e in ev:
        v = np.clip(lin * 2.0**e, 0, 1)
        enc = np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)
        frames.append(np.rint(enc * 65535).astype(np.uint16))
    truth = np.full(10, metrics.central_log2_luminance(base_frame))
    res = metrics.residual_flicker(frames, truth)
    assert res.std == pytest.approx(ev.std(), abs=0.005)
    np.testing.assert_allclose(res.difference - res.difference.mean(), ev - ev.mean(), atol=0.01)
    # A constant offset is not flicker.
    assert metrics.residual_flicker(frames[:1] * 5, np.zeros(5)).std < 1e-9
    with pytest.raises(ValueError):
        metrics.residual_flicker(frames, truth[:3])


# --- geometric error against the true camera motion -------------------------------------------

SMALL = (320, 180)
CROP = (7.0, 5.0, 304.0, 171.0)  # x, y, w, h of the steady frame shown, scaled up 5 %


@pytest.fixture(scope="module")
def sunset(tmp_path_factory) -> tuple[list[np.ndarray], SequenceTruth]:
    folder = tmp_path_factory.mktemp("sunset")
    truth = generate_sequence(folder, SequenceSpec(frames=24, size=SMALL, seed=0))
    inputs = [cv2.imread(str(folder / f.file), cv2.IMREAD_COLOR)[..., ::-1] for f in truth.frames]
    return inputs, truth


def _h3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _output_to_steady() -> np.ndarray:
    x, y, w, h = CROP
    sx, sy = w / SMALL[0], h / SMALL[1]
    return np.array([[sx, 0.0, x + 0.5 * sx - 0.5], [0.0, sy, y + 0.5 * sy - 0.5], [0, 0, 1]])


def _stabilized(inputs, truth, error_x=None, jpeg_quality=None) -> list[np.ndarray]:
    """What a stabilizer with the true motion outputs (16-bit), content moved by ``error_x``."""
    outputs = []
    for i, (frame, f) in enumerate(zip(inputs, truth.frames, strict=True)):
        e = 0.0 if error_x is None else float(error_x[i])
        # Output pixel q shows the input at S_i(crop(q - e)): content moved right by e.
        m = (
            _h3(metrics.camera_matrix(f.dx, f.dy, f.rotation_deg, SMALL))
            @ _output_to_steady()
            @ np.array([[1.0, 0.0, -e], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        )[:2]
        out = cv2.warpAffine(
            frame.astype(np.uint16) * 257,
            m,
            SMALL,
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if jpeg_quality is not None:
            _ok, buf = cv2.imencode(
                ".jpg", (out >> 8).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
            )
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        outputs.append(out)
    return outputs


def test_camera_matrix_follows_the_synthetic_truth_convention():
    m = metrics.camera_matrix(1.5, -0.5, 0.3, SMALL)
    np.testing.assert_allclose(m, _shake_matrix(1.5, -0.5, 0.3, 0, *SMALL), atol=1e-12)
    centre = np.array([(SMALL[0] - 1) / 2, (SMALL[1] - 1) / 2, 1.0])
    np.testing.assert_allclose(m @ centre, [centre[0] + 1.5, centre[1] - 0.5], atol=1e-12)
    # Clockwise on screen (rows point down): a point right of the centre moves down.
    assert (m @ (centre + np.array([100.0, 0.0, 0.0])))[1] > (m @ centre)[1]


def test_perfect_stabilizer_has_no_geometric_error_although_the_old_metric_sees_drift(sunset):
    inputs, truth = sunset
    outputs = _stabilized(inputs, truth)
    apparent = metrics.residual_jitter_and_drift(outputs)
    assert apparent.drift_max > 0.3  # the sunset's moving shading, read as motion
    res = metrics.stabilization_error_against_truth(outputs, inputs, truth)
    assert res.drift_max < 0.03 and res.jitter_rms < 0.02
    assert np.abs(res.shifts).max() < 0.03
    # The fitted output geometry is the true one: S_0 ∘ crop.
    true_m0 = (_h3(metrics.camera_matrix(*_motion(truth, 0), SMALL)) @ _output_to_steady())[:2]
    corners = np.array([[0, 0, 1], [319, 0, 1], [0, 179, 1], [319, 179, 1]], np.float64)
    np.testing.assert_allclose(corners @ res.output_to_input.T, corners @ true_m0.T, atol=0.05)
    # Lossy encoding of the output (JPEG q90 of 8 bits) costs little.
    lossy = metrics.stabilization_error_against_truth(
        _stabilized(inputs, truth, jpeg_quality=90), inputs, truth
    )
    assert lossy.drift_max < 0.05 and lossy.jitter_rms < 0.03


def _motion(truth, i: int) -> tuple[float, float, float]:
    f = truth.frames[i]
    return f.dx, f.dy, f.rotation_deg


def test_injected_drift_is_measured(sunset):
    inputs, truth = sunset
    ramp = np.linspace(0.0, 0.5, len(inputs))
    res = metrics.stabilization_error_against_truth(_stabilized(inputs, truth, ramp), inputs, truth)
    assert res.drift_max == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(res.shifts[:, 0] - res.shifts[0, 0], ramp, atol=0.05)
    assert np.abs(res.shifts[:, 1]).max() < 0.05
    steps = np.diff(ramp)
    assert res.jitter_rms == pytest.approx(np.sqrt((steps**2).mean()), abs=0.03)


def test_unstabilized_input_shows_the_true_shake(sunset):
    inputs, truth = sunset
    res = metrics.stabilization_error_against_truth(inputs, inputs, truth)
    np.testing.assert_allclose(res.output_to_input, np.eye(3)[:2], atol=0.02)
    shake = np.stack([truth.column("dx"), truth.column("dy")], axis=1)
    np.testing.assert_allclose(res.shifts - res.shifts[0], shake - shake[0], atol=0.1)
    with pytest.raises(ValueError):
        metrics.stabilization_error_against_truth(inputs[:5], inputs[:6], truth)
