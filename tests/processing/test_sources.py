"""Frame discovery, metadata, decoding and size fitting (skylapse.processing.sources)."""

from __future__ import annotations

import struct
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from skylapse.imaging import srgb
from skylapse.processing import sources
from skylapse.processing.sources import (
    AspectMismatchError,
    FrameReadError,
    MissingRawSupportError,
    discover_frames,
    fit_to_size,
    read_frame,
    read_gray_reduced,
)


def _exif(
    when: str | None = None,
    subsec: str | None = None,
    orientation: int | None = None,
    exposure: tuple[int, int] | None = None,
    iso: int | None = None,
    f_number: tuple[int, int] | None = None,
    bias: tuple[int, int] | None = None,
) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if when is not None:
        sub[0x9003] = when
    if subsec is not None:
        sub[0x9291] = subsec
    if exposure is not None:
        sub[0x829A] = TiffImagePlugin.IFDRational(*exposure)
    if iso is not None:
        sub[0x8827] = iso
    if f_number is not None:
        sub[0x829D] = TiffImagePlugin.IFDRational(*f_number)
    if bias is not None:
        sub[0x9204] = TiffImagePlugin.IFDRational(*bias)
    return exif.tobytes()


def _rgb8(h: int = 90, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _save(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    Image.fromarray(rgb).save(path, **kwargs)
    return path


def write_dng(
    path: Path, cfa: np.ndarray, white: int = 65535, when: str = "2024:06:01 12:00:00"
) -> Path:
    """A minimal uncompressed RGGB DNG (one little-endian IFD, one strip) whose camera colour
    matrix is sRGB's, so that LibRaw's output equals the CFA values sRGB-encoded."""
    h, w = cfa.shape
    pixels = np.ascontiguousarray(cfa, dtype="<u2").tobytes()
    xyz_to_srgb = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
    entries = [  # (tag, TIFF type, values); sorted by tag as TIFF requires
        (254, 4, [0]),
        (256, 4, [w]),
        (257, 4, [h]),
        (258, 3, [16]),
        (259, 3, [1]),
        (262, 3, [32803]),
        (271, 2, b"Skylapse\0"),
        (272, 2, b"Test\0"),
        (273, 4, None),
        (274, 3, [1]),
        (277, 3, [1]),
        (278, 4, [h]),
        (279, 4, [len(pixels)]),
        (284, 3, [1]),
        (306, 2, when.encode() + b"\0"),
        (33421, 3, [2, 2]),
        (33422, 1, [0, 1, 1, 2]),
        (50706, 1, [1, 4, 0, 0]),
        (50708, 2, b"Skylapse Test\0"),
        (50717, 4, [white]),
        (50721, 10, [(round(v * 10000), 10000) for v in xyz_to_srgb]),
        (50728, 5, [(1, 1)] * 3),
        (50778, 3, [21]),
    ]
    codes = {1: "B", 3: "H", 4: "I", 5: "II", 10: "ii"}
    payloads = []
    for tag, typ, vals in entries:
        if vals is None:
            payloads.append((tag, typ, 1, b"\0\0\0\0"))
        elif typ == 2:
            payloads.append((tag, typ, len(vals), vals))
        elif typ in (5, 10):
            body = b"".join(struct.pack("<" + codes[typ], *v) for v in vals)
            payloads.append((tag, typ, len(vals), body))
        else:
            payloads.append((tag, typ, len(vals), struct.pack(f"<{len(vals)}{codes[typ]}", *vals)))
    data_start = 8 + 2 + 12 * len(entries) + 4
    blobs, where = b"", {}
    for tag, _, _, body in payloads:
        if len(body) > 4:
            where[tag] = data_start + len(blobs)
            blobs += body + b"\0" * (len(body) % 2)
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, body in payloads:
        if tag == 273:
            body = struct.pack("<I", data_start + len(blobs))
        value = struct.pack("<I", where[tag]) if len(body) > 4 else body.ljust(4, b"\0")
        ifd += struct.pack("<HHI", tag, typ, count) + value
    ifd += b"\0\0\0\0"
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + blobs + pixels)
    return path


# --------------------------------------------------------------------------------------------
# discover_frames


def test_order_by_exif_time_then_natural_name(tmp_path: Path) -> None:
    img = _rgb8(18, 32)
    # Names deliberately disagree with capture times.
    _save(tmp_path / "a10.jpg", img, exif=_exif("2024:06:01 12:00:01", "500"))
    _save(tmp_path / "a2.jpg", img, exif=_exif("2024:06:01 12:00:01", "250"))
    _save(tmp_path / "a1.jpg", img, exif=_exif("2024:06:01 12:00:03"))
    _save(tmp_path / "b3.jpg", img, exif=_exif("2024:06:01 12:00:00"))  # tie with b20
    _save(tmp_path / "b20.jpg", img, exif=_exif("2024:06:01 12:00:00"))
    frames, skipped = discover_frames(tmp_path)
    assert skipped == []
    assert [f.path.name for f in frames] == ["b3.jpg", "b20.jpg", "a2.jpg", "a10.jpg", "a1.jpg"]
    assert frames[2].captured_at == datetime(2024, 6, 1, 12, 0, 1, 250000)


def test_frames_without_exif_follow_their_name_predecessor(tmp_path: Path) -> None:
    img = _rgb8(18, 32)
    _save(tmp_path / "f01.jpg", img, exif=_exif("2024:06:01 10:00:00"))
    _save(tmp_path / "f02.jpg", img)  # EXIF lost: belongs between f01 and f03
    _save(tmp_path / "f03.jpg", img, exif=_exif("2024:06:01 10:00:10"))
    _save(tmp_path / "f00.png", img)  # no EXIF and nothing before it: first
    frames, _ = discover_frames(tmp_path)
    assert [f.path.name for f in frames] == ["f00.png", "f01.jpg", "f02.jpg", "f03.jpg"]
    assert frames[2].captured_at is None


def test_no_exif_at_all_is_natural_name_order(tmp_path: Path) -> None:
    img = _rgb8(18, 32)
    for name in ["img10.png", "img9.png", "IMG11.png", "img1.png"]:
        _save(tmp_path / name, img)
    frames, _ = discover_frames(tmp_path)
    assert [f.path.name for f in frames] == ["img1.png", "img9.png", "img10.png", "IMG11.png"]


def test_metadata_and_sizes_from_headers(tmp_path: Path) -> None:
    img = _rgb8(90, 160)
    exif = _exif("2024:06:01 05:30:00", exposure=(1, 125), iso=400, f_number=(28, 10), bias=(-2, 3))
    _save(tmp_path / "a.jpg", img, exif=exif)
    _save(tmp_path / "b.png", img, exif=exif)
    _save(tmp_path / "c.tif", img, exif=exif)
    cv2.imwrite(str(tmp_path / "d.tif"), np.zeros((50, 70, 3), np.uint16))  # 16-bit TIFF
    cv2.imwrite(str(tmp_path / "e.png"), np.zeros((40, 60), np.uint16))  # 16-bit gray PNG
    _save(tmp_path / "r.jpg", img, exif=_exif(orientation=6))  # rotated 90 degrees
    frames, skipped = discover_frames(tmp_path)
    assert skipped == []
    by_name = {f.path.name: f for f in frames}
    for name, fmt in [("a.jpg", "jpeg"), ("b.png", "png"), ("c.tif", "tiff")]:
        info = by_name[name]
        assert info.fmt == fmt
        assert info.size == (160, 90)
        assert info.captured_at == datetime(2024, 6, 1, 5, 30)
        assert info.exposure_time_s == pytest.approx(1 / 125)
        assert info.iso == 400
        assert info.f_number == pytest.approx(2.8)
        assert info.exposure_bias_ev == pytest.approx(-2 / 3)
    assert by_name["d.tif"].size == (70, 50)
    assert by_name["e.png"].size == (60, 40)
    assert by_name["e.png"].captured_at is None and by_name["e.png"].iso is None
    # Sizes are as decoded, i.e. after the EXIF rotation that read_frame applies.
    assert by_name["r.jpg"].size == (90, 160)
    assert read_frame(by_name["r.jpg"].path).shape == (160, 90, 3)


def test_discovery_reads_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = _rgb8(90, 160)
    _save(tmp_path / "a.jpg", img, exif=_exif("2024:06:01 05:30:00"))
    _save(tmp_path / "b.png", img)
    _save(tmp_path / "c.tif", img)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("discover_frames decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    frames, skipped = discover_frames(tmp_path)
    assert len(frames) == 3 and skipped == []


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    img = _rgb8(90, 160)
    _save(tmp_path / "good.jpg", img)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all" * 10)
    whole = _save(tmp_path / "whole.jpg", img).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    png = _save(tmp_path / "p.png", img).read_bytes()
    (tmp_path / "p.png").write_bytes(png[: len(png) - 30])
    tif = _save(tmp_path / "t.tif", img).read_bytes()
    (tmp_path / "t.tif").write_bytes(tif[: len(tif) // 2])
    (tmp_path / "notes.txt").write_text("camera log")
    (tmp_path / "._good.jpg").write_bytes(b"\0" * 10)  # macOS resource fork: ignored
    frames, skipped = discover_frames(tmp_path)
    assert [f.path.name for f in frames] == ["good.jpg", "whole.jpg"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {"empty.jpg", "garbage.png", "cut.jpg", "p.png", "t.tif"}
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["cut.jpg"]
    assert "truncated" in reasons["p.png"]
    assert "truncated" in reasons["t.tif"]
    # A glob reports the files it matched but cannot use.
    _, skipped = discover_frames(str(tmp_path / "*"))
    assert "unsupported" in {s.path.name: s.reason for s in skipped}["notes.txt"]


def test_a_tif_that_holds_other_image_data_is_skipped(tmp_path: Path) -> None:
    img = _rgb8(90, 160)
    _save(tmp_path / "good.jpg", img)
    (tmp_path / "x.tif").write_bytes(_save(tmp_path / "p.png", img).read_bytes())
    (tmp_path / "p.png").unlink()
    frames, skipped = discover_frames(tmp_path)
    assert [f.path.name for f in frames] == ["good.jpg"]
    assert [(s.path.name, s.reason) for s in skipped] == [("x.tif", "not a TIFF file (PNG data)")]


def test_glob_single_file_and_missing_source(tmp_path: Path) -> None:
    img = _rgb8(18, 32)
    (tmp_path / "day1").mkdir()
    (tmp_path / "day2").mkdir()
    _save(tmp_path / "day1" / "f1.jpg", img)
    _save(tmp_path / "day2" / "f1.jpg", img)
    _save(tmp_path / "day2" / "f2.png", img)
    frames, _ = discover_frames(str(tmp_path / "day*" / "*.jpg"))
    assert [f.path.parent.name for f in frames] == ["day1", "day2"]
    frames, _ = discover_frames(str(tmp_path / "**" / "*.png"))
    assert [f.path.name for f in frames] == ["f2.png"]
    frames, _ = discover_frames(tmp_path / "day2" / "f2.png")
    assert len(frames) == 1
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_frames(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# read_frame


def test_read_frame_8bit_formats_rgb_order_and_scaling(tmp_path: Path) -> None:
    img = _rgb8(90, 160)
    img[:10, :10] = (255, 0, 0)  # a red corner proves RGB (not BGR) order
    png = read_frame(_save(tmp_path / "a.png", img))
    assert png.dtype == np.uint16 and png.shape == (90, 160, 3)
    np.testing.assert_array_equal(png, img.astype(np.uint16) * 257)
    tif = read_frame(_save(tmp_path / "a.tif", img))
    np.testing.assert_array_equal(tif, png)
    jpg = read_frame(_save(tmp_path / "a.jpg", img, quality=95))
    assert jpg.dtype == np.uint16
    assert np.abs(jpg.astype(float) - png).mean() < 3 * 257  # lossy, but close
    red = jpg[2:8, 2:8].reshape(-1, 3).mean(axis=0)
    assert red[0] > 55000 and red[1] < 10000 and red[2] < 10000


def test_read_frame_16bit_gray_and_alpha(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb16 = rng.integers(0, 65536, (40, 60, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.tif"), rgb16[:, :, ::-1])  # cv2 writes BGR
    cv2.imwrite(str(tmp_path / "a.png"), rgb16[:, :, ::-1])
    np.testing.assert_array_equal(read_frame(tmp_path / "a.tif"), rgb16)
    np.testing.assert_array_equal(read_frame(tmp_path / "a.png"), rgb16)
    gray16 = rgb16[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray16)
    np.testing.assert_array_equal(read_frame(tmp_path / "g.png"), np.dstack([gray16] * 3))
    rgba = np.dstack([_rgb8(40, 60), np.full((40, 60), 7, np.uint8)])
    _save(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(
        read_frame(tmp_path / "rgba.png"), rgba[:, :, :3].astype(np.uint16) * 257
    )


def test_read_frame_rejects_truncated_and_corrupt_files(tmp_path: Path) -> None:
    img = _rgb8(180, 320)
    data = _save(tmp_path / "a.jpg", img).read_bytes()
    for name, content in [
        ("cut.jpg", data[: int(len(data) * 0.9)]),
        ("empty.jpg", b""),
        ("noise.jpg", b"\xff\xd8" + bytes(range(256)) * 8),
        ("noise.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 100 + b"IEND"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FrameReadError) as caught:
            read_frame(tmp_path / name)
        assert caught.value.path == tmp_path / name
        assert name in str(caught.value)
    with pytest.raises(FrameReadError, match="truncated"):
        read_frame(tmp_path / "cut.jpg")
    with pytest.raises(FrameReadError):
        read_frame(tmp_path / "missing.png")


# --------------------------------------------------------------------------------------------
# read_gray_reduced


def test_read_gray_reduced_shapes_and_consistency_across_formats(tmp_path: Path) -> None:
    img = _rgb8(180, 321)  # odd width: libjpeg rounds the reduced size up
    jpg = _save(tmp_path / "a.jpg", img, quality=95)
    png = _save(tmp_path / "a.png", img)
    expected_gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255
    for factor in (1, 2, 4, 8):
        shape = (-(-180 // factor), -(-321 // factor))
        g_jpg = read_gray_reduced(jpg, factor, linear=False)
        g_png = read_gray_reduced(png, factor, linear=False)
        assert g_jpg.shape == shape and g_png.shape == shape
        assert g_jpg.dtype == np.float32 and g_png.dtype == np.float32
        # libjpeg's grid: factor x factor blocks from the top-left, the last one edge-extended.
        padded = cv2.copyMakeBorder(
            expected_gray,
            0,
            shape[0] * factor - 180,
            0,
            shape[1] * factor - 321,
            cv2.BORDER_REPLICATE,
        )
        area = cv2.resize(padded, shape[::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(g_png - area).max() < 2.5 / 255  # libpng's fixed-point luma
        # DCT scaling vs area averaging of a lossy JPEG: close on average, not bit-exact.
        assert np.abs(g_jpg - area).mean() < 0.01
    with pytest.raises(ValueError, match="factor"):
        read_gray_reduced(png, 3)


def test_read_gray_reduced_linear_is_decoded_srgb(tmp_path: Path) -> None:
    img = np.full((64, 64, 3), 128, np.uint8)
    path = _save(tmp_path / "g.png", img)
    encoded = read_gray_reduced(path, 4, linear=False)
    linear = read_gray_reduced(path, 4)
    assert encoded == pytest.approx(np.full((16, 16), 128 / 255), abs=1e-6)
    assert linear == pytest.approx(np.full((16, 16), 0.21586), abs=1e-4)  # sRGB 128 -> 0.2159
    cv2.imwrite(str(tmp_path / "g16.png"), np.full((64, 64), 32768, np.uint16))
    assert read_gray_reduced(tmp_path / "g16.png", 2) == pytest.approx(0.21404, abs=1e-4)


# --------------------------------------------------------------------------------------------
# DNG


def test_dng_discovery_and_decoding(tmp_path: Path) -> None:
    h, w = 60, 80
    cfa = np.full((h, w), 20000, np.uint16)
    cfa[0::2, 0::2] = 30000  # red photosites brighter: a uniformly reddish scene
    write_dng(tmp_path / "a.dng", cfa)
    frames, skipped = discover_frames(tmp_path)
    assert skipped == []
    assert frames[0].fmt == "dng" and frames[0].size == (w, h)
    assert frames[0].captured_at == datetime(2024, 6, 1, 12, 0)  # DateTime, read by seeking
    rgb = read_frame(tmp_path / "a.dng")
    assert rgb.dtype == np.uint16 and rgb.shape == (h, w, 3)
    # LibRaw output with sRGB primaries, the sRGB curve and no auto-brightening equals
    # the CFA values sRGB-encoded.
    expected = np.rint(srgb.encode(np.array([30000, 20000, 20000]) / 65535) * 65535)
    centre = rgb[20:40, 20:60].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(centre, expected, atol=300)
    gray = read_gray_reduced(tmp_path / "a.dng", 2)
    assert gray.shape == (30, 40)
    lum = 0.299 * expected[0] + 0.587 * expected[1] + 0.114 * expected[2]
    assert float(np.median(gray)) == pytest.approx(float(srgb.decode(lum / 65535)), rel=0.02)
    (tmp_path / "bad.dng").write_bytes(b"II*\0" + b"\0" * 100)
    data = (tmp_path / "a.dng").read_bytes()
    (tmp_path / "cut.dng").write_bytes(data[: len(data) // 2])
    frames, skipped = discover_frames(tmp_path)
    assert [f.path.name for f in frames] == ["a.dng"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {"bad.dng", "cut.dng"} and "truncated" in reasons["cut.dng"]
    with pytest.raises(FrameReadError):
        read_frame(tmp_path / "cut.dng")


def test_dng_without_rawpy_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dng(tmp_path / "a.dng", np.zeros((8, 8), np.uint16))
    monkeypatch.setitem(sys.modules, "rawpy", None)  # makes `import rawpy` fail
    with pytest.raises(MissingRawSupportError, match=r"skylapse\[raw\]"):
        discover_frames(tmp_path)
    with pytest.raises(MissingRawSupportError, match=r"skylapse\[raw\]"):
        read_frame(tmp_path / "a.dng")


# --------------------------------------------------------------------------------------------
# fit_to_size


def test_fit_to_size_scales_same_aspect_and_refuses_other_aspects() -> None:
    frame = np.zeros((360, 640, 3), np.uint16)
    frame[:, 320:] = 40000
    assert fit_to_size(frame, (640, 360)) is frame
    small = fit_to_size(frame, (320, 180))
    assert small.shape == (180, 320, 3) and small.dtype == np.uint16
    assert small[:, :159].max() == 0 and small[:, 161:].min() == 40000
    big = fit_to_size(frame, (1280, 720))
    assert big.shape == (720, 1280, 3)
    assert big[:, :600].max() == 0 and big[:, 680:].min() == 40000
    # 1 px rounding of an odd height is tolerated.
    assert fit_to_size(np.zeros((361, 640, 3), np.uint16), (640, 360)).shape == (360, 640, 3)
    with pytest.raises(AspectMismatchError, match=r"frame_0042\.jpg.*640x480") as caught:
        fit_to_size(np.zeros((480, 640, 3), np.uint16), (1920, 1080), path="x/frame_0042.jpg")
    assert caught.value.path == Path("x/frame_0042.jpg")


def test_dng_is_developed_in_linear_light_with_its_exif_exposure(tmp_path: Path) -> None:
    """A DNG as a station writes it (PiDNG's picamera2 tags, then the frame's EXIF): LibRaw
    develops it in linear light (black level out, as-shot white balance) to the scene's values,
    ``read_frame`` is that sRGB-encoded by the exact curve, and the exposure is the EXIF's exact
    0.3 s, not IFD0's 1/3 s that PiDNG rounds it to."""
    from skylapse.capture.cameras.simulated.raw import bayer_mosaic, dng_bytes
    from skylapse.exif import exif_bytes, with_exif_tiff

    h, w, bits, black = 64, 128, 12, 256
    bands = np.array([[0.02, 0.03, 0.05], [0.1, 0.12, 0.08], [0.4, 0.3, 0.35], [0.8, 0.6, 0.7]])
    scene = np.repeat(bands, w // 4, axis=0)[None].repeat(h, axis=0)  # (h, w, 3) linear
    gains = (2.0, 1.5)  # red, blue: the camera sees scene / gains
    camera = scene / np.array([gains[0], 1.0, gains[1]])
    codes = np.rint(black + camera * (2**bits - 1 - black)).astype(np.uint16)
    raw = dng_bytes(
        bayer_mosaic(codes, "RGGB"),
        pattern="RGGB",
        bit_depth=bits,
        black_level=black,
        wb_gains=gains,
        ccm=np.eye(3),
        exposure_time_s=0.3,
        analogue_gain=2.0,
        timestamp_ns=0,
    )
    (tmp_path / "plain.dng").write_bytes(raw)
    when = datetime(2024, 6, 1, 12, 0, 5)
    exif = exif_bytes(when, exposure_time_s=0.3, iso=200, f_number=2.0, skylapse={"a": 1})
    (tmp_path / "frame.dng").write_bytes(with_exif_tiff(raw, exif))

    assert sources.probe_frame(tmp_path / "plain.dng").exposure_time_s == pytest.approx(1 / 3)
    info = sources.probe_frame(tmp_path / "frame.dng")
    assert (info.exposure_time_s, info.iso, info.f_number) == (0.3, 200, 2.0)
    assert info.captured_at == when and info.size == (w, h)

    linear = sources.read_linear(tmp_path / "frame.dng")
    assert linear.dtype == np.float32 and linear.shape == (h, w, 3)
    centres = linear[h // 2, w // 8 :: w // 4]  # the middle of each band
    np.testing.assert_allclose(centres, bands, rtol=0.01, atol=2e-4)
    encoded = read_frame(tmp_path / "frame.dng")
    np.testing.assert_array_equal(encoded, srgb.from_linear(np.rint(linear * 65535) / 65535))


def test_a_raw_jpeg_pair_is_one_frame_its_dng(tmp_path: Path) -> None:
    write_dng(tmp_path / "f1.dng", np.full((60, 80), 1000, np.uint16))
    rgb = np.zeros((60, 80, 3), np.uint8)
    for name in ("f1.jpg", "f2.jpg", "f3.jpg"):
        _save(tmp_path / name, rgb)
    (tmp_path / "f3.dng").write_bytes(b"II*\0" + b"\0" * 100)  # unreadable: f3.jpg stays
    frames, skipped = discover_frames(tmp_path)
    assert sorted(f.path.name for f in frames) == ["f1.dng", "f2.jpg", "f3.jpg"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert reasons["f1.jpg"] == "its DNG f1.dng is the frame" and set(reasons) == {
        "f1.jpg",
        "f3.dng",
    }
