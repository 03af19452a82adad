"""Capture timing on the real clock, and autofocus on the simulated lens.

(a) ``CaptureService`` takes N frames (default 200) at a fixed interval (0.5 s) from the
simulated camera (default 1920x1080) on the real clock, writing JPEG+EXIF to a temporary buffer,
while a CPU-heavy background job runs (ffmpeg from imageio_ffmpeg encoding a 1080p test pattern
with libx264, which keeps both cores busy, like a render would). Printed: capture latency
(deadline to start of exposure) p50/p99/max, skipped deadlines, and the largest deviation of the
camera's own exposure timestamps from the ideal schedule ``first + n * interval``.

(b) Autofocus on the simulated 1080p lens from its near end, for a few seeds: time to focus and
the final error against the calibrated infinity position (dioptres, and the residual defocus
blur in pixels).

Run: ``.venv/bin/python bench/capture_bench.py [--frames 200] [--interval 0.5]
[--resolution 1920x1080] [--no-load]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import subprocess
import tempfile
import time

import numpy as np

from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.cameras.simulated import LENS_SOFTNESS_PX
from skylapse.capture.clock import RealClock, SimulatedClock
from skylapse.capture.service import CaptureService, SessionSpec
from skylapse.config import default_config

#: Autofocus is measured at mid-afternoon at the simulated camera's default place.
AUTOFOCUS_AT = dt.datetime(2026, 6, 21, 14, 0, tzinfo=dt.UTC)


def background_load() -> subprocess.Popen:
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1920x1080:rate=30",
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-f",
        "null",
        "-",
    ]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)


async def timing(frames: int, interval: float, size: tuple[int, int]) -> dict:
    clock = RealClock()
    camera = SimulatedCamera(clock=clock, seed=7)
    cfg = default_config()
    cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"autofocus": False})})
    with tempfile.TemporaryDirectory() as buf:
        service = CaptureService(
            camera, buffer=buf, clock=clock, config=cfg, camera_config=CameraConfig(resolution=size)
        )
        await service.open()
        summary = await service.run_session(
            SessionSpec(interval_s=interval, max_frames=frames, hdr=False)
        )
        rows = service.catalog.frames()
        writer = service.writer.stats()
        await service.close()
    first = rows[0].scheduled_at
    dev = []
    for r in rows:
        n = round((r.scheduled_at - first).total_seconds() / interval)
        dev.append((r.captured_at - first).total_seconds() - n * interval)
    lat = np.array(summary.latencies_ms)
    return {
        "frames": summary.shots,
        "written": summary.written,
        "skipped deadlines": summary.skipped_deadlines,
        "latency p50 (ms)": float(np.percentile(lat, 50)),
        "latency p99 (ms)": float(np.percentile(lat, 99)),
        "latency max (ms)": float(lat.max()),
        "max |exposure start - ideal| (ms)": 1e3 * float(np.max(np.abs(dev))),
        "writer p50 (ms)": writer["write_ms_p50"],
        "writer max queue": writer["max_queue_depth"],
    }


async def autofocus(seeds: list[int], size: tuple[int, int]) -> list[dict]:
    out = []
    for seed in seeds:
        # in daylight: at night contrast AF has nothing to find and falls back to infinity
        cam = SimulatedCamera(clock=SimulatedClock(AUTOFOCUS_AT), seed=seed)
        await cam.configure(CameraConfig(resolution=size))
        t0 = time.perf_counter()
        pos = await cam.autofocus()
        took = time.perf_counter() - t0
        focus = cam.profile.focus
        err = abs(pos - focus.infinity_lens_position)
        scale = size[0] / cam.profile.sensor.width_px
        blur = math.hypot(LENS_SOFTNESS_PX, focus.defocus_sigma_px_per_dioptre * err * scale)
        out.append(
            {
                "seed": seed,
                "time (s)": took,
                "lens": pos,
                "error (dpt)": err,
                "blur sigma (px, in focus = 0.6)": blur,
            }
        )
        await cam.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--resolution", default="1920x1080")
    ap.add_argument("--no-load", action="store_true")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.resolution.split("x"))
    load = None if args.no_load else background_load()
    try:
        t0 = time.perf_counter()
        result = asyncio.run(timing(args.frames, args.interval, size))
        result["wall (s)"] = time.perf_counter() - t0
    finally:
        if load is not None:
            load.terminate()
            load.wait()
    print(
        f"(a) {args.frames} frames at {args.interval} s, {args.resolution}, "
        f"{'no load' if args.no_load else 'ffmpeg libx264 1080p encode in the background'}"
        f" ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)"
    )
    for k, v in result.items():
        print(f"    {k:38s} {v:.2f}" if isinstance(v, float) else f"    {k:38s} {v}")
    print("(b) autofocus, simulated lens at", args.resolution)
    for row in asyncio.run(autofocus([0, 1, 2], size)):
        print(
            "    "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
        )


if __name__ == "__main__":
    main()
