"""`skylapse render` end to end on generated sequences with known flicker and shake."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skylapse.cli import app
from skylapse.exif import exif_bytes, with_exif_jpeg
from skylapse.imaging import srgb
from skylapse.processing import colour, measure
from skylapse.processing.options import RenderOptions
from skylapse.processing.render import RenderError, render
from skylapse.testing import SequenceSpec, SequenceTruth, generate_sequence

runner = CliRunner()
FAST = {"preset": "ultrafast"}
W, H = 320, 180


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> tuple[Path, SequenceTruth]:
    src = tmp_path_factory.mktemp("seq")
    truth = generate_sequence(
        src,
        SequenceSpec(
            frames=48,
            size=(W, H),
            shake_px=1.0,
            drift_px_per_frame=0.03,
            flicker_ev_std=0.08,
            sunset_ev=-1.5,
            seed=3,
        ),
    )
    return src, truth


def decode(
    path: Path, fmt: str = "rgb48le"
) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format=fmt) for f in container.decode(stream)]
        return frames, stream


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return {
            "codec": s.codec_context.name,
            "pix_fmt": s.codec_context.pix_fmt,
            "size": (s.width, s.height),
            "tag": s.codec_tag,
        }


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_default_render_is_hevc_main10_and_h264_preview_with_keogram_and_contact_sheet(
    sequence, tmp_path
):
    src, _truth = sequence
    before = tree_digest(src)
    out = tmp_path / "out.mp4"
    summary = render(src, out, RenderOptions(**FAST))
    assert summary.frames_in == 48 and summary.shots_rendered == 48 and not summary.skipped
    info = probe(out)
    assert info == {"codec": "hevc", "pix_fmt": "yuv420p10le", "size": (W, H), "tag": "hvc1"}
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable while downloading
    frames, _ = decode(out)
    assert len(frames) == 48
    keogram = cv2.imread(str(tmp_path / "out.keogram.png"))
    assert keogram is not None and keogram.shape[1] >= 48
    assert cv2.imread(str(tmp_path / "out.contact.png")) is not None
    preview = tmp_path / "out.preview.mp4"
    assert probe(preview)["codec"] == "h264"
    assert set(summary.outputs) == {
        out,
        preview,
        tmp_path / "out.keogram.png",
        tmp_path / "out.contact.png",
    }
    assert {"deflicker", "stabilize", "denoise", "convert h265"} <= set(summary.stage_seconds)
    assert tree_digest(src) == before  # nothing in SRC is modified


def test_deflicker_and_stabilization_remove_flicker_and_shake_but_keep_the_sunset(
    sequence, tmp_path
):
    src, truth = sequence
    out = tmp_path / "fixed.mp4"
    render(src, out, RenderOptions(formats=("h264",), crf=12, **FAST))
    raw = tmp_path / "raw.mp4"
    render(
        src,
        raw,
        RenderOptions(
            formats=("h264",), crf=12, deflicker=False, stabilize="off", denoise="off", **FAST
        ),
    )
    fixed_frames, _ = decode(out)
    raw_frames, _ = decode(raw)
    fixed = measure.residual_flicker(fixed_frames, truth)
    untouched = measure.residual_flicker(raw_frames, truth)
    assert untouched.std > 0.06  # the flicker is really there
    assert fixed.std < 0.03
    # the sunset is kept: the output darkens by the true amount
    lum = np.array([measure.central_log2_luminance(f) for f in fixed_frames])
    true_drop = truth.column("log2_luminance")[-1] - truth.column("log2_luminance")[0]
    assert lum[-4:].mean() - lum[:4].mean() == pytest.approx(true_drop, abs=0.15)
    motion_raw = measure.residual_jitter_and_drift(raw_frames)
    assert motion_raw.jitter_rms > 0.8 and motion_raw.drift_max > 1.5
    # The shake is removed: geometric error against the true camera motion. Registering every
    # output frame to the first would also count the sunset's moving shading as drift (0.89 px
    # here for a perfect stabilizer; see measure.residual_jitter_and_drift).
    inputs = [cv2.imread(str(src / f.file))[..., ::-1] for f in truth.frames]
    motion = measure.stabilization_error_against_truth(fixed_frames, inputs, truth)
    assert motion.jitter_rms < 0.25 and motion.drift_max < 0.6


def test_formats_size_and_frames_output(sequence, tmp_path):
    src, _ = sequence
    out = tmp_path / "clip.mp4"
    summary = render(
        src,
        out,
        RenderOptions(
            formats=("h265", "h264", "frames"),
            size="160x90",
            frames_format="jpg",
            keogram=False,
            contact_sheet=False,
            **FAST,
        ),
    )
    assert probe(out)["size"] == (160, 90)
    preview = tmp_path / "clip.preview.mp4"
    assert probe(preview)["codec"] == "h264" and probe(preview)["pix_fmt"] == "yuv420p"
    stills = sorted((tmp_path / "clip.frames").iterdir())
    assert len(stills) == 48 and cv2.imread(str(stills[0])).shape == (90, 160, 3)
    assert not (tmp_path / "clip.keogram.png").exists()
    assert set(summary.outputs) == {out, preview, tmp_path / "clip.frames"}


def test_bad_frames_are_skipped_and_counted_and_src_untouched(sequence, tmp_path):
    src0, _ = sequence
    src = tmp_path / "src"
    shutil.copytree(src0, src)
    frames = sorted(src.glob("*.jpg"))
    (src / "zero.jpg").write_bytes(b"")
    data = frames[5].read_bytes()
    frames[5].write_bytes(data[: len(data) // 2])  # truncated
    frames[9].write_bytes(b"\xff\xd8 this is not image data at all \xff\xd9")
    small = cv2.resize(cv2.imread(str(frames[12])), (W // 2, H // 2))
    cv2.imwrite(str(frames[12]), small)  # same aspect: scaled to fit
    square = cv2.resize(cv2.imread(str(frames[13])), (H, H))
    cv2.imwrite(str(frames[13]), square)  # other aspect: refused
    before = tree_digest(src)
    summary = render(src, tmp_path / "o.mp4", RenderOptions(formats=("h264",), **FAST))
    reasons = {p.name: r for p, r in summary.skipped}
    assert set(reasons) == {"zero.jpg", frames[5].name, frames[9].name, frames[13].name}
    assert "aspect" in reasons[frames[13].name]
    assert summary.frames_in == 49 and summary.shots_rendered == 45
    assert len(decode(tmp_path / "o.mp4", "rgb24")[0]) == 45
    assert tree_digest(src) == before


def test_cli_errors_exit_2_with_one_line(tmp_path, sequence):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["render", str(empty), "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2
    assert "no readable frames" in result.output and len(result.output.strip().splitlines()) == 1
    src, _ = sequence
    result = runner.invoke(app, ["render", str(src), "-o", str(tmp_path / "nope" / "x.mp4")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(
        app, ["render", str(src), "-o", str(tmp_path / "x.mp4"), "--format", "gif"]
    )
    assert result.exit_code == 2 and "--format" in result.output
    with pytest.raises(RenderError):
        render(tmp_path / "missing-folder", tmp_path / "y.mp4")


def test_cli_render_prints_summary(sequence, tmp_path):
    src, _ = sequence
    result = runner.invoke(
        app,
        [
            "render",
            str(src),
            "-o",
            str(tmp_path / "c.mp4"),
            "--format",
            "h264",
            "--preset",
            "ultrafast",
            "--no-keogram",
            "--white-balance",
            "gray-world",
            "--saturation",
            "1.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "frames rendered" in result.output and "48" in result.output
    assert (tmp_path / "c.mp4").exists() and not (tmp_path / "c.keogram.png").exists()


def write_brackets(folder: Path, base_frames: list[Path], evs: tuple[float, ...]) -> None:
    """Turn single frames into bracket sets: one file per EV offset with matching EXIF."""
    folder.mkdir()
    t0 = datetime(2026, 6, 21, 20, 0)
    n = 0
    for i, frame in enumerate(base_frames):
        rgb = srgb.to_linear(
            srgb.to_uint16(cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB))
        )
        for ev in evs:
            img = srgb.to_uint8(srgb.from_linear(rgb * 2.0**ev))
            _ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            when = t0 + timedelta(seconds=10 * i, milliseconds=100 * n)
            exif = exif_bytes(when, exposure_time_s=0.01 * 2.0**ev, iso=100, f_number=8)
            (folder / f"img_{n:04d}.jpg").write_bytes(with_exif_jpeg(enc.tobytes(), exif))
            n += 1


@pytest.mark.parametrize("brackets", ["3", "auto"])
def test_hdr_brackets_fuse_into_one_frame_per_set(sequence, tmp_path, brackets):
    src, _ = sequence
    sets = tmp_path / "brackets"
    write_brackets(sets, sorted(src.glob("*.jpg"))[:8], (-2.0, 0.0, 2.0))
    result = runner.invoke(
        app,
        [
            "render",
            str(sets),
            "-o",
            str(tmp_path / "hdr.mp4"),
            "--format",
            "h264",
            "--preset",
            "ultrafast",
            "--brackets",
            brackets,
        ],
    )
    assert result.exit_code == 0, result.output
    frames, _ = decode(tmp_path / "hdr.mp4", "rgb24")
    assert len(frames) == 8


def test_focus_stack_and_lens_profile(sequence, tmp_path):
    src, _ = sequence
    profile = tmp_path / "lens.yaml"
    profile.write_text(
        "name: test\nfocal_length: 0.8\ndistortion: {k1: -0.05, k2: 0.01}\nvignetting: {a: -0.2}\n"
    )
    out = tmp_path / "fs.mp4"
    summary = render(
        src, out, RenderOptions(formats=("h264",), focus_stack=2, lens_profile=profile, **FAST)
    )
    assert summary.shots_rendered == 24
    assert {"fusion", "lens"} <= set(summary.stage_seconds)
    assert len(decode(out, "rgb24")[0]) == 24


def test_the_overcast_render_applies_its_recorded_tone(sequence, tmp_path):
    """Frames whose capture recorded the overcast strategy's tone come out dehazed, lifted and
    contrasted: exactly the plain render with `colour.ToneStage` applied."""
    src, _ = sequence
    tone = {"shadow_lift": 0.25, "contrast": 1.2, "dehaze": 0.4}
    folders = {"plain": tmp_path / "plain", "overcast": tmp_path / "overcast"}
    for folder in folders.values():
        folder.mkdir()
    t0 = datetime(2024, 3, 20, 17, 0)
    for i, path in enumerate(sorted(src.glob("*.jpg"))[:10]):
        jpeg = cv2.imencode(".jpg", cv2.imread(str(path)))[1].tobytes()
        when = t0 + timedelta(seconds=10 * i)
        record = {"session_id": "s", "frame_number": i, "strategy": "overcast", "tone": tone}
        for name, folder in folders.items():
            exif = exif_bytes(when, skylapse=record if name == "overcast" else None)
            (folder / f"frame_{i:06d}.jpg").write_bytes(with_exif_jpeg(jpeg, exif))
    options = RenderOptions(
        formats=("frames",), deflicker=False, stabilize="off", denoise="off",
        keogram=False, contact_sheet=False,
    )  # fmt: skip
    for name, folder in folders.items():
        render(folder, tmp_path / f"{name}.mp4", options)

    def stills(name: str) -> list[np.ndarray]:
        files = sorted((tmp_path / f"{name}.frames").glob("*.png"))
        return [cv2.imread(str(f), cv2.IMREAD_UNCHANGED)[..., ::-1] for f in files]

    plain, toned = stills("plain"), stills("overcast")
    stage = colour.ToneStage([colour.Tone(**tone)] * len(plain), ramp_frames=24)
    for n, (p, t) in enumerate(zip(plain, toned, strict=True)):
        expected = stage.apply(n, np.ascontiguousarray(p))
        assert np.abs(t.astype(int) - expected.astype(int)).max() <= 2
        assert np.abs(t.astype(int) - p.astype(int)).mean() > 500  # visibly graded
