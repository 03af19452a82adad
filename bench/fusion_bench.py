"""Benchmark Skylapse's exposure fusion and focus stacking against enfuse.

Generates (fixed seed) a 1080p bracket set (-2/0/+2 EV, sub-pixel misaligned) of a scene with
about 15 EV of range, and a 1080p five-frame focus stack with focus breathing and a known
all-in-focus truth. Both sets are written as 16-bit TIFFs; Skylapse aligns them, and enfuse
fuses the aligned TIFFs (it has no aligner of its own), so both fusions see identical inputs.

Reported: wall time of enfuse on files and of Skylapse reading the same files, fusing and
writing a TIFF (plus Skylapse's pure compute time and its alignment time), SSIM (Wang et al.
2004) of Skylapse's fusion against enfuse's, clipped-pixel fractions, and for focus stacking
the PSNR against the truth of every frame, of Skylapse and of enfuse --hard-mask.

Exits non-zero only on errors (e.g. enfuse missing), never on missed targets.

    .venv/bin/python bench/fusion_bench.py [--out bench/out/fusion] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from skylapse.imaging import srgb
from skylapse.imaging.luma import luminance
from skylapse.processing.exposure_fusion import (
    align_brackets,
    estimate_bracket_warps,
    fuse_exposures,
    laplacian_blend,
)
from skylapse.processing.focus_stack import align_focus_stack, fuse_focus_stack

W, H = 1920, 1080
SEED = 2024
EVS = (-2.0, 0.0, 2.0)
SHIFTS = ((0.42, -0.73), (0.0, 0.0), (-1.36, 0.58))
FOCUS = (0.1, 0.3, 0.5, 0.7, 0.9)
MAX_BLUR = 6.0
# enfuse's defaults, so that the looks can be compared
ENFUSE_WEIGHTS = {"contrast_weight": 0.0, "saturation_weight": 0.2, "exposure_weight": 1.0}
CLIP_MARGIN = 64  # a channel within 0.1 % of black or white counts as clipped


# ---------------------------------------------------------------------------------------------
# Synthetic inputs


def value_noise(rng: np.random.Generator, cell: float, octaves: int = 4) -> np.ndarray:
    """Fractal value noise (sum of bicubically upscaled random grids), unit variance."""
    out = np.zeros((H, W), np.float32)
    amp = 1.0
    for k in range(octaves):
        c = max(cell / 2**k, 1.0)
        grid = rng.standard_normal((int(H / c) + 2, int(W / c) + 2)).astype(np.float32)
        big = cv2.resize(grid, None, fx=c, fy=c, interpolation=cv2.INTER_CUBIC)[:H, :W]
        out += amp * big
        amp *= 0.55
    return out / out.std()


def hdr_scene(rng: np.random.Generator) -> np.ndarray:
    """Linear RGB radiance, 1.0 = white at EV 0: sky with clouds and sun (clipped even at -2
    EV), sunlit ridges, a valley in deep shadow."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    ridge = H * 0.42 + 90 * value_noise(rng, 300, 3)[0] + 0.05 * (x - W / 2)
    is_sky = cv2.GaussianBlur((y < ridge).astype(np.float32), (0, 0), 1.2)
    clouds = np.clip(value_noise(rng, 160, 5) * 0.8, -1, 3)
    sky_lum = 1.2 * (1.6 - y / H) * np.exp(0.45 * clouds + 0.08 * value_noise(rng, 4, 2))
    sky = sky_lum[..., None] * np.float32([0.7, 0.88, 1.2])
    r2 = (x - W * 0.72) ** 2 + (y - H * 0.16) ** 2
    sky += (60 * np.exp(-r2 / (2 * 18.0**2)) + 1.5 * np.exp(-r2 / (2 * 160.0**2)))[..., None]
    rock = np.exp(0.5 * value_noise(rng, 40, 5) + 0.25 * value_noise(rng, 3, 2))
    lit = 0.06 * rock
    shade_edge = H * 0.68 + 60 * value_noise(rng, 250, 2)[0]  # a shadow line in the valley
    shade = cv2.GaussianBlur((y > shade_edge).astype(np.float32), (0, 0), 3)
    ground_lum = lit * (1 - shade * 0.985)  # the shadow is ~6 EV below the lit rock
    ground = ground_lum[..., None] * np.float32([1.1, 0.95, 0.75])
    grass = value_noise(rng, 20, 3)[..., None] * np.float32([-0.15, 0.1, -0.05])
    ground = ground * (1 + grass)
    scene = is_sky[..., None] * sky + (1 - is_sky[..., None]) * ground
    return np.maximum(scene, 0).astype(np.float32)


def shifted(img: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    out = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.maximum(out, 0)


FULL_WELL_E = 8000.0  # electrons: a Raspberry Pi HQ camera (IMX477, 1.55 um pixels) at base ISO
READ_NOISE_E = 4.0


def expose(radiance: np.ndarray, ev: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor model: gain 2**ev, shot + read noise of a small Pi sensor, clip, sRGB encode."""
    lin = radiance * np.float32(2.0**ev)
    var = lin / FULL_WELL_E + (READ_NOISE_E / FULL_WELL_E) ** 2
    noise = rng.standard_normal(lin.shape, dtype=np.float32) * np.sqrt(var)
    return srgb.from_linear(np.clip(lin + noise, 0, 1))


def focus_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All-in-focus linear RGB and a depth map in [0, 1]: textured surfaces (fine and coarse
    detail) next to smooth ones (a sky band, a shaded sphere), as in a real scene."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    lum = 0.22 * np.exp(0.45 * value_noise(rng, 2.5, 2) + 0.4 * value_noise(rng, 60, 4))
    tint = 0.18 * value_noise(rng, 120, 2)
    rgb = lum[..., None] * np.stack([1 + tint, np.ones_like(tint), 1 - tint], axis=2)
    depth = 0.05 + 0.9 * x / W  # a receding textured plane ...
    near = (x - W * 0.3) ** 2 + (y - H * 0.55) ** 2 < (H * 0.28) ** 2
    depth = np.where(near, 0.85, depth)  # ... a near textured disc ...
    far = (y < H * 0.22) & (x > W * 0.55)
    depth = np.where(far, 0.12, depth)  # ... a far textured patch ...
    sky = (y < H * 0.12) & ~far
    sky_rgb = (0.35 + 0.25 * y / H)[..., None] * np.float32([0.7, 0.85, 1.0])
    rgb = np.where(sky[..., None], sky_rgb, rgb)
    depth = np.where(sky, 1.0, depth)  # ... a smooth sky band far away ...
    r2 = ((x - W * 0.78) ** 2 + (y - H * 0.7) ** 2) / (H * 0.18) ** 2
    ball = r2 < 1
    shade = 0.08 + 0.3 * np.sqrt(np.clip(1 - r2, 0, 1))
    rgb = np.where(ball[..., None], shade[..., None] * np.float32([1.0, 0.8, 0.6]), rgb)
    depth = np.where(ball, 0.6, depth)  # ... and a smooth shaded sphere
    return np.clip(rgb, 0, 1).astype(np.float32), depth.astype(np.float32)


def defocus(truth: np.ndarray, depth: np.ndarray, focus: float) -> np.ndarray:
    """Gaussian blur of sigma MAX_BLUR * |depth - focus|, interpolated between 13 uniformly
    blurred copies."""
    sigmas = np.linspace(0.0, MAX_BLUR, 13)
    want = MAX_BLUR * np.abs(depth - focus)
    out = np.zeros_like(truth)
    for s in sigmas:
        w = np.clip(1 - np.abs(want - s) / sigmas[1], 0, 1)
        if not w.any():
            continue
        blurred = truth if s == 0 else cv2.GaussianBlur(truth, (0, 0), float(s))
        out += blurred * w[..., None]
    return out


def breathe(img: np.ndarray, i: int) -> np.ndarray:
    """Focus breathing: +0.3 % magnification per focus step about the centre, plus drift."""
    s = 1 + 0.003 * (i - 2)
    m = np.float32(
        [[s, 0, (1 - s) * W / 2 + 0.35 * (i - 2)], [0, s, (1 - s) * H / 2 - 0.25 * (i - 2)]]
    )
    return cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


# ---------------------------------------------------------------------------------------------
# I/O and metrics


def write_tiff(path: Path, frame: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def read_tiff(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def clipped_fraction(frame: np.ndarray) -> float:
    """Pixels with any channel within CLIP_MARGIN of black or white."""
    bad = (frame <= CLIP_MARGIN) | (frame >= srgb.MAX16 - CLIP_MARGIN)
    return float(np.mean(np.any(bad, axis=2)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli 2004): Gaussian window sigma 1.5, K1 = 0.01,
    K2 = 0.03, on values in [0, 1], averaged over the R, G, B channels."""
    x = a.astype(np.float32) / srgb.MAX16
    y = b.astype(np.float32) / srgb.MAX16
    c1, c2 = 0.01**2, 0.03**2

    def blur(v):
        return cv2.GaussianBlur(v, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def psnr(a: np.ndarray, b: np.ndarray, margin: int = 24) -> float:
    """PSNR on sRGB values, ignoring a border (where alignment replicates edges)."""
    d = (
        a[margin:-margin, margin:-margin].astype(np.float64) - b[margin:-margin, margin:-margin]
    ) / srgb.MAX16
    return float(10 * np.log10(1.0 / np.mean(d * d)))


def timed(fn, repeat: int):
    """(best wall time in seconds, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def run_enfuse(args: list[str], inputs: list[Path], output: Path) -> None:
    cmd = ["enfuse", *args, "--compression=none", "-o", str(output), *map(str, inputs)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/fusion"))
    parser.add_argument("--repeat", type=int, default=3, help="timing runs; the best is kept")
    args = parser.parse_args()
    if shutil.which("enfuse") is None:
        print("enfuse not found (apt-get install enfuse)", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))

    # ---- exposure fusion ------------------------------------------------------------------
    scene = hdr_scene(rng)
    lum = luminance(scene)
    span = np.log2(np.percentile(lum, 99.99) / np.percentile(lum, 0.5))
    brackets = [expose(shifted(scene, s), ev, rng) for ev, s in zip(EVS, SHIFTS, strict=True)]
    raw_paths = [out / f"bracket_{i}.tif" for i in range(len(brackets))]
    for p, f in zip(raw_paths, brackets, strict=True):
        write_tiff(p, f)

    t_align, aligned = timed(lambda: align_brackets(brackets), args.repeat)
    aligned_paths = [out / f"bracket_{i}_aligned.tif" for i in range(len(aligned))]
    for p, f in zip(aligned_paths, aligned, strict=True):
        write_tiff(p, f)

    enfuse_path, ours_path = out / "hdr_enfuse.tif", out / "hdr_skylapse.tif"
    t_enfuse, _ = timed(lambda: run_enfuse([], aligned_paths, enfuse_path), args.repeat)

    def ours_end_to_end() -> None:
        write_tiff(
            ours_path, fuse_exposures([read_tiff(p) for p in aligned_paths], **ENFUSE_WEIGHTS)
        )

    def ours_with_alignment() -> None:
        frames = align_brackets([read_tiff(p) for p in raw_paths])
        write_tiff(out / "hdr_skylapse_from_raw.tif", fuse_exposures(frames, **ENFUSE_WEIGHTS))

    t_ours, _ = timed(ours_end_to_end, args.repeat)
    t_ours_raw, _ = timed(ours_with_alignment, args.repeat)
    t_compute, fused = timed(lambda: fuse_exposures(aligned, **ENFUSE_WEIGHTS), args.repeat)
    enfused = read_tiff(enfuse_path)
    mertens = fuse_exposures(aligned)  # the paper's weights (1, 1, 1), for the record

    warps = estimate_bracket_warps(brackets)
    align_err = max(np.abs(w[:, 2] - s).max() for w, s in zip(warps, SHIFTS, strict=True))
    row("scene dynamic range (EV, 0.5..99.99 %)", f"{span:.1f}", ">= 10")
    row("bracket alignment, max error (px)", f"{align_err:.3f}", "<= 0.1")
    row("enfuse, files -> file (s)", f"{t_enfuse:.3f}")
    row("skylapse, files -> file (s)", f"{t_ours:.3f}", "<= enfuse")
    row("  speed-up vs enfuse", f"{t_enfuse / t_ours:.1f}x", ">= 1.0x")
    row("skylapse fuse compute only (s)", f"{t_compute:.3f}")
    row("skylapse align compute only (s)", f"{t_align:.3f}")
    row("skylapse raw files -> align -> fuse -> file (s)", f"{t_ours_raw:.3f}")
    row("SSIM skylapse vs enfuse (same weights)", f"{ssim(fused, enfused):.4f}", ">= 0.95")
    row("SSIM skylapse (Mertens 1/1/1) vs enfuse", f"{ssim(mertens, enfused):.4f}")
    for ev, f in zip(EVS, brackets, strict=True):
        row(f"clipped fraction, bracket {ev:+.0f} EV", f"{clipped_fraction(f):.4f}")
    row("clipped fraction, enfuse", f"{clipped_fraction(enfused):.4f}")
    clip_ours = clipped_fraction(fused)
    clip_best = min(clipped_fraction(f) for f in brackets)
    row("clipped fraction, skylapse", f"{clip_ours:.4f}", f"< {clip_best:.4f}")

    # ---- focus stacking -------------------------------------------------------------------
    truth_lin, depth = focus_scene(rng)
    truth = srgb.from_linear(truth_lin)
    stack = []
    for i, focus in enumerate(FOCUS):
        lin = breathe(defocus(truth_lin, depth, focus), i)
        stack.append(expose(lin, 0.0, rng))
    t_falign, fstack = timed(lambda: align_focus_stack(stack), 1)
    fpaths = [out / f"focus_{i}_aligned.tif" for i in range(len(fstack))]
    for p, f in zip(fpaths, fstack, strict=True):
        write_tiff(p, f)
    fenfuse_path, fours_path = out / "focus_enfuse.tif", out / "focus_skylapse.tif"
    enfuse_focus_args = [
        "--exposure-weight=0",
        "--saturation-weight=0",
        "--contrast-weight=1",
        "--hard-mask",
    ]
    t_fenfuse, _ = timed(lambda: run_enfuse(enfuse_focus_args, fpaths, fenfuse_path), 1)

    def ours_focus() -> None:
        write_tiff(fours_path, fuse_focus_stack([read_tiff(p) for p in fpaths]))

    t_fours, _ = timed(ours_focus, args.repeat)
    t_fcompute, ffused = timed(lambda: fuse_focus_stack(fstack), args.repeat)
    p_ours, p_enfuse = psnr(ffused, truth), psnr(read_tiff(fenfuse_path), truth)
    singles = [psnr(f, truth) for f in fstack]
    # the ceiling of any selection: blend by the true depth's nearest focus step
    nearest = np.argmin(np.abs(depth[..., None] - np.float32(FOCUS)), axis=2)
    oracle = laplacian_blend(fstack, [(nearest == i).astype(np.float32) for i in range(5)])
    oracle = np.clip(oracle + 0.5, 0, srgb.MAX16).astype(np.uint16)
    row("focus: best single frame PSNR (dB)", f"{max(singles):.2f}")
    row("focus: oracle selection (true depth) PSNR (dB)", f"{psnr(oracle, truth):.2f}")
    row("focus: enfuse --hard-mask PSNR (dB)", f"{p_enfuse:.2f}")
    row("focus: skylapse PSNR (dB)", f"{p_ours:.2f}", f">= {p_enfuse + 0.5:.2f}")
    row("focus: enfuse, files -> file (s)", f"{t_fenfuse:.3f}")
    row("focus: skylapse, files -> file (s)", f"{t_fours:.3f}")
    row("focus: skylapse fuse compute only (s)", f"{t_fcompute:.3f}")
    row("focus: skylapse align compute only (s)", f"{t_falign:.3f}")

    width = max(len(r[0]) for r in rows)
    print(
        f"fusion bench: {W}x{H}, seed {SEED}, {len(EVS)} brackets, {len(FOCUS)} focus steps,"
        f" best of {args.repeat} runs; files in {out}"
    )
    print(f"{'metric':<{width}}  {'value':>10}  target")
    print("-" * (width + 24))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>10}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
