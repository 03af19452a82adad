"""The demo's console and bookkeeping: a progress row per stage with its wall and CPU time
(`StageBoard`), the loops that follow a stage as it runs (`Follower`), the services' logs
routed to a file (`logs_to`)."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from skylapse.log import configure

#: A progress row's ``update(completed=None, detail=None, total=None)``.
Update = Callable[..., None]


class StageBoard:
    """A rich progress bar with one row per stage, and the time each stage took."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>9}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
        )
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def task(self, name: str, total: float) -> Update:
        """A progress row; returns ``update(completed=None, detail=None, total=None)``."""
        task = self.progress.add_task(name, total=total, detail="")

        def update(
            completed: float | None = None, detail: str | None = None, total: float | None = None
        ) -> None:
            # None leaves a value as it is (rich does so for completed and total itself)
            if detail is None:
                self.progress.update(task, completed=completed, total=total)
            else:
                self.progress.update(task, completed=completed, total=total, detail=detail)

        return update

    def record(self, name: str, seconds: float, cpu_seconds: float) -> None:
        self.seconds[name] = seconds
        self.cpu_seconds[name] = cpu_seconds

    @contextlib.contextmanager
    def stage(self, name: str, total: float) -> Iterator[Update]:
        """A progress row timed from entering to leaving the block."""
        update = self.task(name, total)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        try:
            yield update
        finally:
            self.record(name, time.perf_counter() - t0, cpu_seconds() - cpu0)
        update(completed=total)


class Follower(threading.Thread):
    """Runs ``step`` (which returns how much it did) every ``poll_s`` while the stage upstream
    runs, then until a step finds nothing once ``upstream_done`` is set: the station's transfer
    loop and the processing side's ingest loop, one behind the other. The first error ends it
    and is kept in ``error``."""

    def __init__(
        self, name: str, step: Callable[[], int], upstream_done: threading.Event, poll_s: float
    ) -> None:
        super().__init__(name=f"demo-{name}", daemon=True)
        self.step = step
        self.upstream_done = upstream_done
        self.poll_s = poll_s
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.finished_at = math.nan
        self.finished_cpu = math.nan

    def run(self) -> None:
        try:
            while True:
                last = self.upstream_done.is_set()
                if self.step() == 0 and last:
                    break
                if not last:
                    self.upstream_done.wait(self.poll_s)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at, self.finished_cpu = time.perf_counter(), cpu_seconds()
            self.done.set()


@contextlib.contextmanager
def logs_to(path: Path, mode: str = "w") -> Iterator[None]:
    """Route the services' JSON logs to ``path`` (the console has the progress bars), and put
    the previous logging set-up back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config = structlog.get_config()
    with open(path, mode) as stream:
        configure("INFO", stream=stream)
        try:
            yield
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            structlog.configure(**structlog_config)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (rsync, ssh,
    sshd)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
