"""Every output from one pass (``--format FORMAT[@SIZE],...``), and the default that fuses the
bracket sets a capture recorded."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import SimulatedClock
from skylapse.capture.service import CaptureService
from skylapse.cli import app
from skylapse.config import default_config
from skylapse.processing import sources
from skylapse.processing.options import RenderOptions
from skylapse.processing.outputs import OutputPlan
from skylapse.processing.render import render
from skylapse.testing import SequenceSpec, generate_sequence

FRAMES = 12


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("seq")
    generate_sequence(src, SequenceSpec(frames=FRAMES, size=(320, 180), seed=5))
    return src


def video(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, (stream.codec_context.width, stream.codec_context.height)


def test_every_output_is_written_from_one_read_of_each_frame(sequence, tmp_path, monkeypatch):
    reads: list[Path] = []
    read_frame = sources.read_frame

    def counted(path, *args, **kwargs):
        reads.append(Path(path))
        return read_frame(path, *args, **kwargs)

    monkeypatch.setattr(sources, "read_frame", counted)
    options = RenderOptions(
        formats="h265,h264@90p,frames,frames@160x90", preset="ultrafast", denoise="off"
    )
    summary = render(sequence, tmp_path / "t.mp4", options)
    assert len(reads) == FRAMES == len(set(reads))  # decoded once, whatever the outputs
    assert video(tmp_path / "t.mp4") == (FRAMES, (320, 180))
    assert video(tmp_path / "t.preview.mp4") == (FRAMES, (160, 90))
    full = sorted((tmp_path / "t.source.frames").glob("*.png"))
    small = sorted((tmp_path / "t.160x90.frames").glob("*.png"))
    assert len(full) == len(small) == FRAMES
    # each output is scaled from the same processed frame
    for big, little in zip(full[::5], small[::5], strict=True):
        frame = cv2.imread(str(big), cv2.IMREAD_UNCHANGED)
        scaled = cv2.resize(frame, (160, 90), interpolation=cv2.INTER_AREA)
        assert np.array_equal(scaled, cv2.imread(str(little), cv2.IMREAD_UNCHANGED))
    assert summary.output_size == (320, 180)
    assert "scale and convert h264@90p" in summary.stage_seconds


def test_outputs_are_named_and_sized_from_their_specs():
    def names(formats: str, out: str = "x/day.mp4", **kw: object) -> dict[str, object]:
        plan = OutputPlan.for_output(Path(out), RenderOptions(formats=formats, **kw), (1920, 1080))
        return {str(o.spec): (o.path.name, o.size) for o in plan.outputs}

    assert names("h265,h264") == {
        "h265": ("day.mp4", (1920, 1080)),
        "h264": ("day.preview.mp4", (1920, 1080)),
    }
    assert names("h265@2160p,h264@720p,frames@1080p,hlg") == {
        "h265@2160p": ("day.mp4", (3840, 2160)),
        "h264@720p": ("day.preview.mp4", (1280, 720)),
        "frames@1080p": ("day.frames", (1920, 1080)),
        "hlg": ("day.hlg.mp4", (1920, 1080)),
    }
    assert names("hlg", out="x/day.mkv") == {"hlg": ("day.mkv", (1920, 1080))}
    assert names("h264,h264@720p", size="1080p") == {
        "h264": ("day.1080p.mp4", (1920, 1080)),
        "h264@720p": ("day.720p.mp4", (1280, 720)),
    }
    plan = OutputPlan.for_output(
        Path("day.mp4"), RenderOptions(formats="h264@720p,h265@1280x1024"), (1920, 1080)
    )
    assert plan.processing_size == (1280, 1024) and not plan.needs_hdr


def capture_brackets(buffer: Path) -> Path:
    """A station's frames, as the capture service writes them on the simulated camera: a
    single frame, two -2/0/+2 EV bracket sets, a single frame. Returns the session's folder."""
    clock = SimulatedClock(dt.datetime(2025, 6, 21, 10, 0, tzinfo=dt.UTC))
    service = CaptureService(
        SimulatedCamera(clock=clock, seed=3),
        buffer=buffer,
        clock=clock,
        camera_config=CameraConfig(resolution=(160, 90)),
    )

    async def shoot() -> None:
        await service.open()
        for bracket in (False, True, True, False):
            await service.capture_now(bracket=bracket)
            await clock.sleep(10)
        await service.close()

    asyncio.run(shoot())
    (folder,) = {p.parent for p in buffer.rglob("*.jpg")}
    assert len(list(folder.glob("*.jpg"))) == 8
    return folder


def test_rendering_captured_brackets_with_no_options_gives_one_frame_per_shot(tmp_path):
    folder = capture_brackets(tmp_path / "station")
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, ["render", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert video(out)[0] == 4  # 1 + 2 bracket sets + 1
    assert video(tmp_path / "out.preview.mp4")[0] == 4
    # frame by frame when told so, and for a folder without the capture's record
    off = render(folder, tmp_path / "off.mp4", RenderOptions(brackets="off", formats="h264"))
    assert off.shots_rendered == 8


def test_the_default_fuses_the_captures_sets_everywhere():
    assert RenderOptions().brackets == "capture"
    assert default_config().processing.render.brackets == "capture"
    assert RenderOptions(brackets="off").brackets is None
    assert RenderOptions.model_validate(RenderOptions().model_dump(mode="json")).brackets == (
        "capture"
    )
