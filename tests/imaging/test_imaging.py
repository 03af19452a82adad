"""The shared imaging package: its conventions, and that capture can use it without processing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from skylapse.imaging import affine, luma, pyramid, srgb
from skylapse.imaging.scratch import ScratchBuffer


def _loaded_after(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with ``prefixes`` that ``import <imports>`` loads in a fresh
    interpreter (this test process has imported everything already)."""
    code = (
        f"import json, sys, {imports}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


#: The one part of `skylapse.processing` the capture side loads: the render options' schema
#: (pydantic only), which the shared configuration validates ``processing.render`` with.
CONFIG_SCHEMA = ["skylapse.processing", "skylapse.processing.options"]


def test_capture_service_loads_no_processing_module() -> None:
    imports = "skylapse.capture.service, skylapse.capture.cameras.factory, skylapse.scene"
    assert _loaded_after(imports, ("skylapse.processing",)) == CONFIG_SCHEMA


#: What `skylapse serve capture` with a real camera never uses: the processing code, PyAV, the
#: job queue and S3 clients, and the simulated camera with its procedural scene.
NOT_FOR_CAPTURE = (
    "skylapse.processing",
    "skylapse.scene",
    "skylapse.capture.cameras.simulated",
    "skylapse.testing",
    "av",
    "huey",
    "boto3",
)


def test_the_capture_service_imports_nothing_it_does_not_use() -> None:
    serve = "skylapse.api.capture.app, skylapse.api.server"
    assert _loaded_after(serve, NOT_FOR_CAPTURE) == CONFIG_SCHEMA
    # the whole command line, as `skylapse serve capture` loads it: every command registered,
    # none of the processing code they run
    assert _loaded_after(f"skylapse.cli, {serve}", NOT_FOR_CAPTURE) == CONFIG_SCHEMA


def test_srgb_tables_match_the_curve_at_both_depths() -> None:
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        codes = np.arange(2**bits, dtype=dtype)
        exact = srgb.decode(codes / (2**bits - 1))
        np.testing.assert_array_equal(srgb.to_linear(codes), exact.astype(np.float32))
    with pytest.raises(TypeError, match="int32"):
        srgb.to_linear(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="12"):
        srgb.linear_lut(12)


def test_linear_luminance_of_encoded_and_linear_images_agree() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
    linear = srgb.to_linear(frame).astype(np.float64)
    expected = linear @ np.array([0.2126, 0.7152, 0.0722])
    np.testing.assert_allclose(luma.linear_luminance(frame), expected, rtol=1e-6)
    np.testing.assert_allclose(luma.linear_luminance(linear), expected, rtol=1e-6)
    assert luma.linear_luminance(frame).dtype == np.float32
    assert luma.linear_luminance(linear).dtype == np.float64
    # grey images are luminance already; uint8 is decoded like uint16
    grey = np.full((4, 4), 128, np.uint8)
    assert luma.linear_luminance(grey)[0, 0] == pytest.approx(float(srgb.decode(128 / 255)))
    assert luma.central_log2_luminance(frame) == pytest.approx(
        luma.central_log2_luminance(linear), abs=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        luma.linear_luminance(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(TypeError):
        luma.linear_luminance(np.zeros((4, 4), np.int16))


def test_compose_and_invert_follow_warp_affine() -> None:
    rng = np.random.default_rng(1)
    a = np.array([[1.01, 0.02, 3.5], [-0.03, 0.98, -2.0]])
    b = np.array([[0.9, -0.1, 1.0], [0.1, 0.9, 4.0]])
    points = rng.random((10, 2)) * 100

    def apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
        return p @ m[:, :2].T + m[:, 2]

    np.testing.assert_allclose(apply(affine.compose(a, b), points), apply(a, apply(b, points)))
    np.testing.assert_allclose(apply(affine.invert(a), apply(a, points)), points, atol=1e-9)


def test_resize_matrix_is_the_convention_of_cv2_resize() -> None:
    # A smooth blob centred at x = 20.3 of a 64-wide row lands at (20.3 + 0.5) / 2 - 0.5.
    row = np.exp(-0.5 * ((np.arange(64) - 20.3) / 3.0) ** 2).astype(np.float32)[None, :]
    half = cv2.resize(row, (32, 1), interpolation=cv2.INTER_AREA)[0]
    centroid = float((half * np.arange(32)).sum() / half.sum())
    assert (affine.resize_matrix(0.5) @ [20.3, 0.0, 1.0])[0] == pytest.approx(centroid, abs=1e-4)
    assert (affine.resize_matrix(0.5) @ [20.3, 0.0, 1.0])[0] == pytest.approx(9.9)


def test_pyramid_levels_and_their_coordinates() -> None:
    image = np.zeros((64, 96), np.float32)
    image[40, 30] = 1.0
    levels = pyramid.gaussian_pyramid(image, 3)
    assert levels[0] is image and [p.shape for p in levels] == [(64, 96), (32, 48), (16, 24)]
    # the blob's centre on level 2 is where level_matrix(2) puts (30, 40)
    coarse = levels[2]
    ys, xs = np.indices(coarse.shape)
    centre = [(xs * coarse).sum() / coarse.sum(), (ys * coarse).sum() / coarse.sum()]
    assert pyramid.level_matrix(2) @ [30.0, 40.0, 1.0] == pytest.approx(centre, abs=0.05)
    m = np.array([[1.01, 0.02, 3.5], [-0.03, 0.98, -2.0]])
    np.testing.assert_allclose(pyramid.from_level(pyramid.to_level(m, 2), 2), m)
    with pytest.raises(ValueError):
        pyramid.gaussian_pyramid(image, 0)


def test_scratch_buffers_are_per_thread_and_follow_the_shape() -> None:
    buffer = ScratchBuffer()
    mine = buffer.get((4, 5), np.uint16)
    assert mine.shape == (4, 5) and mine.dtype == np.uint16
    assert buffer.get((4, 5), np.uint16) is mine
    assert buffer.get((4, 5), np.float32).dtype == np.float32
    others: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: others.append(buffer.get((4, 5), np.float32)))
    thread.start()
    thread.join()
    assert others[0] is not buffer.get((4, 5), np.float32)
