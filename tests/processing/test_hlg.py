"""`--format hlg`: a BT.2100 HLG video built from scene-linear light, which keeps the light of a
sunset that one 8-bit frame clips at both ends."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from skylapse.imaging import hlg, srgb
from skylapse.imaging.luma import luminance
from skylapse.processing import hdr
from skylapse.processing.options import RenderOptions
from skylapse.processing.render import render
from skylapse.testing import SequenceSpec, generate_sequence, scene_radiance

W, H = 384, 216
GRID = (24, 12)  # blocks of 16 x 18 px: the regions compared
#: A bracketed sunset (-2/0/+2 EV) whose sun glow is ~3000 times the shadowed valley.
SUNSET = SequenceSpec(
    frames=8,
    size=(W, H),
    shake_px=0.0,
    drift_px_per_frame=0.0,
    rotation_deg=0.0,
    clouds=False,
    sun_altitude_deg=(1.0, 0.5),
    sunset_ev=0.0,
    flicker_ev_std=0.05,
    sun_glow=500.0,
    start_log2_luminance=-2.2,
    brackets_ev=(-2.0, 0.0, 2.0),
    seed=3,
)


def blocks(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image.astype(np.float32), GRID, interpolation=cv2.INTER_AREA)


def block(image: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    bh, bw = H // GRID[1], W // GRID[0]
    return image[at[0] * bh : (at[0] + 1) * bh, at[1] * bw : (at[1] + 1) * bw]


def hlg_scene_light(path: Path) -> list[np.ndarray]:
    """Each frame of an HLG video back to scene-linear luminance: the 10-bit limited-range
    BT.2020 non-constant Y'CbCr to E' (R'G'B'), the inverse OETF, the BT.2020 luminance."""
    kr, kb = hlg.BT2020_KR, hlg.BT2020_KB
    kg = 1 - kr - kb
    to_ycbcr = np.array(
        [
            [kr, kg, kb],
            [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
            [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
        ]
    )
    to_rgb = np.linalg.inv(to_ycbcr)
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.format.name == "yuv420p10le"

            def plane(i: int, frame: av.VideoFrame = frame) -> np.ndarray:
                p = frame.planes[i]
                rows = np.frombuffer(memoryview(p), np.uint16).reshape(p.height, -1)
                return rows[:, : p.width].astype(np.float64)

            y = (plane(0) - 64) / 876
            cb, cr = (
                (cv2.resize(plane(i), (W, H), interpolation=cv2.INTER_LINEAR) - 512) / 896
                for i in (1, 2)
            )
            signal = np.stack([y, cb, cr], axis=-1) @ to_rgb.T
            e = hlg.inverse_oetf(signal)
            out.append(e @ np.array([kr, kg, kb]))
    return out


@pytest.fixture(scope="module")
def sunset(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("sunset")
    generate_sequence(src, SUNSET)
    return src


def test_hlg_keeps_the_light_that_one_jpeg_clips_at_both_ends(sunset: Path, tmp_path: Path):
    truth = [blocks(luminance(scene_radiance(SUNSET, i))) for i in range(SUNSET.frames)]
    mean = np.mean(truth, axis=0)
    sky = np.unravel_index(np.argmax(mean), mean.shape)  # the sky near the sun
    valley = np.unravel_index(np.argmin(mean), mean.shape)  # the shadowed valley
    true_ratio = np.array([t[sky] / t[valley] for t in truth])
    assert true_ratio.mean() > 2000

    # the 0 EV JPEG clips both ends: the sky near the sun is white, the valley is a code or two
    jpeg = cv2.cvtColor(cv2.imread(str(sunset / "frame_00003_b1.jpg")), cv2.COLOR_BGR2RGB)
    assert (block(jpeg, sky).max(axis=2) == 255).mean() > 0.5
    assert block(jpeg, valley).mean() < 3
    in_jpeg = blocks(luminance(srgb.to_linear(jpeg)))
    assert in_jpeg[sky] / in_jpeg[valley] < 0.6 * true_ratio[3]

    out = tmp_path / "sunset.mp4"
    options = RenderOptions(formats="hlg", preset="ultrafast", crf=20, stabilize="off")
    summary = render(sunset, out, options)
    assert summary.shots_rendered == SUNSET.frames  # one video frame per bracket set
    light = [blocks(e) for e in hlg_scene_light(out)]
    assert len(light) == SUNSET.frames
    ratio = np.array([e[sky] / e[valley] for e in light])
    error = ratio.mean() / true_ratio.mean() - 1
    assert abs(error) < 0.10, (ratio / true_ratio).round(3)
    assert max(e[sky] for e in light) < 0.95  # below the HLG peak: not clipped


def test_the_hlg_file_is_tagged_bt2100_hlg(sunset: Path, tmp_path: Path):
    out = tmp_path / "tagged.mp4"
    render(sunset, out, RenderOptions(formats="hlg@108p", preset="ultrafast", denoise="off"))
    with av.open(str(out)) as container:
        context = container.streams.video[0].codec_context
        assert (context.name, context.profile, context.pix_fmt) == (
            "hevc",
            "Main 10",
            "yuv420p10le",
        )
        assert (context.color_primaries, context.color_trc, context.colorspace) == (9, 18, 9)
        assert (context.width, context.height) == (192, 108)
    # what ffmpeg (shipped by imageio-ffmpeg; there is no ffprobe) reports of the MP4 ...
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    info = subprocess.run([ffmpeg, "-hide_banner", "-i", str(out)], capture_output=True, text=True)
    assert "yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67)" in info.stderr
    # ... and of the bare HEVC stream, whose VUI alone carries the colour
    raw = tmp_path / "tagged.hevc"
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(out), "-c", "copy", "-f", "hevc", str(raw)], check=True
    )
    info = subprocess.run([ffmpeg, "-hide_banner", "-i", str(raw)], capture_output=True, text=True)
    assert "bt2020nc/bt2020/arib-std-b67" in info.stderr
    # the MP4's colr box: nclx, primaries 9, transfer 18, matrix 9, limited range
    assert b"colrnclx\x00\x09\x00\x12\x00\x09\x00" in out.read_bytes()


def test_hlg_oetf_is_bt2100_table_5():
    e = np.array([0.0, 1e-4, 1 / 12, 0.265, 0.5, 1.0])
    signal = hlg.oetf(e)
    assert signal[2] == pytest.approx(0.5) and signal[-1] == pytest.approx(1.0, abs=1e-7)
    assert signal[1] == pytest.approx(np.sqrt(3e-4))
    assert signal[3] == pytest.approx(0.75, abs=1e-4)  # BT.2408 reference white
    assert hlg.inverse_oetf(signal) == pytest.approx(e, rel=1e-9, abs=1e-12)
    coded = hlg.encode16(np.float32(e)) / 65535
    assert coded == pytest.approx(signal, abs=2e-4)


def test_bt709_to_bt2020_is_bt2087():
    bt2087 = [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
    assert np.allclose(hlg.BT709_TO_BT2020, bt2087, atol=1e-4)
    white = hlg.BT709_TO_BT2020 @ np.ones(3)
    assert white == pytest.approx(np.ones(3))
    # luminance is kept: BT.709 weights on 709 RGB = BT.2020 weights on the converted RGB
    rgb = np.array([0.8, 0.3, 0.1])
    y709 = np.array([0.2126, 0.7152, 0.0722]) @ rgb
    y2020 = np.array([hlg.BT2020_KR, 1 - hlg.BT2020_KR - hlg.BT2020_KB, hlg.BT2020_KB])
    assert y2020 @ (hlg.BT709_TO_BT2020 @ rgb) == pytest.approx(y709, rel=2e-3)


def test_merge_radiance_weighs_frames_by_exposure_and_skips_clipped_ones():
    light = np.geomspace(1e-3, 3.0, 64, dtype=np.float32)  # linear, at the 0 EV exposure
    rgb = np.repeat(light[None, :, None], 3, axis=2)
    exposures = [0.25, 1.0, 4.0]
    frames = [srgb.from_linear(rgb * t) for t in exposures]
    merged = hdr.merge_radiance(frames, exposures)[0, :, 1]
    assert merged == pytest.approx(light, rel=0.02)
    # one frame alone clips at 1 and loses the shadows to quantisation
    alone = hdr.merge_radiance(frames[1:2], [1.0])[0, :, 1]
    assert alone.max() == pytest.approx(1.0)


def test_the_peak_leaves_sdr_white_at_reference_white_unless_highlights_need_room():
    assert hdr.hlg_peak([]) == pytest.approx(1 / 0.265, rel=1e-3)
    assert hdr.hlg_peak([0.5, 2.0]) == hdr.DEFAULT_PEAK
    assert hdr.hlg_peak([3.0, 6.0]) == 6.0
    assert hdr.hlg_peak([1e6]) == hdr.DEFAULT_PEAK * hdr.MAX_HEADROOM
    grade = hdr.HlgGrade(peak=hdr.DEFAULT_PEAK)
    white = grade.apply(np.ones((2, 2, 3), np.float32))
    assert white / 65535 == pytest.approx(0.75, abs=1e-3)
    brighter = grade.apply(np.ones((2, 2, 3), np.float32), gain=2.0)
    assert (brighter > white).all()
