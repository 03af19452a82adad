"""Fault and abuse suite, ingest: what a misbehaving or hostile station can put in its inbox.

Each test reproduces an attack from issue 14 (items 3 and 11) and checks that ingest sets the
bad input aside with a reason and goes on with everything else:

* a decompression bomb (a tiny file whose header claims a huge image) is refused from its
  header, before any decoding, and the scan stays within a memory bound;
* frames whose Skylapse record has fields of the wrong type, and manifests that are not valid,
  are quarantined instead of stopping the scan for every station after them;
* symbolic links a station makes (its folder, its ``.manifests``, a manifest, a frame, the
  ``.resend`` list) are never followed: nothing outside the station's folder is read, moved or
  written.

Scans that may decode a bomb run in a child process under an address-space cap, so a regression
fails the test instead of taking the machine's memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from skylapse.catalog import ProcessingCatalog
from skylapse.config import DEFAULT_MAX_FRAME_PIXELS, ConfigError, parse_config
from skylapse.exif import exif_bytes, with_exif_jpeg
from skylapse.processing.ingest import Ingestor

T0 = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)
PEAK_RSS_LIMIT_MB = 300  # issue 14: a bomb in one inbox leaves the others ingested under this
LARGEST_SENSOR = (4656, 3496)  # IMX519, 16 MP: the largest shipped camera profile


# -- building inboxes ---------------------------------------------------------------------------


def jpeg(i: int = 0, size: tuple[int, int] = (64, 48), **record: Any) -> bytes:
    """A JPEG frame as the capture side writes it, with ``record`` as its Skylapse metadata."""
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    img = np.empty((height, width, 3), np.uint8)
    img[...] = (ramp[None, :, None] + 7 * i) % 256
    ok, enc = cv2.imencode(".jpg", img)
    assert ok
    when = T0 + timedelta(seconds=30 * i)
    meta = {"session_id": "evening", "phase": "day", "camera": "simulated", **record}
    return with_exif_jpeg(enc.tobytes(), exif_bytes(when, exposure_time_s=1 / 250, skylapse=meta))


def commit(station_dir: Path, files: dict[str, bytes], name: str = "b1") -> Path:
    """Write ``files`` into a station's folder and commit them with a manifest."""
    lines = []
    for rel, data in files.items():
        (station_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (station_dir / rel).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
    manifest = station_dir / ".manifests" / f"{name}.sha256"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(lines))
    return manifest


def _sof_offset(data: bytes) -> int:
    """Offset of the height field of a baseline JPEG's SOF0 segment."""
    i = 2
    while data[i + 1] != 0xC0:
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return i + 5


def bomb(fmt: str, width: int = 14000, height: int = 14000) -> bytes:
    """A tiny image file whose header claims ``width`` x ``height`` pixels."""
    small = np.full((64, 64, 3), 128, np.uint8)
    ok, enc = cv2.imencode(f".{fmt}", small)
    assert ok
    data = bytearray(enc.tobytes())
    if fmt == "jpg":
        struct.pack_into(">HH", data, _sof_offset(data), height, width)
    elif fmt == "png":  # IHDR is the first chunk; its CRC covers type and data
        struct.pack_into(">II", data, 16, width, height)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    else:  # little-endian TIFF: ImageWidth (256) and ImageLength (257) in IFD0
        (ifd,) = struct.unpack_from("<I", data, 4)
        (count,) = struct.unpack_from("<H", data, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind = struct.unpack_from("<HH", data, entry)
            if tag in (256, 257):
                value = width if tag == 256 else height
                struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, value)
    return bytes(data)


def new_ingestor(root: Path, **kwargs: Any) -> Ingestor:
    catalog = ProcessingCatalog(root / "processing.db")
    return Ingestor(root / "inbox", root / "store", root / "quarantine", catalog, **kwargs)


_CHILD_SCAN = """
import json, resource, sys
from pathlib import Path
cap = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from skylapse.catalog import ProcessingCatalog
from skylapse.processing.ingest import Ingestor
root = Path(sys.argv[1])
ingestor = Ingestor(root / "inbox", root / "store", root / "quarantine",
                    ProcessingCatalog(root / "processing.db"))
try:
    report = ingestor.scan()
    out = {"ingested": report.ingested, "quarantined": report.quarantined}
except BaseException as exc:
    out = {"error": f"{type(exc).__name__}: {exc}"}
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so it would report the (large)
# test process this interpreter was forked from; VmHWM belongs to this process's own memory
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def scan_in_child(root: Path, cap_bytes: int = 1536 << 20) -> dict[str, Any]:
    """One ingest scan of ``root/inbox`` in a fresh interpreter limited to ``cap_bytes`` of
    address space; its report and its peak resident set size (``VmHWM``) in MB."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_SCAN, str(root), str(cap_bytes)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- item 3: one bad frame must not stop ingest -------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "side"),
    [
        ("jpg", 14000),  # issue 14: 1.8 GB per scan, and Pillow's DecompressionBombError
        ("jpg", 20000),  # 3.6 GB
        ("jpg", 6000),  # over the limit but under Pillow's own guard: decoded in full today
        ("png", 14000),
        ("tif", 14000),
    ],
)
def test_bomb_frame_is_refused_from_its_header_and_other_stations_are_ingested(
    tmp_path, fmt, side, record_property
):
    inbox = tmp_path / "inbox"
    # the bomb's station sorts first, and a good frame follows the bomb in the same manifest
    commit(inbox / "a-bomb", {f"f000.{fmt}": bomb(fmt, side, side), "f001.jpg": jpeg(1)})
    commit(inbox / "b-good", {"f000.jpg": jpeg(2, LARGEST_SENSOR), "f001.jpg": jpeg(3)})
    commit(inbox / "c-good", {"f000.jpg": jpeg(4)})

    out = scan_in_child(tmp_path)

    record_property("peak_rss_mb", out["peak_rss_mb"])
    print(f"ingest scan with a {side}x{side} {fmt} bomb: peak RSS {out['peak_rss_mb']:.0f} MB")
    assert "error" not in out, out["error"]
    assert out["ingested"] == 4  # the frame after the bomb, and the 16 MP frame, too
    reasons = dict(out["quarantined"])
    assert list(reasons) == [f"a-bomb/f000.{fmt}"]
    reason = reasons[f"a-bomb/f000.{fmt}"]
    assert reason.startswith("image header claims") and "not decoded" in reason
    assert f"{DEFAULT_MAX_FRAME_PIXELS:,}" in reason
    if side * side <= 2 * Image.MAX_IMAGE_PIXELS:  # else Pillow refuses it before we see it
        assert f"{side}x{side} = {side * side:,} pixels" in reason
    kept = tmp_path / "quarantine" / "a-bomb" / f"f000.{fmt}"
    assert kept.read_bytes() == bomb(fmt, side, side)  # set aside as it came, with its reason
    assert kept.with_name(kept.name + ".reason").read_text() == reason + "\n"
    assert (tmp_path / "store" / "b-good" / "f000.jpg").is_file()
    assert out["peak_rss_mb"] < PEAK_RSS_LIMIT_MB


def test_pixel_limit_is_the_configured_one(tmp_path):
    commit(tmp_path / "inbox" / "s", {"small.jpg": jpeg(0, (64, 48)), "big.jpg": jpeg(1, (80, 60))})
    report = new_ingestor(tmp_path, max_pixels=64 * 48).scan()
    assert report.ingested == 1
    [(where, reason)] = report.quarantined
    assert where == "s/big.jpg" and "80x60 = 4,800 pixels" in reason and "3,072" in reason


def test_default_pixel_limit_is_the_largest_sensor_and_a_half():
    from skylapse.capture.cameras.profiles import available_profiles, builtin_profile

    sensors = [builtin_profile(name).sensor for name in available_profiles()]
    largest = max(s.width_px * s.height_px for s in sensors)
    assert largest == LARGEST_SENSOR[0] * LARGEST_SENSOR[1]
    assert largest * 3 // 2 == DEFAULT_MAX_FRAME_PIXELS
    assert parse_config({}).processing.max_frame_pixels == DEFAULT_MAX_FRAME_PIXELS


@pytest.mark.parametrize("bad", [0, -5, "many", 2**31])
def test_pixel_limit_is_validated(bad):
    with pytest.raises(ConfigError, match=r"site\.yaml: processing\.max_frame_pixels"):
        parse_config({"processing": {"max_frame_pixels": bad}}, "site.yaml")


@pytest.mark.parametrize(
    "record",
    [
        {"captured_at": 1718996400},  # a number where an ISO 8601 string belongs
        {"captured_at": ["2026-06-21T19:00:00+00:00"]},
        {"phase": {"name": "day"}},
        {"session_id": None, "camera": ["imx519"]},
    ],
)
def test_skylapse_record_of_the_wrong_type_is_quarantined_and_scan_goes_on(tmp_path, record):
    inbox = tmp_path / "inbox"
    commit(inbox / "a", {"bad.jpg": jpeg(0, **record), "good.jpg": jpeg(1)})
    commit(inbox / "b", {"good.jpg": jpeg(2)})
    ingestor = new_ingestor(tmp_path)
    report = ingestor.scan()
    assert report.ingested == 2
    [(where, reason)] = report.quarantined
    field = next(k for k in record if k != "session_id")
    assert where == "a/bad.jpg" and field in reason
    assert (tmp_path / "quarantine" / "a" / "bad.jpg.reason").read_text().strip() == reason
    assert [q.path for q in ingestor.catalog.quarantined()] == ["bad.jpg"]


def test_skylapse_record_that_is_not_a_mapping_is_quarantined(tmp_path):
    ok, enc = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    bad = with_exif_jpeg(enc.tobytes(), exif_bytes(T0, skylapse=["not", "a", "mapping"]))
    commit(tmp_path / "inbox" / "a", {"bad.jpg": bad, "good.jpg": jpeg(1)})
    report = new_ingestor(tmp_path).scan()
    assert report.ingested == 1
    assert "mapping" in dict(report.quarantined)["a/bad.jpg"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\xff\xfe not text \x80\x81\n", "UTF-8"),
        (b"this is not a manifest line\n", "line 1"),
    ],
)
def test_bad_manifest_is_quarantined_and_other_stations_go_on(tmp_path, content, why):
    inbox = tmp_path / "inbox"
    commit(inbox / "a", {"f.jpg": jpeg(0)}, name="b0")
    (inbox / "a" / ".manifests" / "b1.sha256").write_bytes(content)
    commit(inbox / "b", {"f.jpg": jpeg(1)})
    report = new_ingestor(tmp_path).scan()
    assert report.ingested == 2
    [(where, reason)] = report.quarantined
    assert where == "a/.manifests/b1.sha256" and why in reason
    kept = tmp_path / "quarantine" / "a" / ".manifests" / "b1.sha256"
    assert kept.read_bytes() == content
    assert not (inbox / "a" / ".manifests" / "b1.sha256").exists()  # not retried every scan


def test_manifest_that_fails_unexpectedly_is_left_for_the_next_scan_and_others_go_on(tmp_path):
    inbox = tmp_path / "inbox"
    commit(inbox / "a", {"d.jpg/x.jpg": jpeg(0)}, name="b1")
    ingestor = new_ingestor(tmp_path)
    assert ingestor.scan().ingested == 1
    # the station now sends a file where the store already holds a folder of its frames
    (inbox / "a" / "d.jpg").rmdir()
    commit(inbox / "a", {"d.jpg": jpeg(1)}, name="b2")
    commit(inbox / "b", {"f.jpg": jpeg(2)})
    report = ingestor.scan()
    assert report.ingested == 1 and (tmp_path / "store" / "b" / "f.jpg").is_file()
    [(where, error)] = report.failed
    assert where == "a/.manifests/b2.sha256" and "Error" in error
    assert (inbox / "a" / ".manifests" / "b2.sha256").is_file()  # tried again next scan
    assert (inbox / "a" / "d.jpg").is_file()  # nothing lost


# -- item 11: symbolic links a station controls ------------------------------------------------


def test_resend_symlink_is_not_followed(tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    commit(station, {"f.jpg": jpeg(0)})
    (station / "f.jpg").write_bytes(b"damaged in transit")  # checksum mismatch: asks a re-send
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    (station / ".resend").symlink_to(outside)
    report = new_ingestor(tmp_path).scan()
    assert outside.read_text() == "precious\n"
    assert dict(report.quarantined)["peak-1/f.jpg"].startswith("checksum mismatch")
    assert any(".resend" in why for _, why in report.refused)


def test_symlinked_station_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    commit(outside, {"f.jpg": jpeg(0)})
    commit(tmp_path / "inbox" / "good", {"f.jpg": jpeg(1)})
    (tmp_path / "inbox" / "evil").symlink_to(outside, target_is_directory=True)
    report = new_ingestor(tmp_path).scan()
    assert report.ingested == 1
    assert (outside / "f.jpg").is_file() and (outside / ".manifests" / "b1.sha256").is_file()
    assert not (tmp_path / "store" / "evil").exists()
    assert [where for where, _ in report.refused] == ["evil"]


def test_symlinked_manifest_folder_is_refused(tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    station.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    commit(outside, {"f.jpg": jpeg(0)})
    (station / ".manifests").symlink_to(outside / ".manifests", target_is_directory=True)
    report = new_ingestor(tmp_path).scan()
    assert report.manifests == 0 and report.ingested == 0
    assert sorted(os.listdir(outside / ".manifests")) == ["b1.sha256"]  # not renamed to .done
    assert [where for where, _ in report.refused] == ["peak-1/.manifests"]


def test_symlinked_manifest_is_quarantined_unread(tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    commit(station, {"f.jpg": jpeg(0)}, name="real")
    listed = (station / ".manifests" / "real.sha256").read_text()
    outside = tmp_path / "outside.sha256"
    outside.write_text(listed)
    (station / ".manifests" / "real.sha256").unlink()
    (station / ".manifests" / "b1.sha256").symlink_to(outside)
    report = new_ingestor(tmp_path).scan()
    assert report.ingested == 0 and (station / "f.jpg").is_file()
    [(where, reason)] = report.quarantined
    assert where == "peak-1/.manifests/b1.sha256" and "symbolic link" in reason
    assert outside.read_text() == listed


@pytest.mark.parametrize("link", ["f.jpg", "d"])
def test_symlinked_frame_or_subfolder_is_not_followed(tmp_path, link):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    data = jpeg(0)
    (outside / "f.jpg").write_bytes(data)
    station = tmp_path / "inbox" / "peak-1"
    (station / ".manifests").mkdir(parents=True)
    rel = "f.jpg" if link == "f.jpg" else "d/f.jpg"
    (station / link).symlink_to(outside / link if link == "f.jpg" else outside)
    sha = hashlib.sha256(data).hexdigest()
    (station / ".manifests" / "b1.sha256").write_text(f"{sha}  {rel}\n")
    report = new_ingestor(tmp_path).scan()
    assert report.ingested == 0
    assert "symbolic link" in dict(report.quarantined)[f"peak-1/{rel}"]
    assert (outside / "f.jpg").read_bytes() == data
    assert not (tmp_path / "store" / "peak-1").exists()
    assert not (station / ".resend").exists()  # a link is refused, not asked for again


def test_already_ingested_frame_behind_a_symlinked_folder_is_not_deleted(tmp_path):
    station = tmp_path / "inbox" / "peak-1"
    data = jpeg(0)
    commit(station, {"d/f.jpg": data})
    ingestor = new_ingestor(tmp_path)
    assert ingestor.scan().ingested == 1
    # the station re-sends d/f.jpg, but d is now a link to a folder outside the inbox
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "f.jpg").write_bytes(data)
    (station / "d").rmdir()
    (station / "d").symlink_to(outside, target_is_directory=True)
    (station / ".manifests" / "b2.sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  d/f.jpg\n"
    )
    report = ingestor.scan()
    assert report.already_ingested == 1
    assert (outside / "f.jpg").read_bytes() == data


# -- the limit comes from the configuration -----------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow agreeing
def test_skylapse_ingest_reads_the_pixel_limit_from_the_config(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from skylapse.cli import app

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    config = tmp_path / "site.yaml"
    config.write_text("processing:\n  max_frame_pixels: 3072\n")
    data = tmp_path / "data"
    commit(data / "inbox" / "s", {"small.jpg": jpeg(0, (64, 48)), "big.jpg": jpeg(1, (80, 60))})
    result = CliRunner().invoke(app, ["ingest", "--data", str(data), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ingested 1, quarantined 1" in result.output
    assert "3,072" in (data / "quarantine" / "s" / "big.jpg.reason").read_text()
    assert Image.MAX_IMAGE_PIXELS == 3072  # Pillow's own guard: the same limit


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_processing_service_reads_the_pixel_limit_from_the_config(tmp_path, monkeypatch):
    import dataclasses

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    import skylapse.api.processing.app as processing_api
    from skylapse.cli import app
    from tests_support import wait_for

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    monkeypatch.setenv("SKYLAPSE_API_TOKEN", "abuse-token-0123456789")
    built: list[processing_api.ProcessingSettings] = []

    def capture_settings(settings):
        built.append(settings)
        raise ValueError("settings captured; not serving")

    monkeypatch.setattr(processing_api, "create_processing_app", capture_settings)
    config = tmp_path / "site.yaml"
    config.write_text("processing:\n  max_frame_pixels: 3072\n")
    data = tmp_path / "data"
    argv = ["serve", "processing", "--data", str(data), "--config", str(config)]
    CliRunner().invoke(app, argv)
    [settings] = built
    assert settings.processing.max_frame_pixels == 3072
    assert Image.MAX_IMAGE_PIXELS == 3072
    monkeypatch.undo()  # the real create_processing_app; Pillow's limit as it was

    # the service's ingest loop applies it
    commit(data / "inbox" / "s", {"small.jpg": jpeg(0, (64, 48)), "big.jpg": jpeg(1, (80, 60))})
    section = settings.processing.model_copy(
        update={"ingest_every_s": 0.1, "render_after_min": None}
    )
    fast = dataclasses.replace(settings, workers=0, processing=section)
    with TestClient(processing_api.create_processing_app(fast)):
        reason = data / "quarantine" / "s" / "big.jpg.reason"
        wait_for(reason.exists, timeout=30, what="the over-limit frame quarantined")
    assert "80x60 = 4,800 pixels" in reason.read_text()
    assert (data / "store" / "s" / "small.jpg").is_file()
