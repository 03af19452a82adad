"""Several outputs from one pass: `--format h265@2160p,h264@1080p` against `h265@2160p` alone.

Generates (and caches in bench/out/) a synthetic sunset at the source size, then renders it
(in this process, with the render's defaults but the preset) twice per repeat, alternating
which goes first: the H.265 master alone, and the master with a 1080p H.264 preview scaled
from the same processed frames. The target is a wall-time ratio of at most 1.15: one more
output costs its scaling and its encoder, never a second decode or processing pass.

    .venv/bin/python bench/outputs_bench.py                  # 24 frames, 3840x2160, medium
    .venv/bin/python bench/outputs_bench.py --frames 12 --size 1920x1080 --master 1080p \\
        --preview 540p                                       # quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from skylapse.processing.options import RenderOptions
from skylapse.processing.render import render
from skylapse.testing import SequenceSpec, generate_sequence

HERE = Path(__file__).resolve().parent
TARGET = 1.15


def sequence(out: Path, frames: int, width: int, height: int) -> Path:
    src = out / f"seq_{width}x{height}_{frames}"
    if not (src / "truth.json").exists():
        print(f"generating {frames} frames of {width}x{height} in {src} ...", flush=True)
        generate_sequence(src, SequenceSpec(frames=frames, size=(width, height), seed=11))
    return src


def timed(src: Path, out: Path, formats: str, preset: str) -> float:
    t0 = time.perf_counter()
    summary = render(src, out, RenderOptions(formats=formats, preset=preset))
    wall = time.perf_counter() - t0
    print(f"  {formats:<28} {wall:7.1f} s  ({summary.shots_rendered} frames)", flush=True)
    return wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", default="3840x2160", help="WxH of the source frames")
    p.add_argument("--master", default="2160p", help="size of the H.265 master")
    p.add_argument("--preview", default="1080p", help="size of the H.264 preview")
    p.add_argument("--preset", default="medium")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "out"))
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = sequence(out, args.frames, width, height)
    alone = f"h265@{args.master}"
    both = f"h265@{args.master},h264@{args.preview}"
    times: dict[str, list[float]] = {alone: [], both: []}
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        order = (alone, both) if r % 2 == 0 else (both, alone)
        for formats in order:
            times[formats].append(timed(src, out / "outputs_bench.mp4", formats, args.preset))
    ratio = statistics.median(times[both]) / statistics.median(times[alone])
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(
        f"\n{both} / {alone}: {ratio:.3f} (target <= {TARGET}) {verdict}; medians "
        f"{statistics.median(times[both]):.1f} s / {statistics.median(times[alone]):.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
