"""What a render reports: its error, its summary, the seconds of each stage and its progress."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: ``progress(stage, done, total)``: a render's progress, called after every shot of each pass.
ProgressCallback = Callable[[str, int, int], None]


class RenderError(Exception):
    """A render that cannot start or finish: empty source, unwritable output, bad options."""


@dataclass
class RenderSummary:
    """What a render did: the table `skylapse render` prints at the end."""

    frames_in: int = 0
    shots_rendered: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    outputs: list[Path] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)
    output_size: tuple[int, int] = (0, 0)
    wall_seconds: float = 0.0
    exposure_correction_ev: tuple[float, float] = (0.0, 0.0)

    @property
    def frames_per_second(self) -> float:
        return self.shots_rendered / self.wall_seconds if self.wall_seconds else 0.0


class StageClock:
    """Accumulates seconds per stage into the summary."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0
