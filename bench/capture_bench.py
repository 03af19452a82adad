"""Capture timing on the real clock, and autofocus on the simulated lens.

(a) Capture latency: ``CaptureService`` takes N frames (default 100) at a fixed interval (2 s,
the issue's target interval) on the real clock, writing JPEG+EXIF to a temporary buffer, while a
CPU-heavy background job runs (ffmpeg from imageio_ffmpeg encoding a 1080p test pattern with
libx264, which keeps both cores busy, like a render would), once per backend: the simulated
camera (default 1920x1080), then picamera2 through the test fake
``tests/capture/_fake_picamera2.py`` (an IMX708 streaming its full-resolution mode, 14 fps, on
the real monotonic clock; frames delivered at the same output size). Printed per backend:
capture latency (deadline to the start of exposure the camera reports, else to the call; signed:
negative when the chosen frame's exposure began before the deadline) p50/p99/min/max, the p99 of
its magnitude (the figure the target, p99 < 50 ms, is checked on, so a frame taken early counts
as much as one taken late), skipped deadlines, and the largest deviation of the exposure
timestamps from the ideal schedule ``first + n * interval``.

(b) Autofocus on the simulated 1080p lens from its near end, for a few seeds: time to focus and
the final error against the calibrated infinity position (dioptres, and the residual defocus
blur in pixels).

(c) Footprint at 12 MP: the real ``skylapse serve capture`` process, replaying 4608x2592 JPEGs
(made here from noise-textured gradients with EXIF exposure; a few distinct files, linked under
as many names as frames are needed), driven over HTTP: five ``POST /capture``, then an interval
session (``POST /sessions``, 2 s) for ``--minutes``. Its resident set is sampled from
``/proc/<pid>/status`` (VmRSS every 100 ms; VmHWM after the five captures, then reset, and at
the end). Printed: RSS when ready (imports, app, camera open), after the five captures, peak
(VmHWM) during those and during the session, steady (median over the session's second half)
and its drift (median of the last quarter minus median of the second quarter), frames written,
``POST /capture`` round trips and the session's capture latency. The service runs with the
systemd unit's environment (``skylapse.deploy.SERVICE_ENVIRONMENT``: glibc malloc settings).
Target: peak <= 150 MB, flat.

Run: ``.venv/bin/python bench/capture_bench.py [--frames 100] [--interval 2]
[--resolution 1920x1080] [--backend simulated|picamera2|both] [--no-load] [--minutes 1]
[--latency-only | --footprint-only]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from api_bench import wait_ready
from skylapse.api.server import free_port
from skylapse.capture.cameras import Camera, CameraConfig, Picamera2Camera, SimulatedCamera
from skylapse.capture.cameras.simulated.lens import LENS_SOFTNESS_PX
from skylapse.capture.clock import RealClock, SimulatedClock
from skylapse.capture.service import CaptureService, SessionSpec
from skylapse.config import default_config
from skylapse.deploy import SERVICE_ENVIRONMENT
from skylapse.exif import exif_bytes, with_exif_jpeg

# the picamera2 fake lives beside the tests (it cites the picamera2 and libcamera sources)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "capture"))
from _fake_picamera2 import FakePicamera2, RealTime

#: Latency target (issue 10): p99 of |deadline to exposure start| at a 2 s interval.
LATENCY_TARGET_MS = 50.0
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


def latency_camera(backend: str, clock: RealClock) -> Camera:
    """The camera of the latency run: ``simulated``, or ``picamera2`` through the fake on the
    real monotonic clock (its sensor free-runs from the moment it starts)."""
    if backend == "simulated":
        return SimulatedCamera(clock=clock, seed=7)
    FakePicamera2.clock = RealTime()
    return Picamera2Camera(picamera2_class=FakePicamera2, clock=clock)


async def timing(frames: int, interval: float, size: tuple[int, int], backend: str) -> dict:
    clock = RealClock()
    camera = latency_camera(backend, clock)
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
    p99_abs = float(np.percentile(np.abs(lat), 99))
    return {
        "frames": summary.shots,
        "written": summary.written,
        "skipped deadlines": summary.skipped_deadlines,
        "latency p50 (ms)": float(np.percentile(lat, 50)),
        "latency p99 (ms)": float(np.percentile(lat, 99)),
        "latency min / max (ms)": f"{lat.min():.1f} / {lat.max():.1f}",
        "p99 |latency| (ms)": p99_abs,
        "within target": f"{'yes' if p99_abs < LATENCY_TARGET_MS else 'NO'} "
        f"(p99 |latency| < {LATENCY_TARGET_MS:g} ms)",
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


# ----------------------------------------------------------------------------- (c) footprint

#: The 12 MP frame the footprint run replays (IMX708's full 16:9 mode, Camera Module 3).
FOOTPRINT_SIZE = (4608, 2592)
#: Distinct source JPEGs; the replay folder links them under one name per frame.
FOOTPRINT_SOURCES = 6
FOOTPRINT_INTERVAL_S = 2.0
MANUAL_CAPTURES = 5
PEAK_TARGET_MB = 150


def source_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A landscape-like 8-bit JPEG (sky gradient over a textured ridge, sensor-like noise) of
    ``size`` with EXIF exposure tags, as a camera would write it."""
    w, h = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    ridge = 0.55 + 0.06 * np.sin(2 * np.pi * (3 * x + seed / 7)) + 0.02 * np.sin(40 * x)
    ground = y > ridge
    # coarse texture, upsampled: rock and grass at a few hundred pixels per feature
    texture = cv2.resize(
        rng.normal(0, 25, (h // 64, w // 64)).astype(np.float32), (w, h), cv2.INTER_CUBIC
    )
    noise = rng.normal(0, 2.5, (h, w)).astype(np.float32)
    planes = []
    for top, bottom, land in ((70, 200, 60), (110, 215, 75), (180, 235, 50)):
        sky = top + (bottom - top) * y + np.zeros_like(x)
        plane = np.where(ground, land + texture, sky) + noise
        planes.append(np.clip(plane, 0, 255).astype(np.uint8))
        del sky, plane
    bgr = np.dstack(planes[::-1])
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    when = dt.datetime(2026, 6, 21, 19, 0, seed, tzinfo=dt.UTC)
    exif = exif_bytes(when, exposure_time_s=1 / 250, iso=100, f_number=1.8, model="bench")
    return with_exif_jpeg(jpeg.tobytes(), exif)


def replay_folder(root: Path, frames: int, size: tuple[int, int]) -> Path:
    """``root/replay`` with ``frames`` names linking to a few distinct 12 MP JPEGs."""
    sources = root / "sources"
    sources.mkdir()
    for i in range(FOOTPRINT_SOURCES):
        (sources / f"src_{i}.jpg").write_bytes(source_jpeg(i, size))
    folder = root / "replay"
    folder.mkdir()
    for n in range(frames):
        (folder / f"frame_{n:06d}.jpg").symlink_to(sources / f"src_{n % FOOTPRINT_SOURCES}.jpg")
    return folder


def proc_memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB, from ``/proc/<pid>/status``."""
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh at the current VmRSS (``clear_refs``, Linux 4.0+)."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``period_s`` into ``samples`` [(monotonic s, kB)]."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, int]] = []
        self.hwm_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                rss, self.hwm_kb = proc_memory_kb(self.pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                return
            self.samples.append((time.monotonic(), rss))
            self._done.wait(self.period_s)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def between(self, t0: float, t1: float) -> list[int]:
        return [kb for t, kb in self.samples if t0 <= t <= t1]

    def now_mb(self) -> float:
        return proc_memory_kb(self.pid)[0] / 1024


def footprint_config(root: Path, replay: Path) -> Path:
    """The service's configuration: the replay camera at its files' size, no plan, no weather,
    no autofocus (the replay camera has no lens), no transfer."""
    config = root / "skylapse.yaml"
    config.write_text(
        "weather: {enabled: false}\n"
        f"capture: {{camera: 'replay:{replay}', buffer_dir: '{root / 'buffer'}', "
        "unattended: false, autofocus: false, hdr: false}\n"
    )
    return config


def run_session_over_http(
    base: str, token: str, minutes: float, sampler: RssSampler
) -> dict[str, object]:
    """Five ``POST /capture``, then an interval session for ``minutes``; RSS per phase."""
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, object] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        time.sleep(1.0)  # the lifespan opens the camera after the first /health answer
        out["RSS ready (MB)"] = sampler.now_mb()
        round_trips = []
        for _ in range(MANUAL_CAPTURES):
            t0 = time.perf_counter()
            r = client.post("/capture", json={})
            round_trips.append((time.perf_counter() - t0) * 1e3)
            r.raise_for_status()
            if not r.json()["frames"]:
                raise RuntimeError(f"POST /capture stored nothing: {r.text}")
        out[f"RSS after {MANUAL_CAPTURES} POST /capture (MB)"] = sampler.now_mb()
        out["RSS peak so far, VmHWM (MB)"] = proc_memory_kb(sampler.pid)[1] / 1024
        reset_peak(sampler.pid)
        out["POST /capture p50 / max (ms)"] = (
            f"{statistics.median(round_trips):.0f} / {max(round_trips):.0f}"
        )
        r = client.post(
            "/sessions", json={"interval_s": FOOTPRINT_INTERVAL_S, "duration_s": minutes * 60}
        )
        r.raise_for_status()
        t_start = time.monotonic()
        while True:
            time.sleep(1.0)
            status = client.get("/status").json()
            if status["state"] == "idle":
                break
        t_end = time.monotonic()
    session = status["session"]
    span = t_end - t_start
    second_half = sampler.between(t_start + span / 2, t_end)
    q2 = sampler.between(t_start + span / 4, t_start + span / 2)
    q4 = sampler.between(t_start + 3 * span / 4, t_end)
    out["RSS steady, session's 2nd half (MB)"] = statistics.median(second_half) / 1024
    out["RSS drift, last vs 2nd quarter (MB)"] = (
        statistics.median(q4) - statistics.median(q2)
    ) / 1024
    out["RSS at the end (MB)"] = sampler.now_mb()
    out["session frames taken / written"] = f"{session['shots']} / {session['written']}"
    out["skipped deadlines"] = session["skipped_deadlines"]
    out["capture latency p50 / p99 / max (ms)"] = (
        f"{session['latency_ms_p50']:.1f} / {session['latency_ms_p99']:.1f} / "
        f"{session['latency_ms_max']:.1f}"
    )
    return out


def service_environment(token: str) -> dict[str, str]:
    """The environment the systemd unit gives the service (``deploy.SERVICE_ENVIRONMENT``) and
    the token; bytecode is written, as an installed package has it, and written now for what
    the service imports, so that compiling modules is not counted in its footprint."""
    env = {**os.environ, **SERVICE_ENVIRONMENT, "SKYLAPSE_API_TOKEN": token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = "import skylapse.cli, skylapse.api.capture.app, skylapse.api.server, numpy.ma"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True)
    return env


def footprint(minutes: float, size: tuple[int, int] = FOOTPRINT_SIZE) -> dict[str, object]:
    """(c): see the module docstring."""
    frames = MANUAL_CAPTURES + math.ceil(minutes * 60 / FOOTPRINT_INTERVAL_S) + 10
    token = secrets.token_urlsafe(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="skylapse-footprint-") as tmp:
        root = Path(tmp)
        config = footprint_config(root, replay_folder(root, frames, size))
        cmd = [sys.executable, "-m", "skylapse.cli", "serve", "capture", "--config", str(config)]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        env = service_environment(token)
        with (root / "server.log").open("wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            sampler = RssSampler(proc.pid)
            sampler.start()
            try:
                wait_ready(base, proc)
                result = run_session_over_http(base, token, minutes, sampler)
                result["RSS peak in the session, VmHWM (MB)"] = proc_memory_kb(proc.pid)[1] / 1024
                result["RSS peak, VmHWM (MB)"] = max(
                    result["RSS peak so far, VmHWM (MB)"],  # type: ignore[type-var]
                    result["RSS peak in the session, VmHWM (MB)"],
                )
            except BaseException:
                print((root / "server.log").read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                sampler.stop()
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    result["peak within target"] = (
        f"{'yes' if result['RSS peak, VmHWM (MB)'] <= PEAK_TARGET_MB else 'NO'} "  # type: ignore[operator]
        f"(<= {PEAK_TARGET_MB} MB)"
    )
    return result


def print_rows(rows: dict[str, object]) -> None:
    for k, v in rows.items():
        print(f"    {k:38s} {v:.2f}" if isinstance(v, float) else f"    {k:38s} {v}")


def latency_part(args: argparse.Namespace, size: tuple[int, int], load_name: str) -> None:
    """(a), once per backend, each under its own background encode."""
    backends = ("simulated", "picamera2") if args.backend == "both" else (args.backend,)
    for backend in backends:
        load = None if args.no_load else background_load()
        load_before = os.getloadavg()[0]
        try:
            t0 = time.perf_counter()
            result = asyncio.run(timing(args.frames, args.interval, size, backend))
            result["wall (s)"] = time.perf_counter() - t0
            # the machine is shared: what else ran shows in its load (ffmpeg alone: about 2)
            result["load average, 1 min, start / end"] = (
                f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
            )
        finally:
            if load is not None:
                load.terminate()
                load.wait()
        stamp = f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)"
        print(
            f"(a) {backend}: {args.frames} frames at {args.interval:g} s, {args.resolution}, "
            f"{load_name} {stamp}"
        )
        print_rows(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100, help="(a): frames per backend (100)")
    ap.add_argument("--interval", type=float, default=2.0, help="(a): seconds (2)")
    ap.add_argument("--resolution", default="1920x1080")
    ap.add_argument(
        "--backend", choices=("simulated", "picamera2", "both"), default="both", help="(a)"
    )
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument(
        "--minutes", type=float, default=1.0, help="(c): the 12 MP session's length (1 min)"
    )
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--latency-only", action="store_true", help="run (a) alone")
    only.add_argument("--footprint-only", action="store_true", help="run (c) alone")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.resolution.split("x"))
    load_name = "no load" if args.no_load else "ffmpeg libx264 1080p encode in the background"
    stamp = f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)"
    if not args.footprint_only:
        latency_part(args, size, load_name)
    if args.latency_only:
        return
    if not args.footprint_only:
        print("(b) autofocus, simulated lens at", args.resolution)
        for row in asyncio.run(autofocus([0, 1, 2], size)):
            print(
                "    "
                + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                )
            )
    load = None if args.no_load else background_load()
    try:
        rows = footprint(args.minutes)
    finally:
        if load is not None:
            load.terminate()
            load.wait()
    w, h = FOOTPRINT_SIZE
    print(
        f"(c) skylapse serve capture, replay {w}x{h}, {MANUAL_CAPTURES} POST /capture then "
        f"{args.minutes:g} min at {FOOTPRINT_INTERVAL_S:g} s, {load_name} {stamp}"
    )
    print_rows(rows)


if __name__ == "__main__":
    main()
