"""Render benchmark: `skylapse render` against ffmpeg's deflicker, vid.stab and a plain encode.

Generates (and caches in bench/out/) a synthetic sunset with known flicker and shake, then in
one run measures wall time and peak memory (RSS of the whole process tree, polled from /proc)
of:

  ours       skylapse render SRC -o out.mp4 --format h265 --size WxH --crf C --preset P
  deflicker  ffmpeg deflicker (best mode and size, searched on raw output) + the same encode
  vidstab    two-pass vid.stab (tripod=1, and the default) + the same encode
  plain      ffmpeg decode + libx265 encode, same preset/CRF, yuv420p10le, same size

and decodes every output (PyAV) to measure residual flicker, jitter and drift
(skylapse.processing.measure). Jitter and drift are measured two ways: registered to the first
output frame (any video; but the sunset's moving shading reads as ~1.7 px of drift even with a
perfect stabilizer), and geometric error against the true camera motion (each output frame
against its input frame warped as a perfect stabilizer would; lighting cancels). The targets for
jitter and drift are checked on the geometric one. Prints a table against the targets. Exits
non-zero only on errors.

    .venv/bin/python bench/render_bench.py                 # 200 frames, 1080p, medium, CRF 28
    .venv/bin/python bench/render_bench.py --frames 30 --size 640x360   # quick
    .venv/bin/python bench/render_bench.py --long          # + memory with 2,000 frames
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from skylapse.processing import measure as metrics
from skylapse.testing import SequenceSpec, SequenceTruth, generate_sequence

HERE = Path(__file__).resolve().parent
TARGETS = {"flicker": 0.02, "jitter": 0.1, "drift": 0.5, "time_ratio": 1.10, "mem_extra_mb": 150}
DEFLICKER_MODES = ("am", "gm", "hm", "qm", "cm", "pm", "median")
DEFLICKER_SIZES = (5, 15)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ----------------------------------------------------------------------------- measuring


def _tree_rss_kb(root: int) -> int:
    """Sum of VmRSS over a process and all its descendants (from /proc)."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


@dataclass
class Run:
    wall_s: float = 0.0
    peak_mb: float = 0.0
    commands: list[str] = field(default_factory=list)


def measure(cmds: list[list[str]], log: Path) -> Run:
    """Run commands one after another; total wall time, largest process-tree RSS."""
    run = Run()
    with log.open("a") as err:
        for cmd in cmds:
            run.commands.append(" ".join(cmd))
            peak = 0
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            done = threading.Event()

            def poll(pid: int = proc.pid, finished: threading.Event = done) -> None:
                nonlocal peak
                while not finished.is_set():
                    peak = max(peak, _tree_rss_kb(pid))
                    finished.wait(0.05)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            code = proc.wait()
            done.set()
            poller.join()
            run.wall_s += time.perf_counter() - t0
            run.peak_mb = max(run.peak_mb, peak / 1024)
            if code != 0:
                raise RuntimeError(f"command failed ({code}), see {log}: {' '.join(cmd)}")
    return run


def decode_frames(path: Path):
    """Decoded frames of a video as uint16 sRGB RGB arrays (PyAV)."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb48le")


def score(frames_factory, truth: SequenceTruth, inputs_factory=None) -> dict:
    """Flicker; jitter and drift registered to the first frame; and, given the input frames,
    geometric jitter and drift against the true motion (None where it cannot be measured)."""
    flick = metrics.residual_flicker(frames_factory(), truth)
    motion = metrics.residual_jitter_and_drift(frames_factory())
    sc = {
        "flicker": flick.std,
        "jitter": motion.jitter_rms,
        "drift": motion.drift_max,
        "geo_jitter": None,
        "geo_drift": None,
    }
    if inputs_factory is not None:
        try:
            geo = metrics.stabilization_error_against_truth(
                frames_factory(), inputs_factory(), truth
            )
            sc.update(geo_jitter=geo.jitter_rms, geo_drift=geo.drift_max)
        except (ValueError, cv2.error) as exc:  # other frame count, no common area
            print(f"geometric error not measured: {exc}")
    return sc


# ----------------------------------------------------------------------------- contenders


def encode_args(args, width: int, height: int) -> list[str]:
    return [
        "-vf",
        f"scale={width}:{height}",
        "-c:v",
        "libx265",
        "-preset",
        args.preset,
        "-crf",
        str(args.crf),
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        "log-level=error",
    ]


def input_args(src: Path, fmt: str, fps: float) -> list[str]:
    return [
        "-y",
        "-hide_banner",
        "-loglevel",
        "error",
        "-framerate",
        str(fps),
        "-i",
        str(src / f"frame_%05d.{fmt}"),
    ]


def with_filter(enc: list[str], chain: str) -> list[str]:
    """Prepend a filter chain to the encode arguments' scale filter."""
    out = list(enc)
    i = out.index("-vf") + 1
    out[i] = f"{chain},{out[i]}"
    return out


def raw_frames(cmd: list[str], width: int, height: int):
    """Run ffmpeg writing rgb48le to a pipe; yield frames (no encode: for the parameter search)."""
    proc = subprocess.Popen(
        [*cmd, "-f", "rawvideo", "-pix_fmt", "rgb48le", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    size = width * height * 3 * 2
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint16).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        proc.wait()


def best_deflicker(src: Path, fmt: str, fps: float, truth, width: int, height: int):
    results = {}
    base = [ffmpeg_exe(), *input_args(src, fmt, fps)]
    for mode in DEFLICKER_MODES:
        for size in DEFLICKER_SIZES:
            chain = f"deflicker=mode={mode}:size={size}"
            cmd = [*base, "-vf", chain]
            flick = metrics.residual_flicker(raw_frames(cmd, width, height), truth).std
            results[(mode, size)] = flick
    best = min(results, key=results.get)
    return best, results


# ----------------------------------------------------------------------------- main


def sequence(args, frames: int, width: int, height: int) -> Path:
    src = Path(args.out) / f"seq_{width}x{height}_{frames}"
    truth = src / "truth.json"
    if truth.exists() and len(json.loads(truth.read_text())["frames"]) == frames:
        return src
    if src.exists():
        shutil.rmtree(src)
    t0 = time.perf_counter()
    generate_sequence(src, SequenceSpec(frames=frames, size=(width, height), seed=0))
    print(f"generated {frames} frames {width}x{height} in {time.perf_counter() - t0:.1f} s")
    return src


def _render_subcommand(exe: str) -> list[str]:
    """``["render"]``; ``[]`` while the app has that single command (typer then drops its name)."""
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
    return ["render"] if "Commands" in help_text else []


def skylapse_cmd(src: Path, out: Path, args, width: int, height: int, preset: str) -> list[str]:
    exe = shutil.which("skylapse") or str(Path(sys.executable).parent / "skylapse")
    return [
        exe,
        *_render_subcommand(exe),
        str(src),
        "-o",
        str(out),
        "--format",
        "h265",
        "--size",
        f"{width}x{height}",
        "--crf",
        str(args.crf),
        "--preset",
        preset,
    ]


def fmt_row(name: str, run: Run | None, sc: dict | None, plain: Run | None) -> str:
    def num(v, f):
        return f"{'-':>{int(f.lstrip('+').split('.')[0])}}" if v is None else format(v, f)

    ratio = run.wall_s / plain.wall_s if run and plain else None
    extra = run.peak_mb - plain.peak_mb if run and plain else None

    def geo(key):
        return f"{'n/a':>8}" if sc is None or sc[key] is None else format(sc[key], "8.3f")

    return (
        f"{name:<22} {num(sc and sc['flicker'], '8.4f')} {num(sc and sc['jitter'], '8.3f')} "
        f"{num(sc and sc['drift'], '8.3f')} {geo('geo_jitter')} {geo('geo_drift')} "
        f"{num(run and run.wall_s, '9.1f')} "
        f"{num(ratio, '7.2f')} {num(run and run.peak_mb, '9.0f')} {num(extra, '+8.0f')}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", default="1920x1080", help="WxH of the sequence and the outputs")
    p.add_argument("--preset", default="medium")
    p.add_argument("--crf", type=int, default=28)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--keep", action="store_true", help="keep the output videos")
    p.add_argument(
        "--long",
        action="store_true",
        help="also compare peak memory with 2,000 frames (at --long-preset)",
    )
    p.add_argument("--long-frames", type=int, default=2000)
    p.add_argument("--long-preset", default="ultrafast")
    p.add_argument("--skip-peers", action="store_true", help="only ours and the plain encode")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "videos"
    work.mkdir(exist_ok=True)
    log = out / "bench.log"
    log.write_text("")

    src = sequence(args, args.frames, width, height)
    truth = SequenceTruth.load(src)
    ff = ffmpeg_exe()
    inp = input_args(src, truth.fmt, args.fps)
    enc = encode_args(args, width, height)
    rows: list[tuple[str, Run | None, dict | None]] = []

    def jpegs():
        for f in truth.frames:
            yield cv2.imread(str(src / f.file), cv2.IMREAD_COLOR)[..., ::-1]

    rows.append(("source (no fix)", None, score(jpegs, truth, jpegs)))

    plain_out = work / "plain.mp4"
    plain = measure([[ff, *inp, *enc, str(plain_out)]], log)
    rows.append(("plain encode", plain, score(lambda: decode_frames(plain_out), truth, jpegs)))

    ours_out = work / "ours.mp4"
    try:
        ours = measure([skylapse_cmd(src, ours_out, args, width, height, args.preset)], log)
        rows.append(("skylapse render", ours, score(lambda: decode_frames(ours_out), truth, jpegs)))
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"skylapse render failed: {exc}")
        ours = None

    search = {}
    if not args.skip_peers:
        (mode, size), search = best_deflicker(src, truth.fmt, args.fps, truth, width, height)
        defl_out = work / "deflicker.mp4"
        chain = f"deflicker=mode={mode}:size={size}"
        defl = measure([[ff, *inp, *with_filter(enc, chain), str(defl_out)]], log)
        rows.append(
            (f"ffmpeg {mode}/{size}", defl, score(lambda: decode_frames(defl_out), truth, jpegs))
        )

        for label, opts in (("tripod", ":tripod=1"), ("default", "")):
            trf = work / f"vidstab_{label}.trf"
            vout = work / f"vidstab_{label}.mp4"
            detect = [ff, *inp, "-vf", f"vidstabdetect=result={trf}{opts}", "-f", "null", "-"]
            transform = [
                ff,
                *inp,
                *with_filter(enc, f"vidstabtransform=input={trf}{opts}"),
                str(vout),
            ]
            run = measure([detect, transform], log)
            rows.append(
                (f"vid.stab {label}", run, score(lambda v=vout: decode_frames(v), truth, jpegs))
            )

    print()
    print(
        f"{args.frames} frames {width}x{height}, libx265 preset {args.preset} CRF {args.crf}, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'':<22} {'':>8} {'registered to 1st':^17} {'geometric vs truth':^17}")
    print(
        f"{'':<22} {'flicker':>8} {'jitter':>8} {'drift':>8} {'jitter':>8} {'drift':>8} "
        f"{'wall s':>9} {'x plain':>7} {'peak MB':>9} {'+MB':>8}"
    )
    for name, run, sc in rows:
        print(fmt_row(name, run, sc, plain))
    print(
        f"{'target (ours)':<22} {TARGETS['flicker']:8.2f} {'':>8} {'':>8} "
        f"{TARGETS['jitter']:8.2f} {TARGETS['drift']:8.2f} {'':>9} "
        f"{TARGETS['time_ratio']:7.2f} {'':>9} {TARGETS['mem_extra_mb']:+8.0f}"
    )
    print(
        "jitter/drift px. 'registered to 1st': every frame registered to the first on the lower "
        "45 % (any video, but the sunset's shading reads as motion); 'geometric vs truth': "
        "each output frame against its input warped by the true motion (lighting cancels). "
        "The jitter and drift targets are checked on the geometric one."
    )
    if search:
        ranked = sorted(search.items(), key=lambda kv: kv[1])[:5]
        print(
            "deflicker search (residual flicker, EV): "
            + ", ".join(f"{m}/{s} {v:.4f}" for (m, s), v in ranked)
        )
    ours_score = next((sc for name, _, sc in rows if name == "skylapse render"), None)
    if ours and ours_score:
        others = [
            (n, sc)
            for n, r, sc in rows
            if r is not None and n not in ("skylapse render", "plain encode")
        ]
        for n, sc in others:
            ratios = ", ".join(
                f"{k} {ours_score[k] / sc[k]:.2f}x"
                if sc[k] and ours_score[k] is not None
                else f"{k} -"
                for k in ("flicker", "jitter", "drift", "geo_jitter", "geo_drift")
            )
            print(f"ours vs {n}: {ratios}")
        checks = {
            "flicker": ours_score["flicker"] <= TARGETS["flicker"],
            "jitter (geometric)": ours_score["geo_jitter"] is not None
            and ours_score["geo_jitter"] <= TARGETS["jitter"],
            "drift (geometric)": ours_score["geo_drift"] is not None
            and ours_score["geo_drift"] <= TARGETS["drift"],
            "time": ours.wall_s <= TARGETS["time_ratio"] * plain.wall_s,
            "memory": ours.peak_mb <= plain.peak_mb + TARGETS["mem_extra_mb"],
        }
        print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in checks.items()))

    if args.long:
        long_src = sequence(args, args.long_frames, width, height)
        lp = argparse.Namespace(**{**vars(args), "preset": args.long_preset})
        long_plain = measure(
            [
                [
                    ff,
                    *input_args(long_src, truth.fmt, args.fps),
                    *encode_args(lp, width, height),
                    str(work / "plain_long.mp4"),
                ]
            ],
            log,
        )
        print(
            f"\n{args.long_frames} frames, preset {args.long_preset}: plain "
            f"{long_plain.wall_s:.1f} s, {long_plain.peak_mb:.0f} MB"
        )
        try:
            long_ours = measure(
                [
                    skylapse_cmd(
                        long_src, work / "ours_long.mp4", args, width, height, args.long_preset
                    )
                ],
                log,
            )
            print(
                f"  skylapse render {long_ours.wall_s:.1f} s "
                f"({long_ours.wall_s / long_plain.wall_s:.2f}x), {long_ours.peak_mb:.0f} MB "
                f"({long_ours.peak_mb - long_plain.peak_mb:+.0f} MB; target "
                f"{TARGETS['mem_extra_mb']:+d} MB)"
            )
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"skylapse render failed: {exc}")

    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
