"""The capture path's memory: 8-bit frames reordered in place, no full-size copies for focus or
encoding, only the reduced copy kept for the preview, frames released once written, and a writer
queue bounded in bytes. Allocations are measured with tracemalloc, which sees numpy's and
OpenCV's output arrays."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import tracemalloc
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

from skylapse.capture.analysis import ANALYSIS_WIDTH, analyse_frame
from skylapse.capture.cameras import ReplayCamera, rgb_frame
from skylapse.capture.cameras.focus import focus_score
from skylapse.capture.clock import RealClock
from skylapse.capture.exposure import meter
from skylapse.capture.quality import image_quality_score, quality_components
from skylapse.capture.service import CaptureService, SessionSpec
from skylapse.capture.writer import FrameWriter, WriteJob, encode_jpeg
from skylapse.catalog.capture import Catalog, FrameRecord
from skylapse.config import default_config
from skylapse.exif import exif_bytes, with_exif_jpeg
from skylapse.imaging.luma import linear_luminance


def _peak_bytes(fn, *args):
    """``fn(*args)`` and the most memory it had allocated at once beyond what it returns."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn(*args)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An 8-bit RGB landscape-like test image with texture at several scales."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.random((h // 16, w // 16, 3)).astype(np.float32), (w, h))
    fine = rng.normal(0, 0.03, (h, w, 3)).astype(np.float32)
    return (np.clip(coarse * 0.8 + 0.1 + fine, 0, 1) * 255).astype(np.uint8)


def _write_jpegs(folder: Path, count: int, h: int, w: int) -> None:
    """``count`` JPEGs of ``_scene`` with EXIF exposure, as a camera writes them."""
    folder.mkdir()
    exif = exif_bytes(dt.datetime(2026, 6, 21, 12, 0, tzinfo=dt.UTC), exposure_time_s=0.004)
    for i in range(count):
        bgr = np.ascontiguousarray(_scene(h, w, i)[..., ::-1])
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        (folder / f"frame_{i:03d}.jpg").write_bytes(with_exif_jpeg(jpeg.tobytes(), exif))


def test_rgb_frame_reorders_in_place_or_converts():
    for dtype in (np.uint8, np.uint16):
        bgr = np.arange(45 * 7 * 3, dtype=dtype).reshape(45, 7, 3)  # rows not a strip multiple
        expected = bgr[..., ::-1].copy()
        out = rgb_frame(bgr)
        assert out is bgr and out.dtype == dtype and np.array_equal(out, expected)
    frozen = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    frozen.setflags(write=False)
    copy = rgb_frame(frozen)
    assert copy is not frozen and np.array_equal(copy, frozen[..., ::-1])
    grey = np.full((3, 4), 9, np.uint8)
    assert rgb_frame(grey).shape == (3, 4, 3)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0] = 200  # blue
    assert rgb_frame(bgra).shape == (2, 2, 3) and rgb_frame(bgra)[0, 0, 2] == 200
    with pytest.raises(TypeError, match="float32"):
        rgb_frame(np.zeros((2, 2, 3), np.float32))


def test_replay_delivers_8_bit_frames_with_one_full_size_buffer(tmp_path):
    _write_jpegs(tmp_path / "src", 1, 1200, 2600)
    camera = ReplayCamera(tmp_path / "src")
    asyncio.run(camera.configure())
    frame, peak = _peak_bytes(asyncio.run, camera.capture())
    assert frame.pixels.dtype == np.uint8 and frame.metadata.bit_depth == 8
    # the decoded array is the frame: no RGB copy, no widening to 16 bits (which took 5x)
    assert peak < 1.5 * frame.pixels.nbytes
    reference = cv2.imread(str(camera._files[0]))[..., ::-1]
    assert np.array_equal(frame.pixels, reference)


def test_focus_score_reduces_before_converting_to_float():
    pixels = _scene(1200, 2600)
    score, peak = _peak_bytes(focus_score, pixels)
    # the straightforward way: the central half as float32 (4x its bytes), grey, block means
    crop = pixels[300:900, 650:1950].astype(np.float32) / 255.0
    factor = math.ceil(crop.shape[1] / 640)
    rows, cols = crop.shape[0] // factor, crop.shape[1] // factor
    blocks = crop[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor, 3)
    grey = cv2.cvtColor(blocks.mean(axis=(1, 3)).astype(np.float32), cv2.COLOR_RGB2GRAY)
    expected = float(cv2.Laplacian(grey, cv2.CV_32F, ksize=3).var())
    assert score == pytest.approx(expected, rel=1e-4)
    assert peak < 0.3 * pixels.nbytes  # the float copy of the window alone is 1x


def test_encode_jpeg_makes_no_full_size_copy_and_leaves_the_frame_as_it_was():
    pixels = _scene(900, 1600)
    original = pixels.copy()
    jpeg, peak = _peak_bytes(encode_jpeg, pixels, 90)
    assert np.array_equal(pixels, original)  # reordered for the encoder and back
    assert peak < 0.25 * pixels.nbytes
    ok, reference = cv2.imencode(
        ".jpg", cv2.cvtColor(original, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    assert ok and jpeg == reference.tobytes()
    wide = (original.astype(np.uint16) * 257).astype(np.uint16)
    assert encode_jpeg(wide, 90) == jpeg  # 16 bits narrow to the same 8


def _config():
    cfg = default_config()
    return cfg.model_copy(
        update={"capture": cfg.capture.model_copy(update={"autofocus": False, "hdr": False})}
    )


def test_the_service_keeps_the_reduced_copy_and_lets_written_frames_go(tmp_path):
    _write_jpegs(tmp_path / "src", 4, 540, 2000)
    clock = RealClock()
    camera = ReplayCamera(tmp_path / "src", clock=clock)
    service = CaptureService(camera, buffer=tmp_path / "buffer", clock=clock, config=_config())
    taken: list[weakref.ref] = []
    alive_at_capture: list[int] = []
    capture = camera.capture

    async def watched_capture(settings=None, **kw):
        await service.writer.drain()  # the frames before this one are stored
        alive_at_capture.append(sum(ref() is not None for ref in taken))
        frame = await capture(settings, **kw)
        taken.append(weakref.ref(frame.pixels))
        return frame

    camera.capture = watched_capture  # type: ignore[method-assign]

    async def go():
        await service.open()
        summary = await service.run_session(SessionSpec(interval_s=0.2, max_frames=4, hdr=False))
        latest = service.latest_frame()
        await service.close()
        return summary, latest

    summary, latest = asyncio.run(go())
    assert summary.written == 4
    assert alive_at_capture == [0, 0, 0, 0]  # no stored frame is held while the next is taken
    assert latest is not None and latest.pixels.shape == (259, ANALYSIS_WIDTH, 3)


def _job(pixels: np.ndarray, n: int) -> WriteJob:
    record = FrameRecord(
        path=f"d/frame_{n:06d}.jpg",
        captured_at=dt.datetime(2026, 6, 21, 12, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
        sha256="",  # filled in by the writer
        size_bytes=0,
        session_id="s",
    )
    return WriteJob(pixels, record, "test")


def test_writer_queue_is_bounded_in_bytes(tmp_path):
    frame = np.zeros((100, 100, 3), np.uint8)  # 30 000 bytes
    writer = FrameWriter(
        tmp_path, Catalog(tmp_path / "catalog.sqlite"), maxsize=8, max_bytes=70_000
    )
    depths: list[int] = []

    async def go():
        futures = []
        for n in range(5):
            futures.append(await writer.submit(_job(frame.copy(), n)))
            depths.append(writer.depth)
        await writer.drain()
        return [f.result() for f in futures]

    records = asyncio.run(go())
    writer.close()
    assert all(r is not None for r in records)
    assert max(depths) <= 2  # two frames fit in 70 000 bytes, a third waits
    assert writer.waits >= 1
    big = np.zeros((200, 200, 3), np.uint8)  # larger than the budget: goes alone
    alone = FrameWriter(tmp_path, Catalog(tmp_path / "catalog.sqlite"), max_bytes=70_000)

    async def one():
        fut = await alone.submit(_job(big, 99))
        await alone.drain()
        return fut.result()

    assert asyncio.run(one()) is not None and alone.waits == 0
    alone.close()


def test_the_analysis_works_on_four_buffers_of_its_reduced_luminance():
    pixels = _scene(540, 2000)
    analyse_frame(pixels)  # first calls allocate once for good (numpy's lazy imports)
    analysis, peak = _peak_bytes(analyse_frame, pixels)
    small = analysis.reduced
    plane = small.shape[0] * small.shape[1] * 4  # one float32 image of the reduced copy
    # the reduced copy (kept), then four planes: the luminance with its linear RGB, or the
    # score's work, which overwrites the luminance and reuses its buffers (was six planes)
    assert peak < small.nbytes + 4.5 * plane
    luma = linear_luminance(small)
    assert analysis.metering == meter(luma, 0.98)
    assert analysis.quality_score == image_quality_score(luma.copy())  # consume: same score
    kept = luma.copy()
    assert dataclasses.astuple(quality_components(luma)) == dataclasses.astuple(
        quality_components(kept.copy(), consume=True)
    )
    assert np.array_equal(luma, kept)  # not consumed unless asked


def test_the_jpeg_with_its_exif_is_copied_once():
    pixels = _scene(900, 1600)
    exif = exif_bytes(dt.datetime(2026, 6, 21, 12, 0, tzinfo=dt.UTC), exposure_time_s=0.004)
    data, peak = _peak_bytes(lambda: with_exif_jpeg(encode_jpeg(pixels, 90), exif))
    # the encoder's buffer and the file's bytes (were a copy of the buffer, its tail sliced
    # off for the EXIF, and the file's bytes besides)
    assert peak < 2.3 * len(data)
    ok, reference = cv2.imencode(
        ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    assert ok and data == with_exif_jpeg(reference.tobytes(), exif)
