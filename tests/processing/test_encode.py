"""Video encoding, still-frame writing and output sizes (skylapse.processing.encode)."""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from skylapse.processing.encode import (
    FrameSequenceWriter,
    VideoEncoder,
    parse_size,
    rgb_to_yuv420,
    write_image,
)
from skylapse.processing.sources import read_frame

W, H = 320, 180
KR, KB = 0.2126, 0.0722


def _frames(n: int = 12) -> list[np.ndarray]:
    """Smooth moving colour gradients (encodable, yet every frame different)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = []
    for i in range(n):
        phase = i / n
        r = 0.5 + 0.4 * np.sin(2 * np.pi * (xx / W + phase))
        g = 0.2 + 0.6 * yy / H
        b = 0.5 + 0.4 * np.cos(2 * np.pi * (yy / H - phase))
        frames.append(np.rint(np.dstack([r, g, b]) * 65535).astype(np.uint16))
    return frames


def _yuv_to_rgb16(frame: av.VideoFrame) -> np.ndarray:
    """Exact inverse of BT.709 limited-range 4:2:0 (chroma upsampled by repetition)."""
    bits = 10 if frame.format.name == "yuv420p10le" else 8
    dtype = np.uint16 if bits == 10 else np.uint8
    planes = []
    for i, plane in enumerate(frame.planes):
        rows = np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width]
        rows = rows.astype(np.float64)
        planes.append(rows if i == 0 else np.repeat(np.repeat(rows, 2, 0), 2, 1))
    unit = 1 << (bits - 8)
    y = (planes[0] - 16 * unit) / (219 * unit)
    cb = (planes[1] - 128 * unit) / (224 * unit)
    cr = (planes[2] - 128 * unit) / (224 * unit)
    r = y + 2 * (1 - KR) * cr
    b = y + 2 * (1 - KB) * cb
    g = (y - KR * r - KB * b) / (1 - KR - KB)
    return np.clip(np.dstack([r, g, b]) * 65535, 0, 65535)


def _top_level_atoms(path: Path) -> list[str]:
    data = path.read_bytes()
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return atoms


@pytest.mark.parametrize(
    ("codec", "decoder", "pix_fmt", "tag", "background"),
    [
        ("h265", "hevc", "yuv420p10le", "hvc1", True),
        ("h264", "h264", "yuv420p", "avc1", False),
    ],
)
def test_encode_decode_round_trip(
    tmp_path: Path, codec: str, decoder: str, pix_fmt: str, tag: str, background: bool
) -> None:
    frames = _frames(12)
    out = tmp_path / f"{codec}.mp4"
    with VideoEncoder(
        out, codec=codec, size=(W, H), fps=24.0, crf=18, preset="veryfast", background=background
    ) as video:
        for frame in frames:
            video.write(frame)
    assert video.frames_written == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no .part left
    atoms = _top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")  # faststart

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        assert ctx.name == decoder
        assert (ctx.width, ctx.height) == (W, H)
        assert ctx.pix_fmt == pix_fmt
        assert stream.codec_tag == tag
        assert stream.average_rate == 24
        assert (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range) == (1, 1, 1, 1)
        if codec == "h265":
            assert ctx.profile == "Main 10"
        else:
            assert ctx.profile == "High"
        decoded = list(container.decode(stream))
    assert len(decoded) == 12
    bits = 10 if codec == "h265" else 8
    for source, video_frame in zip(frames, decoded, strict=True):
        assert video_frame.format.name == pix_fmt
        # The codec's loss alone: against the same frame converted but not compressed.
        uncompressed = _yuv_to_rgb16(rgb_to_yuv420(source, bits))
        decoded_rgb = _yuv_to_rgb16(video_frame)
        codec_error = np.abs(decoded_rgb - uncompressed)
        assert codec_error.mean() < (300 if bits == 10 else 450)  # < 0.7 % of full scale
        assert np.percentile(codec_error, 99) < (1500 if bits == 10 else 2000)
        # And the whole trip (4:2:0 chroma of these steep gradients included) stays close.
        assert np.abs(decoded_rgb - source).mean() < 500


def test_rgb_to_yuv420_is_exact_bt709_limited_range() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    rgb[:2, :2] = (65535, 0, 0)  # a pure red chroma block
    rgb[2:, :2] = 32768  # a neutral block
    for bits, dtype in [(10, np.uint16), (8, np.uint8)]:
        frame = rgb_to_yuv420(rgb, bits)
        y = np.frombuffer(frame.planes[0], dtype).reshape(4, -1)[:, :6].astype(float)
        u = np.frombuffer(frame.planes[1], dtype).reshape(2, -1)[:, :3].astype(float)
        v = np.frombuffer(frame.planes[2], dtype).reshape(2, -1)[:, :3].astype(float)
        unit = 1 << (bits - 8)
        lin = rgb.astype(float) / 65535
        y_ref = 16 * unit + 219 * unit * (lin @ [KR, 1 - KR - KB, KB])
        assert np.abs(y - y_ref).max() <= 0.5 + 1e-6
        assert y[2, 0] == round(16 * unit + 219 * unit * 32768 / 65535)
        assert u[1, 0] == 128 * unit and v[1, 0] == 128 * unit  # neutral: no chroma
        # Pure red: Cb = -Kr / (2 (1 - Kb)), Cr = +0.5 (the top of the range).
        assert u[0, 0] == round(128 * unit - 224 * unit * KR / (2 * (1 - KB)))
        assert v[0, 0] == 240 * unit


def test_encoder_rejects_bad_input_and_leaves_no_file_on_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        VideoEncoder(tmp_path / "a.mp4", size=(321, 180))
    with pytest.raises(ValueError, match="codec"):
        VideoEncoder(tmp_path / "a.mp4", codec="vp9", size=(W, H))
    out = tmp_path / "a.mp4"
    with (
        pytest.raises(ValueError, match="fit_to_size"),
        VideoEncoder(out, size=(W, H), preset="ultrafast") as video,
    ):
        video.write(_frames(1)[0])
        video.write(np.zeros((H + 2, W, 3), np.uint16))  # wrong size
    assert list(tmp_path.iterdir()) == []  # aborted: neither the video nor its .part remain
    with pytest.raises(TypeError):
        VideoEncoder(out, size=(W, H), preset="ultrafast").write(np.zeros((H, W, 3), np.float32))


def test_ntsc_frame_rates_are_exact(tmp_path: Path) -> None:
    out = tmp_path / "ntsc.mp4"
    with VideoEncoder(out, codec="h264", size=(64, 36), fps=29.97, preset="ultrafast") as video:
        for _ in range(3):
            video.write(np.zeros((36, 64, 3), np.uint16))
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


def test_frame_sequence_writer(tmp_path: Path) -> None:
    frames = _frames(3)
    with FrameSequenceWriter(tmp_path / "png", "png") as writer:
        paths = [writer.write(f) for f in frames]
    assert [p.name for p in paths] == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    for path, frame in zip(paths, frames, strict=True):
        np.testing.assert_array_equal(read_frame(path), frame)  # 16-bit, lossless
    writer = FrameSequenceWriter(tmp_path / "jpg", "jpeg")
    path = writer.write(frames[0])
    assert path.name == "frame_000001.jpg"
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert np.abs(read_frame(path).astype(float) - frames[0]).mean() < 2 * 257
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["frame_000001.jpg"]
    with pytest.raises(ValueError, match="png"):
        FrameSequenceWriter(tmp_path / "x", "gif")


def test_write_image_gray_and_errors(tmp_path: Path) -> None:
    gray = np.arange(60 * 40, dtype=np.uint16).reshape(40, 60) * 20
    write_image(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED), gray)
    rgb8 = np.zeros((10, 12, 3), np.uint8)
    rgb8[..., 0] = 200
    write_image(tmp_path / "sub" / "r.png", rgb8)  # makes the folder
    np.testing.assert_array_equal(read_frame(tmp_path / "sub" / "r.png")[0, 0], [200 * 257, 0, 0])
    with pytest.raises(ValueError, match="unsupported"):
        write_image(tmp_path / "a.gif", rgb8)
    with pytest.raises(TypeError):
        write_image(tmp_path / "a.png", rgb8.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "sub"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "g.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize(
    ("spec", "source", "expected"),
    [
        (None, (4056, 3040), (4056, 3040)),
        (None, (1921, 1081), (1920, 1080)),
        ("source", (640, 360), (640, 360)),
        ("2160p", (1920, 1080), (3840, 2160)),
        ("1080p", (4056, 3040), (1440, 1080)),  # 4:3 source keeps 4:3
        ("720p", (4056, 3040), (960, 720)),
        ("1080P", (1920, 1080), (1920, 1080)),
        (" 4k ", (1920, 1080), (3840, 2160)),
        ("1080p", (2028, 1520), (1440, 1080)),  # 1440.95 rounds to the nearest even number
        ("1280x720", (4056, 3040), (1280, 720)),
        ("1920 x 1080", (640, 480), (1920, 1080)),
    ],
)
def test_parse_size(spec: str | None, source: tuple[int, int], expected: tuple[int, int]) -> None:
    assert parse_size(spec, source) == expected


@pytest.mark.parametrize("spec", ["big", "1080", "1081p", "1921x1080", "0x0", "-720p", "x720"])
def test_parse_size_rejects_garbage(spec: str) -> None:
    with pytest.raises(ValueError, match=r"size|height|even"):
        parse_size(spec, (1920, 1080))


class _FailingStream:
    """Stands in for the PyAV stream: encodes two frames, then fails like a full disk."""

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self._stream = stream
        self.calls = 0

    def encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        self.calls += 1
        if frame is not None and self.calls > 2:
            raise OSError("No space left on device")
        return self._stream.encode(frame)


@pytest.mark.parametrize("background", [True, False])
def test_encoder_errors_reach_the_producer(tmp_path: Path, background: bool) -> None:
    out = tmp_path / "a.mp4"
    frame = _frames(1)[0]
    video = VideoEncoder(out, codec="h264", size=(W, H), preset="ultrafast", background=background)
    video._stream = _FailingStream(video._stream)  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space"):
        for _ in range(50):  # the error surfaces on a later write (or at close)
            video.write(frame)
        video.close()
    video.abort()
    assert list(tmp_path.iterdir()) == []
