"""The capture service's health: ``/health``'s named checks and the alert conditions.

Checks answer "is this part working now" (``GET /health``); alert conditions are the same
questions with hysteresis, raised once per episode (`skylapse.alerts`); the maintenance alerts
(storage wear and errors, temperature, time to full, clock, weather) come from
`skylapse.maintenance` over the runtime's ``signals``. Both read the
:class:`~skylapse.api.capture.runtime.CaptureRuntime` live, so a changed configuration counts
from the next evaluation; an open alert of a component degrades (warning) or fails (critical)
that component's check.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial

import numpy as np

from skylapse.alerts import AlertCondition, CheckFn, Severity, storage_condition
from skylapse.api.capture.runtime import CaptureRuntime, iso
from skylapse.api.common import Check
from skylapse.maintenance import maintenance_conditions

#: name, title, severity, component of each alert condition.
_ALERTS: tuple[tuple[str, str, Severity, str], ...] = (
    ("camera_not_answering", "Camera not answering", "critical", "camera"),
    ("disk_emergency", "Disk past the emergency watermark", "critical", "disk"),
    ("untransferred_frames_at_risk", "Untransferred frames at risk", "critical", "disk"),
    ("transfer_failing", "Transfers failing", "critical", "transfer"),
    ("frames_not_stored", "Frames could not be stored", "critical", "disk"),
    ("capture_latency", "Capture latency above target", "warning", "scheduler"),
    ("image_quality", "Image quality below target", "warning", "camera"),
    ("transfer_quarantine", "Frames quarantined on the station", "warning", "transfer"),
    ("transfer_queue", "Transfer queue too deep", "warning", "transfer"),
    ("system_uptime", "Station uptime below target", "warning", "scheduler"),
)

#: Scheduled capture time the uptime alert waits for before it judges (one hour).
UPTIME_MIN_SCHEDULED_S = 3600.0


def health_checks(rt: CaptureRuntime) -> dict[str, Callable[[], Check]]:
    """``/health``'s checks over the runtime."""
    return {
        "camera": partial(check_camera, rt),
        "disk": partial(check_disk, rt),
        "scheduler": partial(check_scheduler, rt),
        "transfer": partial(check_transfer, rt),
        "alerts": rt.alerts.health,
    }


def alert_conditions(rt: CaptureRuntime) -> list[AlertCondition]:
    """The capture service's alert conditions. Each check gets whether its episode is open
    and, while it is, clears only with a margin (hysteresis). ``alerts.clear_after_s`` is read
    now; the thresholds are read at each evaluation."""
    checks: dict[str, CheckFn] = {
        "camera_not_answering": partial(_camera, rt),
        "disk_emergency": partial(_disk, rt),
        "untransferred_frames_at_risk": partial(_untransferred, rt),
        "transfer_failing": partial(_transfer, rt),
        "frames_not_stored": partial(_not_stored, rt),
        "capture_latency": partial(_latency, rt),
        "image_quality": partial(_quality, rt),
        "transfer_quarantine": partial(_quarantined, rt),
        "transfer_queue": partial(_queue, rt),
        "system_uptime": partial(_uptime, rt),
    }
    clear_after_s = rt.config.alerts.clear_after_s
    return [
        AlertCondition(name, title, severity, component, checks[name], clear_after_s=clear_after_s)
        for name, title, severity, component in _ALERTS
    ] + [
        storage_condition(
            rt.service.storage.utilization_pct,
            lambda: rt.config.alerts,
            "the buffer",
            clear_after_s,
        ),
        *maintenance_conditions(rt.signals, lambda: rt.config.alerts, clear_after_s),
    ]


# -- checks ------------------------------------------------------------------------------------


def _with_alerts(rt: CaptureRuntime, component: str, check: Check) -> Check:
    alerts = rt.alerts.component_alerts(component)
    if check.status == "ok" and alerts:
        status = "failing" if any(a["severity"] == "critical" for a in alerts) else "degraded"
        return Check(status=status, detail="; ".join(a["detail"] for a in alerts))
    return check


def check_camera(rt: CaptureRuntime) -> Check:
    problem = rt.camera_problem()
    if problem is not None:
        return Check(status="failing", detail=problem)
    if not rt.camera_open:
        return Check(status="degraded", detail="opening the camera")
    st = rt.service.status()
    last = st["last_frame_at"]
    detail = f"{st['camera']} open, focus {st['focus_method']}; last frame {last or 'none yet'}"
    if st["camera_notice"]:  # e.g. the simulated camera standing in for a missing one
        return Check(status="degraded", detail=f"{st['camera_notice']}; {detail}")
    return _with_alerts(rt, "camera", Check(status="ok", detail=detail))


def check_disk(rt: CaptureRuntime) -> Check:
    pct = rt.service.storage.utilization_pct()
    mark = rt.config.capture.watermark_pct
    detail = f"{pct:.1f} % used; emergency cleanup above {mark:g} %"
    if pct > mark:
        return Check(status="failing", detail=detail)
    return Check(status="degraded" if pct > mark - 10 else "ok", detail=detail)


def check_scheduler(rt: CaptureRuntime) -> Check:
    if rt.supervisor_done is not None:
        return Check(status="failing", detail=f"capture supervisor stopped: {rt.supervisor_done}")
    if rt.loop_stalled():
        return Check(status="failing", detail="the event loop is not turning")
    st = rt.service.status()
    if st["state"] == "capturing":
        detail = f"capturing session {st['session']['session_id']}"
    elif not rt.unattended:
        detail = "idle; unattended plan off"
    else:
        window = rt.window(rt.service.clock.now())
        detail = (
            "idle; no window ahead"
            if window is None
            else f"idle; next window {window.session_id} opens {iso(window.start)}"
        )
    return _with_alerts(rt, "scheduler", Check(status="ok", detail=detail))


def check_transfer(rt: CaptureRuntime) -> Check:
    if rt.transfer is None:
        return Check(status="ok", detail="off: no transfer host configured")
    st = rt.transfer.stats
    failing = rt.transfer.failing_for_s()
    if failing > rt.config.transfer.alert_after_s:
        return Check(status="failing", detail=f"failing for {failing:.0f} s: {st.last_error}")
    if failing > 0:
        return Check(status="degraded", detail=f"failing for {failing:.0f} s: {st.last_error}")
    return _with_alerts(
        rt,
        "transfer",
        Check(
            status="ok",
            detail=f"{st.queue_depth} frames queued; last verified batch "
            f"{iso(st.last_success) or 'none yet'}",
        ),
    )


# -- alert conditions: (runtime, episode open) -> (raised, detail) -----------------------------


def _camera(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    problem = rt.camera_problem()
    return problem is not None, problem or ""


def _disk(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    pct = rt.service.storage.utilization_pct()
    mark = rt.config.capture.watermark_pct
    limit = mark - rt.service.storage.margin_pct if active else mark
    return pct > limit, f"{pct:.1f} % used (emergency watermark {mark:g} %)"


def _untransferred(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    detail = rt.service.storage.untransferred_alert
    return detail is not None, detail or ""


def _transfer(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    if rt.transfer is None:
        return False, ""
    failing = rt.transfer.failing_for_s()
    after = rt.config.transfer.alert_after_s
    return failing > after, f"failing for {failing:.0f} s: {rt.transfer.stats.last_error}"


def _not_stored(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    """Raised while the writer's count of frames it could not store grows."""
    writer = rt.service.writer
    grew, rt.failed_alerted = writer.failed > rt.failed_alerted, writer.failed
    return grew, f"{writer.failed} frames could not be stored; last: {writer.last_error}"


def _latency(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    if len(rt.latencies) < 10:
        return False, ""
    p99 = float(np.percentile(list(rt.latencies), 99))
    target = rt.config.alerts.capture_latency_p99_ms
    return p99 > (0.8 * target if active else target), (
        f"p99 {p99:.1f} ms over the last {len(rt.latencies)} frames (target {target:g} ms)"
    )


def _quality(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    if len(rt.qualities) < 3:
        return False, ""
    median = statistics.median(rt.qualities)
    floor = rt.config.alerts.image_quality_min
    return median < (floor + 0.05 if active else floor), (
        f"median quality {median:.2f} of the last {len(rt.qualities)} frames (minimum {floor:g})"
    )


def _quarantined(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    if rt.transfer is None:
        return False, ""
    return rt.transfer.quarantine_alert()


def _queue(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    if rt.transfer is None:
        return False, ""
    depth = rt.transfer.stats.queue_depth
    limit = rt.config.alerts.transfer_queue_max
    return depth > (0.8 * limit if active else limit), (
        f"{depth} frames waiting for transfer (target at most {limit})"
    )


def _uptime(rt: CaptureRuntime, active: bool) -> tuple[bool, str]:
    """Below ``alerts.uptime_min_pct`` once an hour of capture was scheduled in the window."""
    section = rt.config.alerts
    scheduled, captured = rt.uptime.totals(section.uptime_window_h * 3600)
    if scheduled < UPTIME_MIN_SCHEDULED_S:
        return False, ""
    pct = 100.0 * captured / scheduled
    floor = section.uptime_min_pct
    return pct < (min(floor + 0.1, 100.0) if active else floor), (
        f"captured through {pct:.2f} % of {scheduled / 3600:.1f} h of scheduled capture time in"
        f" the last {section.uptime_window_h:g} h (target at least {floor:g} %)"
    )
