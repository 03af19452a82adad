"""Synthetic sunset timelapses with known ground truth, for the tests, the bench and the demo.

:func:`generate_sequence` (the imperative shell: it writes files) renders the mountain scene of
:mod:`skylapse.scene` for every frame of a :class:`SequenceSpec` and applies a camera's faults
to it (flicker, a stepped exposure ramp, shake and drift, sensor noise, 8-bit quantisation);
what it did is returned and written as a :class:`~skylapse.testing.truth.SequenceTruth`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skylapse.exif import exif_bytes, with_exif_jpeg, with_exif_png
from skylapse.imaging.luma import luminance
from skylapse.processing.streaming import prefetch
from skylapse.scene import cloud_layer, mountain_scene, render_frame
from skylapse.testing.truth import FrameTruth, SequenceTruth

#: Exposure of the first frame, as recorded in EXIF.
BASE_EXPOSURE_TIME_S = 1 / 250
BASE_ISO = 100
BASE_F_NUMBER = 8.0


@dataclass(frozen=True)
class SequenceSpec:
    """What :func:`generate_sequence` makes: a synthetic sunset and the camera's faults.

    The steady footage darkens smoothly and ever faster, by ``sunset_ev`` over the sequence
    (``log2_luminance = start_log2_luminance + sunset_ev * s**2``, ``s`` from 0 to 1), while the
    sun sinks through ``sun_altitude_deg`` (warm light, alpenglow, then the blue hour) and clouds
    drift (``clouds``). Onto that the camera's faults are applied: Gaussian flicker of
    ``flicker_ev_std`` EV per frame, Gaussian shake of ``shake_px`` (std, px) plus a steady drift
    of ``drift_px_per_frame`` and a rotation jitter of ``rotation_deg`` (std), then sensor noise
    (``noise``: std in 8-bit sRGB code values, constant across tones as shot noise roughly is
    after gamma encoding; uniformly distributed) and 8-bit quantisation.

    A holy-grail exposure ramp (``ramp_ev != 0``): the camera opens up by ``ramp_ev`` over the
    sequence in steps of ``ramp_step_ev``, recorded in EXIF (ExposureTime, then ISO); the scene
    is darker by the smooth ramp, so the frames jump by the step error, which a deflicker that
    reads EXIF can remove exactly (``exposure_error_ev`` in the truth).

    HDR brackets (``brackets_ev``, e.g. ``(-2, 0, 2)``): every frame is a bracket set, one file
    per offset (``frame_00000_b0.jpg`` ...), each exposed ``2 ** offset`` times the frame's
    exposure (and recorded so in EXIF), with the capture service's own record of the set in
    its Skylapse EXIF (session, set, index, offset), as a station's golden hour. ``sun_glow``
    scales the glow around the sun (:func:`skylapse.scene.sky_radiance`): with tens to hundreds
    the scene's range outgrows what one 8-bit frame holds. :func:`scene_radiance` gives the
    light of any frame, before the camera.

    ``frames`` frames of ``size`` (width, height) pixels, ``fmt`` ``"jpg"`` (at
    ``jpeg_quality``) or ``"png"``, taken every ``interval_s`` seconds from ``start`` (naive
    local time). Everything random follows from ``seed``.
    """

    frames: int = 200
    size: tuple[int, int] = (1920, 1080)
    fmt: str = "jpg"
    sunset_ev: float = -3.0
    flicker_ev_std: float = 0.08
    shake_px: float = 2.0
    drift_px_per_frame: float = 0.03
    rotation_deg: float = 0.02
    noise: float = 1.5
    clouds: bool = True
    seed: int = 0
    start: datetime = datetime(2024, 9, 21, 18, 40, 0)
    interval_s: float = 10.0
    sun_altitude_deg: tuple[float, float] = (6.0, -4.0)
    ramp_ev: float = 0.0
    ramp_step_ev: float = 1 / 3
    start_log2_luminance: float = -2.6
    jpeg_quality: int = 94
    brackets_ev: tuple[float, ...] = ()
    sun_glow: float = 1.0

    def __post_init__(self) -> None:
        if self.fmt not in ("jpg", "png"):
            raise ValueError("fmt must be 'jpg' or 'png'")
        if self.frames < 1:
            raise ValueError("frames must be at least 1")

    def truth_params(self) -> dict[str, Any]:
        """The parameters recorded in ``truth.json`` (``params``)."""
        return {
            "frames": self.frames,
            "sunset_ev": self.sunset_ev,
            "flicker_ev_std": self.flicker_ev_std,
            "shake_px": self.shake_px,
            "drift_px_per_frame": self.drift_px_per_frame,
            "rotation_deg": self.rotation_deg,
            "noise": self.noise,
            "clouds": self.clouds,
            "interval_s": self.interval_s,
            "sun_altitude_deg": list(self.sun_altitude_deg),
            "ramp_ev": self.ramp_ev,
            "ramp_step_ev": self.ramp_step_ev,
            "start_log2_luminance": self.start_log2_luminance,
            "central_fraction": 0.5,
            "brackets_ev": list(self.brackets_ev),
            "sun_glow": self.sun_glow,
        }


@dataclass(frozen=True)
class _Plan:
    """Per-frame values of a sequence, drawn once from its seed (in a fixed order)."""

    altitudes: np.ndarray
    target_log2: np.ndarray
    flicker: np.ndarray
    camera_ev: np.ndarray
    step_error: np.ndarray
    dxs: np.ndarray
    dys: np.ndarray
    rots: np.ndarray

    @classmethod
    def of(cls, spec: SequenceSpec) -> _Plan:
        frames = spec.frames
        rng = np.random.default_rng(spec.seed)
        s = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
        alt0, alt1 = spec.sun_altitude_deg
        flicker = rng.standard_normal(frames) * spec.flicker_ev_std
        smooth_ramp = spec.ramp_ev * s**2
        if spec.ramp_ev != 0.0:
            camera_ev = np.trunc(smooth_ramp / spec.ramp_step_ev + 1e-9) * spec.ramp_step_ev
        else:
            camera_ev = np.zeros(frames)
        angle = math.radians(25.0)
        drift = spec.drift_px_per_frame * np.arange(frames)
        dxs = rng.standard_normal(frames) * spec.shake_px + drift * math.cos(angle)
        dys = rng.standard_normal(frames) * spec.shake_px + drift * math.sin(angle)
        return cls(
            altitudes=alt0 + (alt1 - alt0) * s,
            target_log2=spec.start_log2_luminance + spec.sunset_ev * s**2,
            flicker=flicker,
            camera_ev=camera_ev,
            step_error=camera_ev - smooth_ramp,
            dxs=dxs,
            dys=dys,
            rots=rng.standard_normal(frames) * spec.rotation_deg,
        )

    def margin(self, width: int, height: int) -> int:
        """Pixels around the frame that the largest shake and rotation can bring into view."""
        reach = np.hypot(self.dxs, self.dys).max() + np.abs(
            np.radians(self.rots)
        ).max() * math.hypot(width, height)
        return math.ceil(reach) + 4


@cache
def _encode_lut_x16() -> np.ndarray:
    """sRGB encoding of 16-bit linear codes, as 8-bit values times 16 (int16, for noise)."""
    lin = np.arange(65536, dtype=np.float64) / 65535.0
    enc = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.rint(enc * 255.0 * 16.0).astype(np.int16)


def _shake_matrix(
    dx: float, dy: float, rotation_deg: float, margin: int, width: int, height: int
) -> np.ndarray:
    """Forward 2x3 map from the padded steady render to the shaken output frame."""
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    a = math.radians(rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    offset = rot @ (-np.array([margin, margin]) - c) + c + np.array([dx, dy])
    return np.hstack([rot, offset[:, None]])


def _encode(rgb8: np.ndarray, exif: bytes, spec: SequenceSpec, name: str) -> bytes:
    """The file's bytes: JPEG or PNG of an 8-bit RGB frame, with ``exif`` embedded."""
    bgr = cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR)
    if spec.fmt == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
        data = with_exif_jpeg(buf.tobytes(), exif)
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        data = with_exif_png(buf.tobytes(), exif)
    if not ok:
        raise RuntimeError(f"could not encode {name}")
    return data


class _FrameWriter:
    """Makes and writes frame ``i`` of a sequence; shared state is read-only, so the frames can
    be made on several threads at once."""

    def __init__(self, spec: SequenceSpec, plan: _Plan, out: Path) -> None:
        self.spec, self.plan, self.out = spec, plan, out
        width, height = spec.size
        self.margin = margin = plan.margin(width, height)
        # The scene is rendered once with a margin, so shaken frames have no empty borders.
        self.scene = mountain_scene(width + 2 * margin, height + 2 * margin, spec.seed)
        self.clouds = (
            cloud_layer(
                self.scene.width, self.scene.height, spec.seed, horizon_row=self.scene.horizon_row
            )
            if spec.clouds
            else None
        )
        cy0, cy1 = margin + round(height / 4), margin + round(height * 3 / 4)
        cx0, cx1 = margin + round(width / 4), margin + round(width * 3 / 4)
        self.centre = (slice(cy0, cy1), slice(cx0, cx1))

    def light(self, i: int) -> np.ndarray:
        """The steady scene's linear light of frame ``i`` (with the margin)."""
        return render_frame(
            self.scene,
            i * self.spec.interval_s,
            sun_altitude_deg=float(self.plan.altitudes[i]),
            clouds=self.clouds,
            sun_glow=self.spec.sun_glow,
        )

    def gain(self, lin: np.ndarray, i: int) -> float:
        """The exposure that brings frame ``i``'s centre to its target brightness."""
        centre = luminance(lin[self.centre])
        return float(2.0 ** self.plan.target_log2[i] / max(float(centre.mean()), 1e-9))

    def __call__(self, i: int) -> FrameTruth:
        spec, plan = self.spec, self.plan
        lin = self.light(i)
        gain = self.gain(lin, i)
        centre = luminance(lin[self.centre])
        true_log2 = float(np.log2(max(float(np.minimum(centre * gain, 1.0).mean()), 1e-12)))
        when = spec.start + timedelta(seconds=i * spec.interval_s)
        recorded = gain * 2.0 ** (plan.flicker[i] + plan.step_error[i])
        offsets = spec.brackets_ev or (0.0,)
        for k, offset in enumerate(offsets):
            rgb8 = self._camera(lin, i, recorded * 2.0**offset)
            bracket = {"set": i, "index": k, "ev_offset": offset}
            exif = exif_bytes(
                when + timedelta(milliseconds=k),
                exposure_time_s=BASE_EXPOSURE_TIME_S * 2.0 ** (plan.camera_ev[i] + offset),
                iso=BASE_ISO,
                f_number=BASE_F_NUMBER,
                model="synthetic",
                skylapse={"session_id": "synthetic", "bracket": bracket}
                if spec.brackets_ev
                else None,
            )
            name = (
                f"frame_{i:05d}_b{k}.{spec.fmt}"
                if spec.brackets_ev
                else f"frame_{i:05d}.{spec.fmt}"
            )
            (self.out / name).write_bytes(_encode(rgb8, exif, spec, name))
        name = f"frame_{i:05d}_b0.{spec.fmt}" if spec.brackets_ev else f"frame_{i:05d}.{spec.fmt}"
        return FrameTruth(
            index=i,
            file=name,
            time=when.isoformat(),
            sun_altitude_deg=float(plan.altitudes[i]),
            log2_luminance=true_log2,
            flicker_ev=float(plan.flicker[i]),
            camera_ev=float(plan.camera_ev[i]),
            exposure_error_ev=float(plan.step_error[i]),
            dx=float(plan.dxs[i]),
            dy=float(plan.dys[i]),
            rotation_deg=float(plan.rots[i]),
        )

    def _camera(self, lin: np.ndarray, i: int, recorded_gain: float) -> np.ndarray:
        """What the camera records of the steady render ``lin``: shaken, exposed with
        ``recorded_gain``, sRGB-encoded, noised and quantised to 8-bit RGB."""
        spec, plan = self.spec, self.plan
        width, height = spec.size
        m = _shake_matrix(plan.dxs[i], plan.dys[i], plan.rots[i], self.margin, width, height)
        shaken = cv2.warpAffine(
            lin, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        np.multiply(shaken, np.float32(65535.0 * recorded_gain), out=shaken)
        np.clip(shaken, 0.0, 65535.0, out=shaken)
        enc = _encode_lut_x16()[shaken.astype(np.uint16)]
        if spec.noise > 0:
            noise_scale = spec.noise * 16.0 / 73.9  # uniform bytes (std 73.9) to 8-bit codes x 16
            frame_rng = np.random.default_rng([spec.seed, i, 1])
            u = np.frombuffer(frame_rng.bytes(enc.size), np.uint8).reshape(enc.shape)
            enc += ((u.astype(np.int16) - 128) * noise_scale).astype(np.int16)
        np.clip(enc, 0, 255 * 16 + 7, out=enc)  # rounds to 255 at most: no wrap to 0
        enc += 8
        return (enc >> 4).astype(np.uint8)


def generate_sequence(
    out_dir: str | Path, spec: SequenceSpec | None = None, *, workers: int = 2
) -> SequenceTruth:
    """Write the synthetic sunset timelapse of ``spec`` to ``out_dir`` and return its truth.

    Frames are ``frame_00000.jpg`` (8-bit sRGB JPEG with EXIF DateTimeOriginal,
    SubSecTimeOriginal, ExposureTime, ISOSpeedRatings, FNumber) or ``.png`` (with an eXIf
    chunk); ``truth.json`` holds the :class:`SequenceTruth`. The scene is rendered once with a
    margin, every frame is lit, warped, noised and written on ``workers`` threads (numpy and
    OpenCV release the GIL): about 0.1-0.2 s of CPU per 1080p frame. The files do not depend
    on ``workers``.
    """
    spec = spec or SequenceSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _FrameWriter(spec, _Plan.of(spec), out)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = tuple(prefetch(pool, writer, range(spec.frames), depth=max(2, 2 * workers)))
    width, height = spec.size
    truth = SequenceTruth(
        width=width,
        height=height,
        fmt=spec.fmt,
        seed=spec.seed,
        params=spec.truth_params(),
        frames=results,
    )
    (out / "truth.json").write_text(truth.to_json())
    return truth


def scene_radiance(spec: SequenceSpec, index: int) -> np.ndarray:
    """The light of frame ``index`` of ``spec``'s sequence as the camera's exposure 1.0 (no
    bracket offset) records it before clipping, flicker, shake and noise: linear float32
    ``(H, W, 3)`` over the frame, unclipped (values above 1 are what an 8-bit frame loses).
    Without shake, drift and rotation it is, pixel for pixel, the scene the frames show."""
    writer = _FrameWriter(spec, _Plan.of(spec), Path("."))
    lin = writer.light(index)
    m, (width, height) = writer.margin, spec.size
    return lin[m : m + height, m : m + width] * np.float32(writer.gain(lin, index))
