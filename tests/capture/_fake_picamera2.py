"""A stand-in for picamera2's ``Picamera2`` at the library boundary, for the backend's tests.

Modelled on the real API (picamera2/picamera2.py and request.py): ``global_camera_info()``
(static, dicts with Model/Location/Rotation/Id/Num), ``camera_properties['Model']``,
``camera_controls`` (name -> (min, max, default)), ``create_still_configuration(main=, raw=,
...)``, ``configure``, ``start``/``stop``/``close``, ``set_controls``, ``capture_request()``
returning a request with ``make_array('main')`` (RGB888 = B, G, R bytes), ``get_metadata()``,
``save_dng(filename, name='raw')`` and ``release()``, and ``autofocus_cycle(wait=True)``.

Like libcamera, controls take effect late: a ``set_controls`` call is applied only from the
second request after it, so a backend that does not wait for its controls gets stale frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SENSORS: dict[str, dict[str, Any]] = {
    "imx708_wide": {
        "PixelArraySize": (4608, 2592),
        "UnitCellSize": (1400, 1400),
        "af": True,
        "temperature": True,
    },
    "imx519": {
        "PixelArraySize": (4656, 3496),
        "UnitCellSize": (1220, 1220),
        "af": True,
        "temperature": False,
    },
    "imx219": {
        "PixelArraySize": (3280, 2464),
        "UnitCellSize": (1120, 1120),
        "af": False,
        "temperature": False,
    },
}
CONTROL_LATENCY = 2


class FakeRequest:
    def __init__(self, cam: FakePicamera2, metadata: dict[str, Any]) -> None:
        self.cam = cam
        self.metadata = metadata
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        assert not self.released, "request used after release()"
        w, h = self.cam.config[name]["size"]
        # brightness follows exposure x gain; channels distinct so the byte order is testable
        level = self.metadata["ExposureTime"] * self.metadata["AnalogueGain"] / 20000.0
        bgr = np.empty((h, w, 3), np.uint8)
        for ch, base in enumerate((40, 80, 120)):  # B, G, R
            bgr[..., ch] = np.clip(base * level, 0, 255)
        bgr[::4, ::4] = 255  # some texture for the focus score
        return bgr

    def get_metadata(self) -> dict[str, Any]:
        return dict(self.metadata)

    def save_dng(self, filename: str, name: str = "raw") -> None:
        assert not self.released
        assert self.cam.config.get(name) is not None, "no raw stream configured"
        Path(filename).write_bytes(b"II*\x00fake-dng")
        self.cam.saved_dngs.append(filename)

    def release(self) -> None:
        self.released = True
        self.cam.released += 1


class FakePicamera2:
    cameras: ClassVar[list[dict[str, Any]]] = [
        {
            "Model": "imx708_wide",
            "Location": 2,
            "Rotation": 180,
            "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
            "Num": 0,
        },
    ]
    instances: ClassVar[list[FakePicamera2]] = []

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [dict(c) for c in FakePicamera2.cameras]

    def __init__(self, camera_num: int = 0) -> None:
        info = next(c for c in self.cameras if c["Num"] == camera_num)
        spec = SENSORS[info["Model"]]
        self.camera_properties = {
            "Model": info["Model"],
            "PixelArraySize": spec["PixelArraySize"],
            "UnitCellSize": spec["UnitCellSize"],
        }
        self.camera_controls: dict[str, tuple[Any, Any, Any]] = {
            "ExposureTime": (26, 112_015_096, 20000),
            "AnalogueGain": (1.0, 16.0, 1.0),
            "AeEnable": (False, True, True),
            "AwbEnable": (False, True, True),
            "ColourGains": (0.0, 32.0, None),
            "FrameDurationLimits": (33333, 120_000_000, 33333),
        }
        if spec["af"]:
            self.camera_controls |= {"AfMode": (0, 2, 0), "LensPosition": (0.0, 15.0, 1.0)}
        self.has_temperature = spec["temperature"]
        self.configs: list[dict[str, Any]] = []
        self.config: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self.control_log: list[dict[str, Any]] = []
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.state: dict[str, Any] = {
            "ExposureTime": 20000,
            "AnalogueGain": 1.0,
            "ColourGains": (1.8, 1.5),
            "LensPosition": 1.0,
            "AeEnable": True,
            "AwbEnable": True,
            "AfMode": 0,
        }
        self.requests = 0
        self.released = 0
        self.saved_dngs: list[str] = []
        self.af_target = 0.35
        self.af_success = True
        FakePicamera2.instances.append(self)

    def create_still_configuration(
        self,
        main: dict | None = None,
        lores: Any = None,
        raw: dict | None = None,
        buffer_count: int = 1,
        **kwargs: Any,
    ) -> dict[str, Any]:
        main = dict(main or {})
        main.setdefault("size", self.camera_properties["PixelArraySize"])
        main.setdefault("format", "BGR888")
        cfg = {"use_case": "still", "main": main, "lores": lores, "buffer_count": buffer_count}
        cfg["raw"] = (
            None
            if raw is None
            else {"size": self.camera_properties["PixelArraySize"], "format": "SBGGR10_CSI2P"}
        )
        cfg.update(kwargs)
        return cfg

    def configure(self, config: dict[str, Any]) -> None:
        assert not self.started, "configure() while running"
        self.config = config
        self.configs.append(config)

    def start(self) -> None:
        assert self.config, "start() before configure()"
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False
        self.closed = True

    def set_controls(self, controls: dict[str, Any]) -> None:
        for name in controls:
            assert name in self.camera_controls, f"camera has no control {name}"
        self.control_log.append(dict(controls))
        self.pending.append((CONTROL_LATENCY, dict(controls)))

    def capture_request(self) -> FakeRequest:
        assert self.started, "capture_request() while stopped"
        self.requests += 1
        still = []
        for left, controls in self.pending:
            if left <= 1:
                self.state.update(controls)
            else:
                still.append((left - 1, controls))
        self.pending = still
        md = {k: self.state[k] for k in ("ExposureTime", "AnalogueGain", "ColourGains")}
        md["ColourTemperature"] = 5200
        md["SensorTimestamp"] = self.requests * 33_333_000
        if "LensPosition" in self.camera_controls:
            md["LensPosition"] = self.state["LensPosition"]
        if self.has_temperature:
            md["SensorTemperature"] = 41.0
        return FakeRequest(self, md)

    def autofocus_cycle(self, wait: bool = True) -> bool:
        assert self.started and "AfMode" in self.camera_controls
        assert self.state.get("AfMode") == 1 or any(
            c.get("AfMode") == 1 for _, c in self.pending
        ), "AF cycle needs AfMode Auto"
        if self.af_success:
            for _, controls in self.pending:
                self.state.update(controls)
            self.pending.clear()
            self.state["LensPosition"] = self.af_target
        return self.af_success
