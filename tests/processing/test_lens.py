"""Lens stage: distortion is straightened, vignetting flattened, bad profiles explained."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skylapse.imaging import srgb
from skylapse.processing.lens import (
    LensProfile,
    LensProfileError,
    builtin_lens_profile,
    correct_lens,
    lens_correction_maps,
    load_lens_profile,
)

W, H = 320, 240
K1, K2 = -0.28, 0.07


def profile(**overrides) -> LensProfile:
    data = {
        "name": "test",
        "focal_length": 0.6,
        "principal_point": [0.52, 0.48],
        "distortion": {"k1": K1, "k2": K2},
    }
    data.update(overrides)
    return LensProfile.model_validate(data)


def grid_points(k: np.ndarray) -> np.ndarray:
    """Ideal (undistorted) dot centres on a grid covering most of the frame."""
    xs = np.linspace(30, W - 30, 9)
    ys = np.linspace(25, H - 25, 7)
    return np.array([(x, y) for y in ys for x in xs])


def render_dots(points: np.ndarray, xy: np.ndarray, sigma: float = 1.6) -> np.ndarray:
    """Bright Gaussian dots at ``points``, evaluated at the (ideal) coordinates ``xy``."""
    img = np.zeros(xy.shape[:2])
    for px, py in points:
        img += np.exp(-((xy[..., 0] - px) ** 2 + (xy[..., 1] - py) ** 2) / (2 * sigma**2))
    return img


def distorted_frame(prof: LensProfile) -> tuple[np.ndarray, np.ndarray]:
    """What the lens images: each sensor pixel sees the ideal scene at its undistorted point."""
    k = prof.camera_matrix((W, H))
    dist = prof.distortion.coefficients()
    pix = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(pix.astype(np.float64), k, dist, P=k).reshape(H, W, 2)
    points = grid_points(k)
    img = 0.05 + 0.8 * np.clip(render_dots(points, ideal), 0, 1)
    frame = srgb.from_linear(np.repeat(img[..., None], 3, axis=2))
    return frame, points


def centroids(frame: np.ndarray, near: np.ndarray, radius: int = 6) -> np.ndarray:
    lin = srgb.to_linear(frame)[..., 1].astype(np.float64) - 0.05
    found = []
    for x, y in near:
        x0, y0 = round(x), round(y)
        win = lin[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].clip(0)
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        found.append((x0 + (win * xx).sum() / win.sum(), y0 + (win * yy).sum() / win.sum()))
    return np.array(found)


def test_distorted_grid_is_straightened():
    prof = profile()
    frame, truth = distorted_frame(prof)
    maps = lens_correction_maps(prof, (W, H), fill=False)
    assert np.allclose(maps.new_camera_matrix, maps.camera_matrix)
    corrected = correct_lens(frame, maps)
    assert corrected.dtype == np.uint16 and corrected.shape == frame.shape
    # Before correction the outer dots sit far from the ideal grid (barrel pulls them in)...
    k = maps.camera_matrix
    dist = prof.distortion.coefficients()
    rays = np.hstack([(truth - k[:2, 2]) / k[0, 0], np.ones((len(truth), 1))])
    where = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, dist)[0].reshape(-1, 2)
    assert np.max(np.hypot(*(where - truth).T)) > 8
    # ...after it, every dot is back on the ideal grid within a small fraction of a pixel.
    found = centroids(corrected, truth)
    err = np.hypot(*(found - truth).T)
    assert err.max() < 0.35, err.max()
    # Straight lines: each grid row is straight (residual of a line fit).
    for row in found.reshape(7, 9, 2):
        fit = np.polyfit(row[:, 0], row[:, 1], 1)
        assert np.max(np.abs(np.polyval(fit, row[:, 0]) - row[:, 1])) < 0.3


def test_fill_keeps_points_consistent_with_the_new_camera_matrix():
    prof = profile(distortion={"k1": 0.25, "k2": 0.0})  # pincushion: corners would go black
    frame, truth = distorted_frame(prof)
    maps = lens_correction_maps(prof, (W, H), fill=True)
    corrected = correct_lens(frame, maps)
    k, new_k = maps.camera_matrix, maps.new_camera_matrix
    assert new_k[0, 0] > k[0, 0]  # zoomed in
    expected = (truth - k[:2, 2]) * new_k[0, 0] / k[0, 0] + new_k[:2, 2]
    inside = (expected[:, 0] > 8) & (expected[:, 0] < W - 8)
    inside &= (expected[:, 1] > 8) & (expected[:, 1] < H - 8)
    found = centroids(corrected, expected[inside])
    assert np.hypot(*(found - expected[inside]).T).max() < 0.35
    # No black corners: the darkest output pixel is the scene's background level.
    assert srgb.to_linear(corrected).min() > 0.04


def test_vignetting_applied_then_corrected_is_flat():
    prof = profile(distortion={}, vignetting={"a": -0.4, "b": 0.1, "c": -0.02})
    maps = lens_correction_maps(prof, (W, H))
    assert maps.map1 is None and maps.gain is not None  # no remap without distortion
    k = prof.camera_matrix((W, H))
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(xx - k[0, 2], yy - k[1, 2]) / (0.5 * np.hypot(W, H))
    falloff = prof.vignetting.relative_illumination(r)
    assert falloff.min() < 0.72  # the corners really are dark
    lin = np.repeat((0.5 * falloff)[..., None], 3, axis=2) * np.array([1.0, 0.9, 0.6])
    out = srgb.to_linear(correct_lens(srgb.from_linear(lin), maps))
    flat = np.array([0.5, 0.45, 0.3])
    assert np.max(np.abs(out / flat - 1)) < 0.003


def test_identity_profile_returns_an_equal_copy():
    prof = profile(distortion={})
    maps = lens_correction_maps(prof, (W, H))
    frame = np.random.default_rng(0).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    out = correct_lens(frame, maps)
    assert np.array_equal(out, frame) and out is not frame
    with pytest.raises(ValueError, match="maps are for"):
        correct_lens(frame[:100], maps)


def test_profile_is_resolution_independent_and_checks_aspect():
    prof = profile(calibrated_size=[4056, 3040])
    small, big = prof.camera_matrix((640, 480)), prof.camera_matrix((4056, 3040))
    assert big[0, 0] / small[0, 0] == pytest.approx(4056 / 640)
    assert big[0, 2] == pytest.approx(0.52 * 4055)
    with pytest.raises(ValueError, match="aspect"):
        prof.camera_matrix((1920, 1080))


def test_bad_yaml_names_file_and_field(tmp_path):
    path = tmp_path / "lens.yaml"
    path.write_text("name: x\nfocal_length: 0.5\ndistortion:\n  k1: strong\n")
    with pytest.raises(LensProfileError) as err:
        load_lens_profile(path)
    assert str(err.value).startswith(f"{path}: distortion.k1: Input should be a valid number")
    path.write_text("name: x\nfocal_lenght: 0.5\n")
    with pytest.raises(LensProfileError) as err:
        load_lens_profile(path)
    assert "lens.yaml: focal_length: Field required" in str(err.value)
    assert "lens.yaml: focal_lenght: Extra inputs are not permitted" in str(err.value)
    path.write_text("name: x\nfocal_length: 0.5\nvignetting: {a: -1.5}\n")
    with pytest.raises(LensProfileError, match=r"lens\.yaml: vignetting: Value error, relative"):
        load_lens_profile(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(LensProfileError, match=r"lens\.yaml: not valid YAML"):
        load_lens_profile(path)
    with pytest.raises(LensProfileError, match=r"no\.yaml: cannot read"):
        load_lens_profile(tmp_path / "no.yaml")


def test_shipped_example_profile_loads_and_corrects():
    prof = builtin_lens_profile("example-wide")
    assert prof.distortion.k1 < 0
    assert prof.vignetting.relative_illumination(1.0) == pytest.approx(0.65)
    maps = lens_correction_maps(prof, (400, 300))
    frame = np.full((300, 400, 3), 30000, np.uint16)
    out = correct_lens(frame, maps)
    # A flat frame gets brighter towards the corners (vignetting divided out), not darker.
    assert out[150, 200, 1] == pytest.approx(30000, abs=30) and out[5, 5, 1] > out[150, 200, 1]
