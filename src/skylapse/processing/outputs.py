"""What a render writes from its one pass: every output's file and size, and the sinks fed.

A render's ``formats`` (`skylapse.processing.options.OutputSpec`, ``FORMAT[@SIZE]``) become one
`Output` each, named from ``-o OUT`` (stem ``S``, suffix ``.mp4`` unless ``OUT`` has one):

* ``h265``: ``S.mp4``; ``hlg``: ``S.hlg.mp4`` beside an ``h265``, else ``S.mp4``;
* ``h264``: ``S.preview.mp4`` beside another video, else ``S.mp4`` (always ``.mp4``: the
  browser preview);
* ``frames``: the folder ``S.frames/``;
* a format asked for more than once carries each size in its names, before the kind:
  ``S.1080p.mp4``, ``S.720p.preview.mp4``, ``S.720p.frames/``.

Each output's size is its own ``@SIZE``, else the render's ``size``, else the source's. The
frames are processed once, at the `OutputPlan.processing_size` (the largest width and height
asked for), and every output of another size is scaled from that same processed frame
(``INTER_AREA``) on its own thread, so that one more output costs its scaling and its encoder,
never a second decode or pass. HLG outputs are fed the HLG branch of the processing, the others
the SDR branch (`skylapse.processing.render`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from skylapse.processing import encode
from skylapse.processing.options import OutputSpec, RenderOptions, output_size
from skylapse.processing.streaming import SinkThread


@dataclass(frozen=True)
class Output:
    """One file or folder of a render: its spec, where it goes and its ``(width, height)``."""

    spec: OutputSpec
    path: Path
    size: tuple[int, int]

    @property
    def hdr(self) -> bool:
        """Fed the HLG signal (BT.2020, scene-referred) rather than the SDR frames."""
        return self.spec.format == "hlg"


@dataclass(frozen=True)
class OutputPlan:
    """Every output of one render, and its previews (None when not written)."""

    outputs: tuple[Output, ...]
    keogram: Path | None
    contact_sheet: Path | None

    @classmethod
    def for_output(
        cls, out: Path, options: RenderOptions, source_size: tuple[int, int]
    ) -> OutputPlan:
        stem = out.with_suffix("") if out.suffix else out
        suffix = out.suffix or ".mp4"
        formats = Counter(spec.format for spec in options.formats)
        videos = {"h265", "h264", "hlg"} & set(formats)

        def label(spec: OutputSpec) -> str:
            if formats[spec.format] == 1:
                return ""
            size = spec.size or options.size
            return f".{size}" if size is not None else ".source"

        def path(spec: OutputSpec) -> Path:
            name = stem.name + label(spec)
            if spec.format == "frames":
                return stem.with_name(name + ".frames")
            if spec.format == "h264":
                alone = videos == {"h264"}
                return stem.with_name(name + (".mp4" if alone else ".preview.mp4"))
            if spec.format == "hlg" and "h265" in videos:
                return stem.with_name(name + ".hlg" + suffix)
            return stem.with_name(name + suffix)

        outputs = tuple(
            Output(spec, path(spec), output_size(spec.size or options.size, source_size))
            for spec in options.formats
        )
        return cls(
            outputs=outputs,
            keogram=stem.with_name(stem.name + ".keogram.png") if options.keogram else None,
            contact_sheet=stem.with_name(stem.name + ".contact.png")
            if options.contact_sheet
            else None,
        )

    @property
    def processing_size(self) -> tuple[int, int]:
        """The size the frames are processed at: the largest width and height of the outputs
        (the one output's size when there is one)."""
        return (
            max(o.size[0] for o in self.outputs),
            max(o.size[1] for o in self.outputs),
        )

    @property
    def needs_sdr(self) -> bool:
        return any(not o.hdr for o in self.outputs)

    @property
    def needs_hdr(self) -> bool:
        return any(o.hdr for o in self.outputs)


class Sink(Protocol):
    def put(self, frame: np.ndarray) -> None: ...
    def close(self) -> None: ...


StageSeconds = dict[str, float]


def _timed(
    consume: Callable[[np.ndarray], object], stage: str, seconds: StageSeconds
) -> Callable[[np.ndarray], None]:
    """Wrap a sink's consumer so its time lands in ``seconds`` (one key per sink thread)."""

    def timed(frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        consume(frame)
        seconds[stage] += time.perf_counter() - t0

    return timed


def _scaled(
    consume: Callable[[np.ndarray], object], size: tuple[int, int], frame_size: tuple[int, int]
) -> Callable[[np.ndarray], object]:
    """``consume`` of frames of ``frame_size`` scaled to ``size`` first (as is when equal)."""
    if size == frame_size:
        return consume

    def scale_then(frame: np.ndarray) -> object:
        return consume(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))

    return scale_then


class _EncoderSink:
    """A video encoder fed directly: `VideoEncoder.write` converts to YUV at once and encodes
    on its own thread, so the 16-bit RGB frame is released before the next one is made."""

    def __init__(self, encoder: encode.VideoEncoder, stage: str, seconds: StageSeconds):
        self.put = _timed(encoder.write, stage, seconds)
        self.close = encoder.close


def open_sinks(
    plan: OutputPlan, options: RenderOptions, stack: ExitStack, seconds: StageSeconds
) -> list[tuple[Output, Sink]]:
    """One sink per output, each fed frames of the plan's processing size, entered on
    ``stack`` (an error leaves no partial video). An output of the processing size is fed
    directly (its encoder has its own thread); any other is scaled and written on a thread
    of its own."""
    frame_size = plan.processing_size
    sinks: list[tuple[Output, Sink]] = []
    for output in plan.outputs:
        name = str(output.spec)
        consume: Callable[[np.ndarray], object]
        if output.spec.format == "frames":
            writer = stack.enter_context(
                encode.FrameSequenceWriter(output.path, fmt=options.frames_format)
            )
            consume = writer.write
        else:
            encoder = stack.enter_context(
                encode.VideoEncoder(
                    output.path,
                    codec=output.spec.format,
                    size=output.size,
                    fps=options.fps,
                    crf=options.crf,
                    preset=options.preset,
                )
            )
            if output.size == frame_size:
                sinks.append((output, _EncoderSink(encoder, f"convert {name}", seconds)))
                continue
            consume = encoder.write
        stage = f"scale and convert {name}" if output.spec.format != "frames" else "write frames"
        threaded = _timed(_scaled(consume, output.size, frame_size), stage, seconds)
        sinks.append((output, SinkThread(threaded, name=name)))
    return sinks
