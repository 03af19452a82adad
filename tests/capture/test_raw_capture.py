"""RAW capture (``capture.raw``): the DNG beside (or instead of) the JPEG, one row per shot."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pytest

from skylapse.capture.cameras import CameraCapability, CameraConfig, CameraError, SimulatedCamera
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.reconcile import reconcile_buffer
from skylapse.capture.service import CaptureService
from skylapse.capture.storage import StorageManager, staging_path
from skylapse.catalog import Catalog
from skylapse.config import ConfigError, parse_config
from skylapse.exif import read_frame_exif, read_skylapse_metadata

NOON = dt.datetime(2024, 3, 20, 12, 0, tzinfo=dt.UTC)
SMALL = CameraConfig(resolution=(320, 180))


def _config(**capture: object):
    return parse_config({"capture": {"autofocus": False, **capture}}, "test")


def _service(tmp_path: Path, camera: SimulatedCamera | None = None, **capture: object):
    clock = SimulatedClock(NOON)
    camera = camera or SimulatedCamera(clock=clock, seed=3)
    return CaptureService(
        camera, buffer=tmp_path, clock=clock, camera_config=SMALL, config=_config(**capture)
    )


def _capture(service: CaptureService, *brackets: bool):
    async def go():
        try:
            return [r for b in brackets for r in await service.capture_now(bracket=b)]
        finally:
            await service.close()

    return asyncio.run(go())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_raw_keeps_a_dng_beside_each_jpeg_as_the_rows_companion(tmp_path):
    import rawpy

    records = _capture(_service(tmp_path, raw=True), False, True)
    assert len(records) == 4  # one frame, then a bracket of three
    for record in records:
        assert record.path.endswith(".jpg")
        (companion,) = record.companions
        assert companion.path == record.path[: -len(".jpg")] + ".dng"
        dng = tmp_path / companion.path
        assert _sha(dng) == companion.sha256 and dng.stat().st_size == companion.size_bytes
        assert _sha(tmp_path / record.path) == record.sha256
        assert record.total_bytes == record.size_bytes + companion.size_bytes
        # the DNG carries the frame's EXIF: the Skylapse record and the exact exposure
        exif = read_frame_exif(dng)
        assert exif["exposure_time_s"] == pytest.approx(record.exposure_time_s, rel=1e-6)
        assert exif["captured_at"] is not None
        assert read_skylapse_metadata(dng) == read_skylapse_metadata(tmp_path / record.path)
        with rawpy.imread(str(dng)) as raw:
            assert raw.raw_image.shape == (180, 320)
    bracket = records[1:]
    assert [Path(r.companions[0].path).name for r in bracket] == [
        "frame_000001_b0.dng",
        "frame_000001_b1.dng",
        "frame_000001_b2.dng",
    ]
    assert read_skylapse_metadata(tmp_path / bracket[2].companions[0].path)["bracket"] == {
        "set": 1,
        "index": 2,
        "ev_offset": 2.0,
    }
    # the camera's staging files are gone; nothing but the frames and the catalog remain
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]
    # the catalog knows every file: a restart finds nothing to reconcile
    catalog = Catalog(tmp_path / "catalog.sqlite")
    assert not reconcile_buffer(tmp_path, catalog).changed()
    assert {c.path for r in records for c in r.companions} <= catalog.all_paths()


def test_without_jpeg_the_dng_is_the_frame(tmp_path):
    (record,) = _capture(_service(tmp_path, raw=True, jpeg=False), False)
    assert record.path.endswith("frame_000000.dng") and record.companions == []
    assert _sha(tmp_path / record.path) == record.sha256
    assert not list(tmp_path.rglob("*.jpg"))
    assert read_skylapse_metadata(tmp_path / record.path)["session_id"] == "20240320-manual"


def test_jpeg_and_raw_cannot_both_be_off():
    with pytest.raises(ConfigError, match="at least one must be true"):
        _config(jpeg=False)
    assert not _config().capture.raw and _config().capture.jpeg


class _NoRawCamera(SimulatedCamera):
    async def configure(self, config: CameraConfig | None = None) -> None:
        await super().configure(config)
        self._capabilities = self._capabilities - {CameraCapability.RAW_DNG}


def test_a_camera_without_raw_refuses_to_open_with_raw_on(tmp_path):
    service = _service(tmp_path, _NoRawCamera(clock=SimulatedClock(NOON)), raw=True)
    with pytest.raises(CameraError, match=r"capture\.raw"):
        asyncio.run(service.open())


def test_raw_cannot_change_while_open(tmp_path):
    service = _service(tmp_path, raw=True)
    asyncio.run(service.open())
    with pytest.raises(ValueError, match=r"capture\.raw"):
        service.apply_config(_config(raw=False))
    service.apply_config(_config(raw=True, jpeg=False))  # jpeg may change: next frame
    assert not service.config.capture.jpeg


def test_retention_deletes_the_companion_with_its_frame(tmp_path):
    records = _capture(_service(tmp_path, raw=True), False)
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.set_transfer_state([records[0].stored_id], "verified", when=NOON)
    storage = StorageManager(tmp_path, catalog, retention=dt.timedelta(hours=1))
    report = storage.enforce(NOON + dt.timedelta(hours=2))
    assert report.retention_deleted == 1
    assert report.freed_bytes == records[0].total_bytes
    assert not (tmp_path / records[0].path).exists()
    assert not (tmp_path / records[0].companions[0].path).exists()


def test_a_resend_asked_for_a_companion_requeues_its_frame(tmp_path):
    (record,) = _capture(_service(tmp_path, raw=True), False)
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.set_transfer_state([record.stored_id], "verified", when=NOON)
    assert catalog.requeue_paths([record.companions[0].path]) == 1
    assert catalog.get_frame(record.stored_id).transfer_state == "pending"


def test_a_staged_dng_left_by_a_crash_is_removed_at_start(tmp_path):
    staged = staging_path(tmp_path / "2024-03-20" / "s" / "frame_000000.dng")
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"II*\x00" + bytes(64))  # as the camera wrote it: no Skylapse EXIF
    report = reconcile_buffer(tmp_path, Catalog(tmp_path / "catalog.sqlite"))
    assert report.removed_temps == [staged.relative_to(tmp_path).as_posix()]
    assert not staged.exists()


def test_dng_pixels_are_unchanged_by_the_exif(tmp_path):
    """The writer appends EXIF to the camera's DNG; the raw data LibRaw reads is the same."""
    import rawpy

    clock = SimulatedClock(NOON)
    camera = SimulatedCamera(clock=clock, seed=3)
    asyncio.run(camera.configure(CameraConfig(resolution=(320, 180), raw=True)))
    from skylapse.capture.cameras import CaptureSettings

    plain = tmp_path / "plain.dng"
    asyncio.run(camera.capture(CaptureSettings(exposure_time_s=0.01, dng_path=plain)))
    from skylapse.exif import exif_bytes, with_exif_tiff

    tagged = tmp_path / "tagged.dng"
    tagged.write_bytes(
        with_exif_tiff(
            plain.read_bytes(), exif_bytes(NOON, exposure_time_s=0.01, skylapse={"a": 1})
        )
    )
    with rawpy.imread(str(plain)) as a, rawpy.imread(str(tagged)) as b:
        assert np.array_equal(a.raw_image, b.raw_image)
        assert a.camera_whitebalance == b.camera_whitebalance
    assert read_skylapse_metadata(tagged) == {"a": 1} and read_skylapse_metadata(plain) == {}
