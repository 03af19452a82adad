"""What `skylapse demo` is told and where it happens: `DemoOptions`, the place and day, the
scaled plan (`demo_config`), the session's start (`session_start`), and the output folder it
owns (`prepare_out`)."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from skylapse.capture.sun import sun_events
from skylapse.config import LocationConfig, SkylapseConfig, default_config
from skylapse.transfer.local_sshd import missing_transfer_programs

#: Where and when the demo evening happens: the Chamonix valley floor, an autumn sunset.
DEMO_LOCATION = LocationConfig(
    latitude=45.92, longitude=6.87, elevation_m=1035.0, timezone="Europe/Paris"
)
DEMO_DAY = dt.date(2025, 10, 11)
#: Share of the session before sunset (50 of 90 minutes: day, golden hour, blue hour, twilight).
BEFORE_SUNSET = 5 / 9
#: The demo's frame intervals against the default plan's (see `skylapse.demo`: Cost).
INTERVAL_SCALE = 2.8
STATION = "chamonix-demo"
MARKER = ".skylapse-demo"
#: Folders of the output folder the demo owns (and clears on the next run).
OWNED = ("capture", "ssh", "processing")


class DemoError(RuntimeError):
    """The demo cannot run or a stage failed; the message says what to do."""


@dataclass(frozen=True)
class DemoOptions:
    """What `skylapse demo` can be told; the defaults are the real demo."""

    out: Path = Path("demo-output")
    resolution: tuple[int, int] = (960, 540)  # the simulated camera's frames
    size: str = "1080p"  # the videos
    minutes: float = 90.0
    frames_scale: float = 1.0  # 0.5: half the frames (intervals twice as long)
    preset: str = "veryfast"  # x264's default for previews; x265 about 2x faster than medium
    seed: int = 7
    day: dt.date = DEMO_DAY


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes, under its output folder ``out`` (an absolute path)."""

    out: Path

    @property
    def buffer(self) -> Path:
        """The station's capture buffer and catalog."""
        return self.out / "capture"

    @property
    def ssh_dir(self) -> Path:
        """The private sshd's keys, configuration and pid file."""
        return self.out / "ssh"

    @property
    def data_dir(self) -> Path:
        """The processing side's data: store, catalog, job queue, archive."""
        return self.out / "processing"

    @property
    def inbox(self) -> Path:
        """Where the transfer delivers and ingest takes from."""
        return self.data_dir / "inbox"

    @property
    def log(self) -> Path:
        """The services' JSON logs (the console shows the progress)."""
        return self.out / "demo.log"


def demo_config(options: DemoOptions, buffer: Path | None = None) -> SkylapseConfig:
    """The default configuration at the demo's location, offline (no weather service), with
    every phase's interval scaled by ``INTERVAL_SCALE / frames_scale``."""
    if options.frames_scale <= 0:
        raise ValueError("frames_scale must be positive")
    cfg = default_config()
    scale = INTERVAL_SCALE / options.frames_scale
    phases = [
        p.model_copy(update={"interval_s": p.interval_s * scale}) for p in cfg.schedule.phases
    ]
    capture = (
        cfg.capture if buffer is None else cfg.capture.model_copy(update={"buffer_dir": buffer})
    )
    return cfg.model_copy(
        update={
            "location": DEMO_LOCATION,
            "schedule": cfg.schedule.model_copy(update={"phases": phases}),
            "weather": cfg.weather.model_copy(update={"enabled": False}),
            "capture": capture,
        }
    )


def session_start(location: LocationConfig, day: dt.date, minutes: float) -> dt.datetime:
    """When a ``minutes``-long session that holds the day's sunset begins (UTC): it spends
    ``BEFORE_SUNSET`` of its length before the sunset."""
    sunset = sun_events(location, day).sunset
    if sunset is None:
        raise DemoError(
            f"the sun does not set at {location.latitude},{location.longitude} on {day}"
        )
    return (sunset - dt.timedelta(minutes=minutes * BEFORE_SUNSET)).astimezone(dt.UTC)


def prepare_out(out: Path) -> None:
    """Create the output folder; clear what an earlier demo left there (only its own folders,
    and only where its marker file says so)."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    leftovers = [out / name for name in OWNED if (out / name).exists()]
    if leftovers and not marker.exists():
        raise DemoError(
            f"{out} holds {', '.join(p.name for p in leftovers)} that an earlier "
            "demo did not write; choose another --out"
        )
    for path in leftovers:
        shutil.rmtree(path)
    marker.write_text("written by `skylapse demo`; it replaces capture/, ssh/ and processing/\n")


def check_programs() -> None:
    """Refuse to start (DemoError saying what to install) without sshd, ssh and rsync."""
    missing = missing_transfer_programs()
    if missing:
        programs = ", ".join(e.program for e in missing)
        packages = " ".join(sorted({e.package for e in missing} | {"openssh-server", "rsync"}))
        raise DemoError(
            f"the demo transfers frames with the real rsync over SSH, but {programs} "
            f"{'is' if len(missing) == 1 else 'are'} missing: install {packages} "
            f"(`apt-get install {packages}`; `make demo` run as root installs them)"
        )
