"""Exposure ramping through an evening: the feed-forward controller against step-and-hold AE.

The sun goes from +10° to -12° (a real evening at the simulated camera's location, at the March
equinox) with a frame every 30 s on a simulated clock. Each controller runs its own camera in a
closed loop: settings -> SimulatedCamera (skylapse.capture.cameras.simulated: the procedural
mountain scene at the shared sky table's brightness, drifting clouds, sensor noise) -> luminance
-> meter -> next settings. Printed side by side, after the first 10 frames (settling):

* frame-to-frame change of the mean log2 luminance (EV): standard deviation and largest jump;
* metered level minus target (EV): the worst deviation;
* oscillation: how often the level error (where above 0.1 EV) changes sign;
* frames whose exposure hit the hardware limit (28 s at gain 16 and f/2 falls short below about
  -10.5°); their wanted-minus-achieved difference is recorded for the deflicker stage, and the
  target criterion is judged on the frames the camera could expose as wanted.

Then **a station that learns its sky** (`skylapse.capture.learning`): the feed-forward controller
on three consecutive evenings at the same site (March 20, 21, 22), each starting from what the
evenings before taught it (the sky memory's prior for a setting sun; day 1 knows nothing). For
each day: the first-frames settling error (mean |level - target| over the first 10 frames),
the step std (over all frames, and after settling) and the worst error where reachable.

Run: ``.venv/bin/python bench/exposure_bench.py [--width 320] [--csv bench/out/exposure.csv]``
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import time
from pathlib import Path

import numpy as np
from astral import Observer, SunDirection
from astral import sun as astral_sun
from rich.console import Console
from rich.table import Table

from skylapse.capture.cameras.base import CameraConfig, CaptureSettings
from skylapse.capture.cameras.simulated import Location, SimulatedCamera, SimWeather
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.exposure import (
    ExposureController,
    StepAndHoldExposure,
    meter,
    target_level,
)
from skylapse.capture.learning import SkyMemory
from skylapse.capture.strategy import choose_capture
from skylapse.config import SkylapseConfig
from skylapse.imaging.luma import linear_luminance

INTERVAL_S = 30.0
START_DEG, END_DEG = 10.0, -12.0
SETTLE_FRAMES = 10
DAY = dt.date(2024, 3, 20)
CLOUD_COVER_PCT = 30.0
LEARNED_DAYS = 3


async def evening(
    controller_cls, width: int, seed: int, day: dt.date = DAY, memory: SkyMemory | None = None
) -> tuple[list[dict], list[tuple[float, float]]]:
    """One evening's frames, and the controller's metered offsets (what a station learns)."""
    loc = Location()
    start = astral_sun.time_at_elevation(
        Observer(loc.latitude, loc.longitude, loc.elevation_m),
        START_DEG,
        day,
        SunDirection.SETTING,
    )
    clock = SimulatedClock(start)
    camera = SimulatedCamera(
        clock=clock,
        location=loc,
        seed=seed,
        weather=SimWeather(cloud_cover=CLOUD_COVER_PCT / 100, wind_speed_mps=6.0),
    )
    await camera.configure(CameraConfig(resolution=(width, width * 9 // 16)))
    cfg = SkylapseConfig()
    exposure_cfg = cfg.exposure.model_copy(update={"aperture_f": camera.profile.lens.aperture_f})
    ctrl = None
    settings = None
    rows: list[dict] = []
    while True:
        tick = clock.now()
        e_now = camera.sun(tick)[0]
        if e_now < END_DEG:
            break
        e_next = camera.sun(tick + dt.timedelta(seconds=INTERVAL_S))[0]
        strategy = choose_capture(cfg, e_now).strategy
        if ctrl is None:
            ctrl = controller_cls(exposure_cfg, strategy)
            if memory is not None:
                ctrl.prior = memory.prior("setting", CLOUD_COVER_PCT)
            settings = ctrl.next_settings(None, e_now, e_now, INTERVAL_S)
        frame = await camera.capture(
            CaptureSettings(exposure_time_s=settings.exposure_s, analogue_gain=settings.gain)
        )
        luma = linear_luminance(frame.pixels)
        m = meter(luma, exposure_cfg.clip_level)
        rows.append(
            {
                "time": tick.isoformat(),
                "sun_deg": e_now,
                "exposure_s": frame.metadata.exposure_time_s,
                "gain": frame.metadata.analogue_gain,
                "wanted_ev": settings.wanted_ev,
                "error_ev": settings.error_ev,
                "limited_by": settings.limited_by,
                "mean_log2_luma": float(np.log2(np.maximum(luma, 2.0**-16)).mean()),
                "metered": m.log2_mean,
                "target": target_level(exposure_cfg, e_now),
            }
        )
        settings = ctrl.next_settings(
            m, e_now, e_next, INTERVAL_S, strategy=choose_capture(cfg, e_next).strategy
        )
        await clock.sleep(INTERVAL_S - (clock.now() - tick).total_seconds())
    return rows, list(getattr(ctrl, "samples", []))


def learned_evenings(width: int, seed: int) -> list[dict[str, float]]:
    """Three consecutive evenings, each learning from the ones before (module docstring)."""
    memory = SkyMemory()
    weight = SkylapseConfig().exposure.learn_weight
    out = []
    for k in range(LEARNED_DAYS):
        day = DAY + dt.timedelta(days=k)
        rows, samples = asyncio.run(evening(ExposureController, width, seed, day, memory))
        first = rows[:SETTLE_FRAMES]
        lum = np.array([r["mean_log2_luma"] for r in rows])
        stats = summarise(rows)
        out.append(
            {
                "first-frames settling error (EV)": float(
                    np.mean([abs(r["metered"] - r["target"]) for r in first])
                ),
                "first frame |level - target| (EV)": abs(rows[0]["metered"] - rows[0]["target"]),
                "step std, all frames (EV)": float(np.diff(lum).std()),
                "step std (EV)": stats["step std (EV)"],
                "worst |level - target|, reachable (EV)": stats[
                    "worst |level - target|, reachable (EV)"
                ],
                "bins learned before": len(memory.bins),
            }
        )
        when = dt.datetime.combine(day, dt.time(20), dt.UTC)
        memory = memory.learn(samples, CLOUD_COVER_PCT, weight, when)
    return out


def summarise(rows: list[dict]) -> dict[str, float]:
    lum = np.array([r["mean_log2_luma"] for r in rows])
    settled = rows[SETTLE_FRAMES:]
    err = np.array([r["metered"] - r["target"] for r in settled])
    # frames the hardware could expose as wanted (not at max gain and max time, nor min time)
    reachable = np.array([r["limited_by"] in ("", "step") for r in settled])
    steps = np.diff(lum)[SETTLE_FRAMES:]
    big = err[np.abs(err) > 0.1]
    return {
        "frames": len(rows),
        "step std (EV)": float(steps.std()),
        "largest step (EV)": float(np.abs(steps).max()),
        "worst |level - target|, reachable (EV)": float(np.abs(err[reachable]).max()),
        "worst |level - target|, all (EV)": float(np.abs(err).max()),
        "error sign reversals": int(np.count_nonzero(np.diff(np.sign(big)) != 0)),
        "frames at hardware limit": int(np.count_nonzero(~reachable)),
        "sun at first limited frame (°)": next(
            (r["sun_deg"] for r, ok in zip(settled, reachable, strict=True) if not ok), np.nan
        ),
        "last frame wanted - achieved (EV)": rows[-1]["error_ev"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=320, help="simulated frame width")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--csv", type=Path, default=None, help="write every frame of both runs")
    args = ap.parse_args()

    t0 = time.perf_counter()
    runs = {
        "feed-forward ramp": asyncio.run(evening(ExposureController, args.width, args.seed))[0],
        "step-and-hold AE (0.5 EV deadband)": asyncio.run(
            evening(StepAndHoldExposure, args.width, args.seed)
        )[0],
    }
    stats = {name: summarise(rows) for name, rows in runs.items()}
    table = Table(
        title=(
            f"Evening +{START_DEG:g}° → {END_DEG:g}°, {INTERVAL_S:g} s interval, simulated clock; "
            f"camera: skylapse.capture.cameras.SimulatedCamera ({args.width} px wide, clouds 30 %)"
        )
    )
    table.add_column("after settling")
    for name in stats:
        table.add_column(name, justify="right")
    for key in next(iter(stats.values())):
        table.add_row(
            key,
            *(
                f"{s[key]:.3f}" if isinstance(s[key], float) else str(s[key])
                for s in stats.values()
            ),
        )
    console = Console()
    console.print(table)
    ok = stats["feed-forward ramp"]
    console.print(
        f"criteria (controller): step std <= 0.05 EV: {ok['step std (EV)'] <= 0.05}; "
        f"within ±0.5 EV of target where reachable: "
        f"{ok['worst |level - target|, reachable (EV)'] <= 0.5}; "
        f"wall time {time.perf_counter() - t0:.1f} s"
    )
    days = learned_evenings(args.width, args.seed)
    learned = Table(title="A station that learns its sky: three evenings at one site")
    learned.add_column("")
    for k in range(len(days)):
        learned.add_column(f"day {k + 1} ({DAY + dt.timedelta(days=k)})", justify="right")
    for key in days[0]:
        learned.add_row(
            key, *(f"{d[key]:.4f}" if isinstance(d[key], float) else str(d[key]) for d in days)
        )
    console.print(learned)
    first, last = days[0], days[-1]
    console.print(
        "criteria (learning): settling error falls day 1 -> day 3: "
        f"{last['first-frames settling error (EV)'] < first['first-frames settling error (EV)']}; "
        f"step std falls: {last['step std, all frames (EV)'] < first['step std, all frames (EV)']}"
    )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["run", *next(iter(runs.values()))[0]])
            writer.writeheader()
            for name, rows in runs.items():
                for r in rows:
                    writer.writerow({"run": name, **r})


if __name__ == "__main__":
    main()
