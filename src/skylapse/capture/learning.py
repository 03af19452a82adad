"""What the station learned about its own sky: the feed-forward that makes each evening start
where the last ones settled.

The exposure controller (`skylapse.capture.exposure`) predicts each frame's light from the
clear-sky table (`skylapse.sky`), and metering tells it how far the real scene is from that table
(the site's horizon, snow, the direction the camera faces, clouds). Within a session it learns
that offset in a few frames; this module keeps it *between* sessions.

The store
---------
One JSON file beside the buffer, ``<buffer>/sky-memory.json`` (:data:`MEMORY_NAME`), written
atomically (write, then rename). Per **sun-elevation bin** (``bin_deg`` wide, 1° by default) and
per **direction** of the sun (``rising``/``setting``: a camera facing west sees a different sky
at the same elevation morning and evening) it holds:

* ``offset_ev``: the offset between the sky model's prediction and what metering settled on
  (scene EV100 minus the table), with the cloud cover's expected dimming taken out
  (`skylapse.sky.cloud_ev`, Kasten & Czeplak 1980), so evenings under different skies average
  into one site curve;
* ``cloud_cover_pct``: the cloud cover of the sessions that taught it (null when no weather);
* ``frames``, ``sessions`` and ``updated_at``.

After each session :meth:`SkyMemory.learn` takes the median of the session's offsets in each bin
and moves the bin toward it, with weight ``1`` for a bin's first session and then
``exposure.learn_weight`` (0.5: the newest session counts as much as all before it).

:meth:`SkyMemory.prior` is the feed-forward: at an elevation, the learned offset interpolated
between bin centres (the nearest bin's beyond the learned range), plus the dimming of the
*current* cloud cover (none when the weather is unknown); before anything is learned, the
cover's dimming alone. The controller starts each session on
it and follows its shape through the session; ``skylapse plan`` adds it to the expected light.
The file also keeps the lens position of the last successful autofocus, which foggy sessions keep
instead of hunting (`skylapse.capture.focus`).

``skylapse sky --buffer DIR`` shows the store; ``--reset`` deletes it.

API
---
``SkyMemory`` (pydantic, frozen): ``.learn(samples, cloud_cover_pct, weight, when)`` and
``.with_focus(position)`` (new memories), ``.prior(direction, cloud_cover_pct)``.
``direction(elevation_now, elevation_next) -> "rising" | "setting"``                 pure.
``load_memory(path) -> SkyMemory``   (empty when missing; ``SkyMemoryError`` naming the file).
``save_memory(path, memory)``, ``reset_memory(path) -> bool``.
``memory_rows(memory) -> list[tuple[str, ...]]``   rows for printing.
``StationMemory(path)``: the capture service's handle: ``.memory``, ``.prior(elev_now,
elev_next, cloud_cover_pct)``, ``.learn_session(samples, covers, weight, when)``,
``.note_focus(position)``; an unreadable file is logged and started afresh (learned data only).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skylapse import sky
from skylapse.config import format_validation_errors
from skylapse.log import get_logger

log = get_logger(__name__)

MEMORY_NAME = "sky-memory.json"
#: The largest offset (EV) from the clear-sky table a bin may hold. Sky, snow, horizon and
#: cloud stay within a few EV of the table; a median beyond this was not sky (a lamp in the
#: frame at night, a covered lens, a replayed daytime frame): that bin is not learned.
MAX_OFFSET_EV = 20.0
Direction = Literal["rising", "setting"]


class SkyMemoryError(ValueError):
    """A memory file that cannot be read; the message names it."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SkyBin(_Model):
    """What the station learned for one direction and ``bin_deg`` of sun elevation."""

    direction: Direction
    from_deg: float = Field(ge=-90, le=90, description="lower edge of the elevation bin")
    offset_ev: float = Field(
        ge=-MAX_OFFSET_EV, le=MAX_OFFSET_EV, description="scene minus clear-sky table, cloudless"
    )
    cloud_cover_pct: float | None = Field(None, ge=0, le=100)
    frames: int = Field(ge=1)
    sessions: int = Field(ge=1)
    updated_at: dt.datetime


def direction(elevation_now: float, elevation_next: float) -> Direction:
    """Which way the sun is going between two elevations (a tie counts as rising)."""
    return "setting" if elevation_next < elevation_now else "rising"


class SkyMemory(_Model):
    """The learned sky (module docstring). Frozen: learning returns a new memory."""

    version: Literal[1] = 1
    bin_deg: float = Field(1.0, gt=0, le=10)
    last_good_focus: float | None = None
    bins: list[SkyBin] = Field(default_factory=list)

    def _bin_of(self, elevation: float) -> float:
        return math.floor(elevation / self.bin_deg) * self.bin_deg

    def learn(
        self,
        samples: Sequence[tuple[float, float]],
        cloud_cover_pct: float | None,
        weight: float,
        when: dt.datetime,
    ) -> SkyMemory:
        """This memory with a session's ``(sun elevation, offset EV)`` samples (in time order,
        as `ExposureController.samples` keeps them) folded in; ``cloud_cover_pct`` is the
        session's mean cover (None: unknown). A bin whose median offset is beyond
        ``MAX_OFFSET_EV`` is logged and left as it was: what the camera saw there was not sky."""
        if len(samples) < 2:
            return self
        elev = np.array([e for e, _ in samples], dtype=np.float64)
        trend = np.gradient(elev)
        cloud = sky.cloud_ev(cloud_cover_pct)
        groups: dict[tuple[Direction, float], list[float]] = defaultdict(list)
        for e, (_, offset), slope in zip(elev, samples, trend, strict=True):
            way: Direction = "setting" if slope < 0 else "rising"
            groups[(way, self._bin_of(float(e)))].append(offset - cloud)
        known = {(b.direction, b.from_deg): b for b in self.bins}
        for (way, lo), offsets in groups.items():
            value = float(np.median(offsets))
            if not abs(value) <= MAX_OFFSET_EV:
                log.warning(
                    "sky offset not learned: not sky",
                    direction=way,
                    from_deg=lo,
                    offset_ev=round(value, 2),
                    limit_ev=MAX_OFFSET_EV,
                )
                continue
            old = known.get((way, lo))
            if old is None:
                known[(way, lo)] = SkyBin(
                    direction=way,
                    from_deg=lo,
                    offset_ev=value,
                    cloud_cover_pct=cloud_cover_pct,
                    frames=len(offsets),
                    sessions=1,
                    updated_at=when,
                )
                continue
            cover = old.cloud_cover_pct
            if cloud_cover_pct is not None:
                cover = (
                    cloud_cover_pct if cover is None else cover + weight * (cloud_cover_pct - cover)
                )
            known[(way, lo)] = old.model_copy(
                update={
                    "offset_ev": old.offset_ev + weight * (value - old.offset_ev),
                    "cloud_cover_pct": cover,
                    "frames": old.frames + len(offsets),
                    "sessions": old.sessions + 1,
                    "updated_at": when,
                }
            )
        ordered = sorted(known.values(), key=lambda b: (b.direction, b.from_deg))
        return self.model_copy(update={"bins": ordered})

    def with_focus(self, lens_position: float) -> SkyMemory:
        """This memory with the lens position of a successful autofocus."""
        return self.model_copy(update={"last_good_focus": float(lens_position)})

    def prior(
        self, way: Direction, cloud_cover_pct: float | None
    ) -> Callable[[float], float] | None:
        """The expected offset (EV) from the clear-sky table as a function of sun elevation, for
        the sun going ``way`` under ``cloud_cover_pct`` (None: unknown, no cloud term): the
        learned offset plus the cover's dimming; the dimming alone when nothing was learned for
        that direction; None when neither is known."""
        rows = sorted((b.from_deg + self.bin_deg / 2, b.offset_ev) for b in self.bins
                      if b.direction == way)  # fmt: skip
        cloud = sky.cloud_ev(cloud_cover_pct)
        if not rows:
            return None if cloud_cover_pct is None else (lambda elevation: cloud)
        centres = np.array([c for c, _ in rows])
        offsets = np.array([o for _, o in rows])

        def prior(elevation: float) -> float:
            return float(np.interp(elevation, centres, offsets)) + cloud

        return prior


def load_memory(path: str | Path) -> SkyMemory:
    """The memory stored at ``path``; an empty one when there is no file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return SkyMemory()
    except OSError as exc:
        raise SkyMemoryError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SkyMemoryError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return SkyMemory.model_validate(data)
    except ValidationError as exc:
        raise SkyMemoryError(format_validation_errors(exc, str(path))) from exc


def save_memory(path: str | Path, memory: SkyMemory) -> None:
    """Write ``memory`` to ``path`` atomically (a power cut leaves the old file or the new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(memory.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reset_memory(path: str | Path) -> bool:
    """Forget everything learned (delete the file); whether there was one."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


def memory_rows(memory: SkyMemory) -> list[tuple[str, ...]]:
    """(direction, sun elevation bin, offset EV, cloud cover, frames, sessions, updated) rows."""
    return [
        (
            b.direction,
            f"{b.from_deg:+.0f}..{b.from_deg + memory.bin_deg:+.0f}",
            f"{b.offset_ev:+.2f}",
            "—" if b.cloud_cover_pct is None else f"{b.cloud_cover_pct:.0f} %",
            str(b.frames),
            str(b.sessions),
            b.updated_at.isoformat(timespec="seconds"),
        )
        for b in memory.bins
    ]


class StationMemory:
    """The memory file of one buffer, as the capture service uses it (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.memory = load_memory(self.path)
        except SkyMemoryError as exc:  # learned data only: start afresh, never stop capture
            log.warning("sky memory unreadable, starting afresh", error=str(exc))
            self.memory = SkyMemory()

    def prior(
        self, elev_now: float, elev_next: float, cloud_cover_pct: float | None
    ) -> Callable[[float], float] | None:
        """The learned feed-forward for the sun's direction between the two elevations."""
        return self.memory.prior(direction(elev_now, elev_next), cloud_cover_pct)

    def note_focus(self, lens_position: float) -> None:
        """A successful autofocus (kept in memory; written with the next session)."""
        self.memory = self.memory.with_focus(lens_position)

    def learn_session(
        self,
        samples: Sequence[tuple[float, float]],
        covers: Sequence[float],
        weight: float,
        when: dt.datetime,
    ) -> None:
        """Fold a closed session's offsets in (with its mean cloud cover) and write the file;
        a failed write is logged and the memory stays as it was."""
        cover = sum(covers) / len(covers) if covers else None
        memory = self.memory.learn(samples, cover, weight, when)
        self.save(memory)

    def save(self, memory: SkyMemory | None = None) -> None:
        memory = self.memory if memory is None else memory
        try:
            save_memory(self.path, memory)
        except OSError as exc:
            log.warning("sky memory not saved", path=str(self.path), error=str(exc))
            return
        self.memory = memory
