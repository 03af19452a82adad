"""A stand-in for picamera2's ``Picamera2`` that behaves like picamera2 + libcamera on a Pi.

Written from the sources, not from hopes. Revisions read (cited below as ``file:line``):

* picamera2  3e6dff099d3982c8fbdb25f7cbe2e4c17bac34f7 (``picamera2/...``)
* libcamera (Raspberry Pi fork) 26bfadc66e8d7f727a993fe58174217b8a96f7f9 (``src/...``)
* sensor mode timing: raspberrypi/linux ``drivers/media/i2c/imx708.c`` (full-resolution mode:
  line_length_pix 0x3d20, pixel_rate 595.2 MHz, vblank_min 58), ``imx519.c`` (0x4200,
  686 MHz, 10 fps), ``imx219.c`` (PPL 3448, 182.4 MHz, VBLANK_MIN 32).

What it models, and where each behaviour comes from:

1. **Camera list and index.** ``global_camera_info()`` sorts libcamera's cameras by Id,
   descending, USB cameras last (picamera2/picamera2.py:296-312); ``Picamera2(n)`` takes an index
   into that sorted list and maps it to libcamera's ``Num`` (picamera2.py:344).
2. **Controls.** ``set_controls`` refuses a control libcamera does not advertise
   (picamera2/controls.py:33). Set controls travel with the *next request queued*
   (picamera2.py:1407-1409, request.py:113-146), i.e. the frame after the one in flight; a
   non-zero ``ExposureTime``/``AnalogueGain`` switches its mode to manual (request.py:128-142).
   The IPA handles AE/AWB mode changes first (src/ipa/rpi/common/ipa_base.cpp:822-888):
   ``AeEnable=False`` freezes what the AGC last chose (src/ipa/rpi/controller/rpi/
   agc_channel.cpp:325-343), ``AwbEnable=False`` freezes the last AWB gains
   (controller/rpi/awb.cpp:177-184); ``ExposureTime``/``AnalogueGain`` are ignored while their
   algorithm runs (ipa_base.cpp:960-1007).
3. **Sensor delays.** Exposure, gain and frame length reach the sensor through DelayedControls,
   whose depth is the largest delay (src/libcamera/delayed_controls.cpp:37, :104;
   pipeline/rpi/common/pipeline_base.cpp:838-845): IMX708 and IMX519 3 frames (vblank),
   IMX219 2 (src/libcamera/sensor/camera_sensor_properties.cpp:197-212, 304-339); metadata
   reports what the sensor used for that frame. ISP-side controls (colour gains, AF mode) act
   on the request's own frame.
4. **Quantisation.** Exposure is a whole number of lines (ipa/rpi/cam_helper/cam_helper.cpp:72-80),
   the frame at least ``exposure lines + frameIntegrationDiff`` long (cam_helper.cpp:81-133;
   48 lines IMX708, 32 IMX519, 4 IMX219); gain is a register code, ``base / (base - code)``
   with base 1024 on IMX708/IMX519 and 256 on IMX219 (cam_helper_imx708.cpp:96-104,
   cam_helper_imx519.cpp:76-84, cam_helper_imx219.cpp:70-78); IMX708's lowest code is 112, so
   its lowest analogue gain is 1.12 (imx708.c IMX708_ANA_GAIN_MIN).
5. **Tuning per sensor.** Stock ``imx708.json`` has an ``rpi.af`` algorithm
   (src/ipa/rpi/vc4/data/imx708.json:686), stock ``imx519.json`` has none. A lens driver makes
   libcamera advertise ``AfMode``/``LensPosition`` anyway (ipa_base.cpp:106-116, 175-177), but
   without the algorithm ``LensPosition`` is ignored (ipa_base.cpp:1412-1425) and neither
   ``LensPosition`` nor ``AfState`` appear in metadata (ipa_base.cpp:1542-1545, 1660-1686), so
   ``autofocus_cycle()`` raises ``KeyError: 'AfState'`` (picamera2.py:2760; job.py:63 hands the
   exception to the caller). AWB colour-temperature curves (``ct_curve``) are the tuning files'
   values (vc4/data/imx708.json:116, imx519.json:115, imx219.json:116), used as test data.
6. **ColourTemperature** is a control only from libcamera v0.4.0 (commit e3783092,
   ipa_base.cpp:101); it is reported in metadata on every version (ipa_base.cpp:1612-1617);
   ``libcamera_version`` chooses. Setting it clamps to the curve and sets gains
   ``1 / ct_curve(T)`` (awb.cpp:232-250).
7. **One completed request held back.** With ``buffer_count > 1`` picamera2 keeps the newest
   completed request (picamera2.py:1246-1252, 1477-1479): ``capture_request()`` returns it at
   once even if it was exposed before the call. ``flush=True`` (the call's
   ``time.monotonic_ns()``) or a timestamp drops requests whose exposure started earlier,
   exposure start being ``SensorTimestamp - ExposureTime`` (picamera2.py:1552-1563,
   1855-1865); a timestamp still ahead leaves the job queued, tried again on every request
   that completes until one started at or after it (picamera2.py:1456-1462, job.py:52-56),
   so the caller waits for that frame. ``SensorTimestamp`` is the V4L2 buffer timestamp
   (src/libcamera/pipeline/rpi/vc4/vc4.cpp:829-833, v4l2_videodevice.cpp:1899), which V4L2
   capture drivers take on CLOCK_MONOTONIC (V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC), as picamera2's
   comparison with ``time.monotonic_ns()`` assumes; control_ids_core.yaml:778-786 documents
   CLOCK_BOOTTIME, which differs only by time spent suspended. Here: ``clock.monotonic_ns()``.
8. **AE and AWB run when enabled**: the AGC moves toward the scene's exposure with the tuning's
   speed (0.15, instant for 5 start-up frames: vc4/data/imx708.json:293-295;
   agc_channel.cpp:848-880),
   splitting it by the "normal" exposure profile (imx708.json:236-237); the AWB moves to the
   scene's gains (speed 0.05 after 10 start-up frames: awb.cpp:76-78, 298-322).

Time: each instance runs on ``FakePicamera2.clock`` (``VirtualTime``: ``sleep`` advances it, so a
20 s exposure costs nothing; ``RealTime`` for end-to-end runs on the real clock). Frames follow
each other back to back; a frame completes after its readout (mode height x line time).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

PICAMERA2_COMMIT = "3e6dff099d3982c8fbdb25f7cbe2e4c17bac34f7"
LIBCAMERA_COMMIT = "26bfadc66e8d7f727a993fe58174217b8a96f7f9"

# libcamera enum values (src/libcamera/control_ids_core.yaml)
AF_MODE_MANUAL, AF_MODE_AUTO = 0, 1
AF_TRIGGER_START = 0
AF_IDLE, AF_SCANNING, AF_FOCUSED, AF_FAILED = 0, 1, 2, 3


@dataclass(frozen=True)
class Sensor:
    """One sensor's full-resolution mode, helper constants and stock tuning (module docstring)."""

    model: str
    pixel_array: tuple[int, int]
    unit_cell: tuple[int, int]
    line_ns: float  # line_length_pix / pixel_rate
    min_frame_lines: int
    integration_diff: int  # CamHelper frameIntegrationDiff
    gain_base: int
    gain_codes: tuple[int, int]
    delay: int  # DelayedControls depth: max(exposure, gain, vblank, hblank) delays
    max_exposure_us: int
    temperature: bool  # embedded data carries a temperature
    ct_curve: tuple[float, ...]  # tuning rpi.awb ct_curve: (K, r/g, b/g) triples
    af_map: tuple[float, float] | None  # tuning rpi.af lens range (dioptres); None: no rpi.af
    lens: bool  # a lens driver is linked (VCM)

    @property
    def height(self) -> int:
        return self.pixel_array[1]

    def gain(self, code: int) -> float:
        return self.gain_base / (self.gain_base - code)

    def gain_code(self, gain: float) -> int:
        lo, hi = self.gain_codes
        return min(max(int(self.gain_base - self.gain_base / gain), lo), hi)


SENSORS: dict[str, Sensor] = {
    "imx708_wide": Sensor(
        "imx708_wide", (4608, 2592), (1400, 1400), 15648 / 595.2e6 * 1e9, 2592 + 58, 48,
        1024, (112, 960), 3, 112_015_096, True,
        (2498.0, 0.8733, 0.2606, 2821.0, 0.7707, 0.3245, 2925.0, 0.7338, 0.3499,
         3578.0, 0.6038, 0.4516, 4485.0, 0.5113, 0.5368, 5753.0, 0.4274, 0.6246,
         7433.0, 0.3723, 0.6881),
        (0.0, 15.0), True,
    ),
    "imx519": Sensor(
        "imx519", (4656, 3496), (1220, 1220), 16896 / 686e6 * 1e9, 4060, 32,
        1024, (0, 960), 3, 206_000_000, False,
        (2890.0, 0.7328, 0.3734, 3550.0, 0.6228, 0.4763, 4500.0, 0.5208, 0.5825,
         5700.0, 0.4467, 0.6671, 7900.0, 0.3858, 0.7411),
        None, True,
    ),
    "imx219": Sensor(
        "imx219", (3280, 2464), (1120, 1120), 3448 / 182.4e6 * 1e9, 2464 + 32, 4,
        256, (0, 232), 2, 11_767_556, False,
        (2498.0, 0.9309, 0.3599, 2911.0, 0.8682, 0.4283, 2919.0, 0.8358, 0.4621,
         3627.0, 0.7646, 0.5327,
         4600.0, 0.6079, 0.6721, 5716.0, 0.5712, 0.7017, 8575.0, 0.4331, 0.8037),
        None, False,
    ),
}  # fmt: skip
SENSORS["imx708"] = replace(SENSORS["imx708_wide"], model="imx708")
#: AGC "normal" exposure profile (vc4/data/imx708.json:236-237): shutter µs and gain stages
SHUTTER_STAGES = (100, 15000, 30000, 60000, 66666)
GAIN_STAGES = (1.0, 1.0, 2.0, 4.0, 16.0)
AGC_SPEED, AGC_STARTUP = 0.15, 5
AWB_SPEED, AWB_STARTUP = 0.05, 10


def ct_curve_eval(curve: tuple[float, ...], kelvin: float) -> tuple[float, float]:
    """(r/g, b/g) of the tuning's curve at ``kelvin``, clamped to its domain (awb.cpp:239)."""
    ks, rs, bs = curve[0::3], curve[1::3], curve[2::3]
    k = min(max(kelvin, ks[0]), ks[-1])
    return float(np.interp(k, ks, rs)), float(np.interp(k, ks, bs))


class VirtualTime:
    """A monotonic clock that only moves when slept on."""

    def __init__(self, start_ns: int = 1_000_000_000_000) -> None:
        self.ns = start_ns

    def monotonic_ns(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += max(0, math.ceil(seconds * 1e9))


class RealTime:
    """The real monotonic clock (picamera2 compares SensorTimestamp with time.monotonic_ns)."""

    monotonic_ns = staticmethod(time.monotonic_ns)
    sleep = staticmethod(time.sleep)


@dataclass
class _Frame:
    index: int
    sof_ns: int  # start of readout = SensorTimestamp
    done_ns: int  # readout finished: the request completes
    exposure_us: float
    gain: float
    colour_gains: tuple[float, float]
    colour_temperature: float
    lens: float | None
    af_state: int | None
    frame_us: float
    metadata: dict[str, Any] = field(default_factory=dict)


class FakeRequest:
    """picamera2's CompletedRequest (request.py:87-185) for one frame."""

    def __init__(self, cam: FakePicamera2, frame: _Frame) -> None:
        self.cam = cam
        self.frame = frame
        self.released = False

    def get_metadata(self) -> dict[str, Any]:
        assert not self.released, "request used after release()"
        return dict(self.frame.metadata)

    def make_array(self, name: str) -> np.ndarray:
        assert not self.released, "request used after release()"
        cfg = self.cam.config.get(name)
        if cfg is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self.cam.render(self.frame, tuple(cfg["size"]))

    def save_dng(self, filename: str, name: str = "raw") -> None:
        assert not self.released
        if self.cam.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        Path(filename).write_bytes(b"II*\x00fake-dng")
        self.cam.saved_dngs.append(filename)

    def release(self) -> None:
        assert not self.released, "CompletedRequest: lock now has negative ref_count"
        self.released = True
        self.cam.released += 1


class FakePicamera2:
    """See the module docstring. Class attributes configure the next instances (tests set them
    with monkeypatch): ``cameras`` in libcamera's order, ``libcamera_version``, ``clock``."""

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
    libcamera_version: ClassVar[tuple[int, int]] = (0, 5)
    clock: ClassVar[Any] = None  # None: a VirtualTime per instance

    # the scene in front of the lens
    scene_exposure_us: float = 20000.0  # exposure x gain that metering aims for
    scene_kelvin: float = 5200.0
    af_target: float = 0.35  # where the scene is sharp (dioptres)
    af_success: bool = True
    af_scan_frames: int = 6

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        cams = [dict(c) for c in FakePicamera2.cameras]
        return sorted(cams, key=lambda c: ("/usb" not in c["Id"], c["Id"]), reverse=True)

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        """The stock tuning (version 2 layout) of a sensor we model (picamera2.py:249-277)."""
        sensor = SENSORS.get(tuning_file.removesuffix(".json"))
        if sensor is None:
            raise RuntimeError("Tuning file not found")
        algorithms: list[dict[str, Any]] = [{"rpi.awb": {"ct_curve": list(sensor.ct_curve)}}]
        if sensor.af_map is not None:
            algorithms.append({"rpi.af": {"map": [sensor.af_map[0], 445, sensor.af_map[1], 925]}})
        return {"version": 2.0, "target": "bcm2835", "algorithms": algorithms}

    @staticmethod
    def find_tuning_algo(tuning: dict[str, Any], name: str) -> dict[str, Any]:
        """As picamera2.py:280-293, including its StopIteration when the algorithm is absent."""
        return next(algo for algo in tuning["algorithms"] if name in algo)[name]

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        info = self.global_camera_info()[camera_num]  # IndexError like the real one
        self.camera_idx = info["Num"]
        self.time = FakePicamera2.clock or VirtualTime()
        usb = "/usb" in info["Id"]
        self.sensor = None if usb else SENSORS[info["Model"]]
        self.camera_properties: dict[str, Any] = {"Model": info["Model"]}
        self.camera_controls: dict[str, tuple[Any, Any, Any]] = {}
        if self.sensor is not None:
            self._init_csi(self.sensor)
        self.config: dict[str, Any] = {}
        self.configs: list[dict[str, Any]] = []
        self.started = self.closed = False
        self.control_log: list[dict[str, Any]] = []
        self.requests = self.released = 0
        self.saved_dngs: list[str] = []
        self.returned: list[dict[str, Any]] = []  # metadata of every request handed out
        self._pre_start: dict[str, Any] = {}
        FakePicamera2.instances.append(self)

    def _init_csi(self, s: Sensor) -> None:
        self.camera_properties |= {
            "PixelArraySize": s.pixel_array,
            "UnitCellSize": s.unit_cell,
            "ColorFilterArrangement": 0,
        }
        line_us = s.line_ns / 1000
        min_frame_us = round(s.min_frame_lines * line_us)
        self.camera_controls = {
            "AeEnable": (False, True, True),
            "ExposureTime": (int(line_us), s.max_exposure_us, 20000),
            "AnalogueGain": (s.gain(s.gain_codes[0]), s.gain(s.gain_codes[1]), 1.0),
            "FrameDurationLimits": (min_frame_us, s.max_exposure_us + 50_000, min_frame_us),
            "AwbEnable": (False, True, None),
            "ColourGains": (0.0, 32.0, None),
            "ExposureValue": (-8.0, 8.0, 0.0),
        }
        if self.libcamera_version >= (0, 4):
            self.camera_controls["ColourTemperature"] = (100, 100000, None)
        if s.lens:
            lo, hi = s.af_map or (0.0, 32.0)  # ipa_base.cpp:115 default without rpi.af
            self.camera_controls |= {
                "AfMode": (0, 2, 0),
                "AfTrigger": (0, 1, 0),
                "LensPosition": (lo, hi, 1.0),
            }

    # -- configuration ------------------------------------------------------------------------
    def create_still_configuration(
        self,
        main: dict | None = None,
        lores: Any = None,
        raw: dict | None = {},  # noqa: B006 - picamera2's own default (picamera2.py:831)
        buffer_count: int = 1,
        controls: dict | None = None,
        queue: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        size = self.camera_properties.get("PixelArraySize", (640, 480))
        main = {"format": "BGR888", "size": size} | dict(main or {})
        raw_cfg = None if raw is None else {"size": size, "format": "SBGGR10_CSI2P"}
        return {
            "use_case": "still",
            "main": main,
            "lores": lores,
            "raw": raw_cfg,
            "buffer_count": buffer_count,
            "queue": queue,
            # picamera2.py:863-865: stills let the frame rate span the sensor's whole range
            "controls": {"FrameDurationLimits": (100, 1_000_000_000)} | dict(controls or {}),
            **kwargs,
        }

    def configure(self, config: dict[str, Any]) -> None:
        assert not self.started, "configure() while running"
        self.config = config
        self.configs.append(config)
        self._max_queue_len = 1 if config.get("queue", True) and config["buffer_count"] > 1 else 0

    def start(self) -> None:
        assert self.config, "start() before configure()"
        s = self.sensor
        assert s is not None, "the fake streams CSI sensors only"
        self.started = True
        self._n = 0  # next frame to complete
        self._last_sof = self.time.monotonic_ns()
        self._held: _Frame | None = None
        self._sensor_queue: dict[int, tuple[int, int, int]] = {}
        # the configuration's controls and any set before start go with the first request
        self._requests_pending = {0: dict(self.config["controls"]) | self._pre_start}
        self._pre_start = {}
        # IPA state (ipa_base.cpp:226-248 start values: 20 ms, gain 1)
        self._ae_exposure_auto = self._ae_gain_auto = True
        self._fixed_exposure_us, self._fixed_gain = 0.0, 0.0
        self._agc = (20000.0, 1.0)  # the AGC's current output (exposure µs, gain)
        self._frame_limits = self._limits(self.config["controls"]["FrameDurationLimits"])
        self._awb_auto = True
        self._awb_gains = self._scene_gains()
        self._awb_kelvin = self.scene_kelvin
        self._af_mode = AF_MODE_MANUAL
        self._af_scan_left = 0
        self._af_state = AF_IDLE
        self._lens = 1.0 if s.af_map else None  # af default position (ipa_base.cpp:339-348)
        self._sensor_now = self._sensor_values(20000.0, 1.0)
        self._frames_seen = 0

    def stop(self) -> None:
        self.started = False
        self._held = None

    def close(self) -> None:
        self.started = False
        self.closed = True

    # -- controls ---------------------------------------------------------------------------
    def set_controls(self, controls: dict[str, Any]) -> None:
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self.control_log.append(dict(controls))
        if not self.started:  # applied with the first requests at start()
            self._pre_start.update(controls)
            return
        self._advance(self.time.monotonic_ns())
        # they ride on the next request queued: the frame after the one in flight
        self._requests_pending.setdefault(self._n + 1, {}).update(controls)

    def _limits(self, limits: tuple[int, int]) -> tuple[float, float]:
        lo, hi, _ = self.camera_controls["FrameDurationLimits"]
        a = min(max(limits[0], lo), hi)
        return a, max(a, min(max(limits[1], lo), hi))  # ipa_base.cpp:1766-1778

    def _apply_request(self, c: dict[str, Any]) -> None:
        """The IPA's handling of one request's controls (ipa_base.cpp:799-1425), in its order."""
        s = self.sensor
        assert s is not None
        if "AfMode" in c and s.af_map is not None:
            self._af_mode = c["AfMode"]
            if self._af_mode != AF_MODE_AUTO:
                self._af_scan_left, self._af_state = 0, AF_IDLE
        exp_mode = gain_mode = None
        if "AeEnable" in c:  # camera.cpp:1281-1300: AeEnable becomes the two modes
            exp_mode = gain_mode = bool(c["AeEnable"])
        if c.get("ExposureTime"):  # request.py:128-134
            exp_mode = False
        if c.get("AnalogueGain"):  # request.py:136-142
            gain_mode = False
        if exp_mode is not None and exp_mode != self._ae_exposure_auto:
            self._ae_exposure_auto = exp_mode
            self._fixed_exposure_us = 0.0 if exp_mode else self._agc[0]  # freeze (agc:325)
        if gain_mode is not None and gain_mode != self._ae_gain_auto:
            self._ae_gain_auto = gain_mode
            self._fixed_gain = 0.0 if gain_mode else self._agc[1]  # freeze (agc:340)
        if "AwbEnable" in c:
            if not c["AwbEnable"] and self._awb_auto:
                self._awb_auto = False  # awb.cpp:177-184: the last gains stay
            elif c["AwbEnable"]:
                self._awb_auto = True
        if "ColourGains" in c:
            r, b = c["ColourGains"]
            if r and b:  # awb.cpp:209-230, with the temperature the curves give for them
                self._awb_auto, self._awb_gains = False, (float(r), float(b))
                ks, rs, bs = s.ct_curve[0::3], s.ct_curve[1::3], s.ct_curve[2::3]
                k_r = np.interp(1 / r, rs[::-1], ks[::-1])
                k_b = np.interp(1 / b, bs, ks)
                self._awb_kelvin = float(k_r + k_b) / 2
            else:
                self._awb_auto = True
        if "ColourTemperature" in c:
            k = min(max(float(c["ColourTemperature"]), s.ct_curve[0]), s.ct_curve[-3])
            rg, bg = ct_curve_eval(s.ct_curve, k)
            self._awb_auto, self._awb_gains, self._awb_kelvin = False, (1 / rg, 1 / bg), k
        if c.get("ExposureTime") and not self._ae_exposure_auto:
            self._fixed_exposure_us = float(c["ExposureTime"])
        if c.get("AnalogueGain") and not self._ae_gain_auto:
            self._fixed_gain = float(c["AnalogueGain"])
        if "FrameDurationLimits" in c:
            self._frame_limits = self._limits(c["FrameDurationLimits"])
        if "LensPosition" in c and s.af_map is not None and self._af_mode == AF_MODE_MANUAL:
            self._lens = min(max(float(c["LensPosition"]), s.af_map[0]), s.af_map[1])
        auto = self._af_mode == AF_MODE_AUTO and s.af_map is not None
        if c.get("AfTrigger") == AF_TRIGGER_START and auto and self._af_scan_left == 0:
            self._af_scan_left, self._af_state = self.af_scan_frames, AF_SCANNING

    # -- the sensor and the algorithms, frame by frame ---------------------------------------
    def _sensor_values(self, exposure_us: float, gain: float) -> tuple[int, int, int]:
        """(exposure lines, gain code, frame lines) as CamHelper::getBlanking would write them."""
        s = self.sensor
        assert s is not None
        line_us = s.line_ns / 1000
        lo = max(math.ceil(self._frame_limits[0] / line_us), s.min_frame_lines)
        hi = int(self._frame_limits[1] / line_us)
        exposure_us = min(max(exposure_us, line_us), s.max_exposure_us)
        lines = max(1, int(exposure_us / line_us))
        frame = min(max(lines + s.integration_diff, lo), max(hi, lo))
        lines = min(lines, frame - s.integration_diff)
        return lines, s.gain_code(max(gain, 1.0)), frame

    def _scene_gains(self) -> tuple[float, float]:
        assert self.sensor is not None
        rg, bg = ct_curve_eval(self.sensor.ct_curve, self.scene_kelvin)
        return 1 / rg, 1 / bg

    def _agc_step(self) -> None:
        """The AGC's output for the next frames (agc_channel.cpp:848-905)."""
        total = self.scene_exposure_us
        max_exp = self._frame_limits[1] - self.sensor.integration_diff * self.sensor.line_ns / 1000
        # shutter first up to each stage at the current gain, then gain up to the stage's
        exposure, gain = total, GAIN_STAGES[0]
        for shutter, stage_gain in zip(SHUTTER_STAGES, GAIN_STAGES, strict=True):
            shutter = min(shutter, max_exp)
            if total <= shutter * gain:
                exposure = total / gain
                break
            exposure = shutter
            if total <= shutter * stage_gain:
                gain = total / shutter
                break
            gain = stage_gain
        else:
            gain = total / exposure
        speed = 1.0 if self._frames_seen <= AGC_STARTUP else AGC_SPEED
        old_e, old_g = self._agc
        exposure = speed * exposure + (1 - speed) * old_e
        gain = speed * gain + (1 - speed) * old_g
        if not self._ae_exposure_auto:
            exposure = self._fixed_exposure_us
        if not self._ae_gain_auto:
            gain = self._fixed_gain
        self._agc = (exposure, gain)

    def _frame_duration_ns(self, frame_lines: int) -> int:
        assert self.sensor is not None
        return round(frame_lines * self.sensor.line_ns)

    def _generate(self) -> _Frame:
        """Frame ``self._n``: apply its request's controls, run the algorithms, time it."""
        s = self.sensor
        assert s is not None
        f = self._n
        if f in self._requests_pending:
            self._apply_request(self._requests_pending.pop(f))
        self._agc_step()
        # what the IPA writes now reaches the sensor `delay` frames later (DelayedControls)
        self._sensor_queue[f + s.delay] = self._sensor_values(*self._agc)
        self._sensor_now = self._sensor_queue.pop(f, self._sensor_now)
        lines, code, frame_lines = self._sensor_now
        duration = self._frame_duration_ns(frame_lines)
        sof = self._last_sof + duration
        self._last_sof = sof
        if self._awb_auto:
            speed = 1.0 if self._frames_seen < AWB_STARTUP else AWB_SPEED
            target = self._scene_gains()
            self._awb_gains = tuple(  # type: ignore[assignment]
                speed * t + (1 - speed) * g for t, g in zip(target, self._awb_gains, strict=True)
            )
            self._awb_kelvin = speed * self.scene_kelvin + (1 - speed) * self._awb_kelvin
        if self._af_scan_left:
            self._af_scan_left -= 1
            if self._af_scan_left == 0:
                self._af_state = AF_FOCUSED if self.af_success else AF_FAILED
                if self.af_success:
                    self._lens = self.af_target
        self._frames_seen += 1
        exposure_us = lines * s.line_ns / 1000
        frame = _Frame(
            f, sof, sof + round(s.height * s.line_ns), exposure_us, s.gain(code),
            self._awb_gains, self._awb_kelvin, self._lens, None, duration / 1000,
        )  # fmt: skip
        md: dict[str, Any] = {
            "SensorTimestamp": sof,
            "ExposureTime": int(exposure_us),
            "AnalogueGain": frame.gain,
            "DigitalGain": 1.0,
            "FrameDuration": int(duration / 1000),
            "ColourGains": tuple(float(np.float32(g)) for g in self._awb_gains),
            "ColourTemperature": int(self._awb_kelvin),
            "Lux": 400.0,
            "AeState": 0 if not (self._ae_exposure_auto or self._ae_gain_auto) else 2,
        }
        if s.temperature:
            md["SensorTemperature"] = 41.0
        if s.af_map is not None:  # rpi.af present: AF status and lens position reported
            md["LensPosition"] = float(self._lens) if self._lens is not None else 0.0
            md["AfState"] = (
                AF_SCANNING
                if self._af_mode == AF_MODE_AUTO and self._af_scan_left
                else AF_IDLE
                if self._af_mode == AF_MODE_MANUAL
                else self._af_state
            )
            md["AfPauseState"] = 0
        frame.metadata = md
        self._n += 1
        return frame

    def _advance(self, now_ns: int) -> None:
        """Complete every frame whose readout ended by ``now_ns``; keep the newest (held)."""
        while self._next_done_ns() <= now_ns:
            # the newest completed request replaces the held one, which picamera2's event
            # loop recycles (picamera2.py:1477-1479)
            self._held = self._generate()

    def _next_done_ns(self) -> int:
        s = self.sensor
        assert s is not None
        _, _, frame_lines = self._sensor_queue.get(self._n, self._sensor_now)
        return self._last_sof + self._frame_duration_ns(frame_lines) + round(s.height * s.line_ns)

    def _take(self, not_before_ns: int | None, call_ns: int) -> _Frame:
        """The first completed request the job accepts (picamera2.py:1552-1563, 1831-1835):
        with ``not_before_ns`` ahead, it waits for the frames to come (module docstring, 7)."""
        while True:
            self._advance(self.time.monotonic_ns())
            held = self._held
            usable = held is not None and (self._max_queue_len or held.done_ns > call_ns)
            if usable:
                assert held is not None
                start = held.metadata["SensorTimestamp"] - 1000 * held.metadata["ExposureTime"]
                if not_before_ns is None or start >= not_before_ns:
                    self._held = None
                    return held
                self._held = None  # dropped by wait_for_timestamp_ (picamera2.py:1562)
            self.time.sleep(max(0, self._next_done_ns() - self.time.monotonic_ns()) / 1e9)

    def capture_request(self, wait: Any = None, signal_function: Any = None, flush: Any = None):
        assert self.started, "capture_request() while stopped"
        call = self.time.monotonic_ns()
        if flush is True:
            flush = call
        frame = self._take(flush or None, call)
        self.requests += 1
        self.returned.append(frame.metadata)
        return FakeRequest(self, frame)

    def autofocus_cycle(self, wait: Any = None, signal_function: Any = None) -> bool:
        """picamera2.py:2750-2772, KeyError included when metadata has no AfState."""
        self.set_controls({"AfMode": AF_MODE_AUTO, "AfTrigger": AF_TRIGGER_START})
        call = self.time.monotonic_ns()
        for states in ({AF_SCANNING}, {AF_FOCUSED, AF_FAILED, AF_IDLE}):
            while True:
                frame = self._take(None, call)  # popped and released by the job itself
                state = frame.metadata["AfState"]
                if state in states:
                    break
        return state == AF_FOCUSED

    # -- pixels ----------------------------------------------------------------------------
    def render(self, frame: _Frame, size: tuple[int, int]) -> np.ndarray:
        """B, G, R bytes (picamera2's "RGB888"): brightness follows exposure x gain against the
        scene, colour follows the gains against the scene's illuminant, sharpness the lens."""
        assert self.sensor is not None
        w, h = size
        rng = np.random.default_rng(7)
        texture = rng.uniform(0.4, 1.6, (max(h // 4, 1), max(w // 4, 1))).astype(np.float32)
        texture = cv2.resize(texture, (w, h), interpolation=cv2.INTER_NEAREST)
        lens = frame.lens if frame.lens is not None else 1.0  # VCM rest position
        sigma = 3.0 * abs(lens - self.af_target)
        if sigma > 0.05:
            texture = cv2.GaussianBlur(texture, (0, 0), sigma)
        level = 0.35 * frame.exposure_us * frame.gain / self.scene_exposure_us
        rg, bg = ct_curve_eval(self.sensor.ct_curve, self.scene_kelvin)
        r_gain, b_gain = frame.colour_gains
        channels = (bg * b_gain, 1.0, rg * r_gain)  # B, G, R after white balance
        bgr = np.empty((h, w, 3), np.uint8)
        for i, c in enumerate(channels):
            bgr[..., i] = np.clip(texture * level * c * 255, 0, 255)
        return bgr
