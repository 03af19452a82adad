"""Alert conditions and the manager that keeps their episodes (`skylapse.alerts`).

An :class:`AlertCondition` is a check that says whether something is wrong now. The
:class:`AlertManager` evaluates every condition periodically; an *episode* opens when a condition
has held for ``raise_after_s`` and closes when it has stayed clear for ``clear_after_s``
(debounce in time). Checks also receive whether their episode is open, so a numeric condition can
clear at a lower threshold than it opens at (hysteresis): a latency hovering around its target
then makes one episode, not one alert per frame. Each episode sends exactly two notifications
(:class:`AlertEvent`): ``firing`` when it opens and ``resolved`` when it closes, to the log and
to every :class:`Notifier`; a notifier that raises is logged, never raised into the service.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from skylapse.log import get_logger

log = get_logger(__name__)

Severity = Literal["critical", "warning"]

#: A check gets whether its episode is open (for hysteresis) and says (active now, detail).
CheckFn = Callable[[bool], tuple[bool, str]]


@dataclass(frozen=True)
class AlertCondition:
    """One named thing that can go wrong (see the module docstring)."""

    name: str
    title: str
    severity: Severity
    component: str
    check: CheckFn
    raise_after_s: float = 0.0
    clear_after_s: float = 60.0


@dataclass
class AlertEvent:
    """An episode opening (``firing``) or closing (``resolved``): what notifiers receive."""

    alert: str
    state: Literal["firing", "resolved"]
    severity: Severity
    service: str
    station: str
    component: str
    title: str
    detail: str
    episode: int
    opened_at: datetime
    resolved_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "state": self.state,
            "severity": self.severity,
            "service": self.service,
            "station": self.station,
            "component": self.component,
            "title": self.title,
            "detail": self.detail,
            "episode": self.episode,
            "opened_at": self.opened_at.isoformat(timespec="microseconds"),
            "resolved_at": (
                self.resolved_at.isoformat(timespec="microseconds") if self.resolved_at else None
            ),
            "duration_s": (
                round((self.resolved_at - self.opened_at).total_seconds(), 3)
                if self.resolved_at
                else None
            ),
        }


class Notifier(Protocol):
    """Where episodes go besides the log (`skylapse.alerts.notifiers`): ``start`` announces
    the conditions, ``notify`` must not block, ``close`` flushes and stops."""

    def start(self, conditions: Sequence[AlertCondition]) -> None: ...
    def notify(self, event: AlertEvent) -> None: ...
    def close(self) -> None: ...


@dataclass
class _State:
    active: bool = False  # an episode is open
    since: float | None = None  # when the raw condition last changed to its current value
    raw: bool = False
    detail: str = ""
    episode: int = 0
    opened_at: datetime | None = None


@dataclass
class AlertManager:
    """Evaluates conditions, keeps episodes, logs and notifies once per episode."""

    service: str
    station: str
    conditions: Sequence[AlertCondition]
    notifiers: Sequence[Notifier] = ()
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    history: deque = field(default_factory=lambda: deque(maxlen=100))

    def __post_init__(self) -> None:
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError("alert condition names must be unique")
        self._states = {c.name: _State() for c in self.conditions}
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Let the notifiers announce the conditions (Home Assistant discovery)."""
        if not self._started:
            self._started = True
            for notifier in self.notifiers:
                _safely(notifier.start, self.conditions)

    def evaluate(self) -> list[AlertEvent]:
        """Run every check once; returns the episodes that opened or closed now."""
        events = []
        with self._lock:
            now = self.monotonic()
            for cond in self.conditions:
                st = self._states[cond.name]
                try:
                    raw, detail = cond.check(st.active)
                except Exception as exc:  # a broken check must not hide the others
                    log.warning("alert check failed", alert=cond.name, error=repr(exc))
                    continue
                if raw != st.raw or st.since is None:
                    st.raw, st.since = raw, now
                if raw:
                    st.detail = detail
                held = now - st.since
                if raw and not st.active and held >= cond.raise_after_s:
                    st.active, st.episode, st.opened_at = True, st.episode + 1, self.wall()
                    events.append(self._event(cond, st, "firing"))
                elif not raw and st.active and held >= cond.clear_after_s:
                    st.active = False
                    events.append(self._event(cond, st, "resolved", detail))
        for event in events:
            self._announce(event)
        return events

    def _event(
        self,
        cond: AlertCondition,
        st: _State,
        state: Literal["firing", "resolved"],
        detail: str | None = None,
    ) -> AlertEvent:
        assert st.opened_at is not None
        return AlertEvent(
            alert=cond.name,
            state=state,
            severity=cond.severity,
            service=self.service,
            station=self.station,
            component=cond.component,
            title=cond.title,
            detail=detail if detail is not None else st.detail,
            episode=st.episode,
            opened_at=st.opened_at,
            resolved_at=self.wall() if state == "resolved" else None,
        )

    def _announce(self, event: AlertEvent) -> None:
        self.history.append(event)
        fields = {k: v for k, v in event.to_json().items() if k not in ("alert", "state")}
        if event.state == "firing":
            emit = log.error if event.severity == "critical" else log.warning
            emit("alert firing", alert=event.alert, **fields)
        else:
            log.info("alert resolved", alert=event.alert, **fields)
        for notifier in self.notifiers:
            _safely(notifier.notify, event)

    def active(self) -> list[dict[str, Any]]:
        """The open episodes, JSON-ready (for ``/status`` and ``/health``)."""
        out = []
        with self._lock:
            for cond in self.conditions:
                st = self._states[cond.name]
                if st.active and st.opened_at is not None:
                    out.append(
                        {
                            "alert": cond.name,
                            "severity": cond.severity,
                            "component": cond.component,
                            "title": cond.title,
                            "detail": st.detail,
                            "episode": st.episode,
                            "opened_at": st.opened_at.isoformat(timespec="microseconds"),
                        }
                    )
        return out

    def component_alerts(self, component: str) -> list[dict[str, Any]]:
        return [a for a in self.active() if a["component"] == component]

    def health(self):
        """A ``/health`` check: failing with a critical episode open, degraded with a warning."""
        from skylapse.api.common import Check

        active = self.active()
        if not active:
            return Check(
                status="ok", detail=f"no alerts ({len(self.conditions)} conditions watched)"
            )
        status = "failing" if any(a["severity"] == "critical" for a in active) else "degraded"
        return Check(
            status=status, detail="; ".join(f"{a['alert']}: {a['detail']}" for a in active)
        )

    async def run(
        self,
        every_s: float | Callable[[], float],
        on_event: Callable[[AlertEvent], None] | None = None,
    ) -> None:
        """Evaluate every ``every_s`` seconds (a number or a function giving it) until
        cancelled; checks run in a thread, ``on_event`` gets each opening and closing."""
        self.start()
        while True:
            try:
                for event in await asyncio.to_thread(self.evaluate):
                    if on_event is not None:
                        on_event(event)
            except Exception as exc:  # pragma: no cover - evaluate guards each check
                log.error("alert evaluation failed", error=repr(exc))
            await asyncio.sleep(every_s() if callable(every_s) else every_s)

    def close(self) -> None:
        for notifier in self.notifiers:
            _safely(notifier.close)


def _safely(fn: Callable, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.error(
            "alert notifier failed",
            notifier=type(getattr(fn, "__self__", fn)).__name__,
            error=repr(exc),
        )
