"""Alerts: named conditions over a service's state, sent once per episode to the log, ``/health``
and notifiers (a JSON webhook, MQTT with Home Assistant discovery).

One module per part:

- :mod:`.manager`: :class:`AlertCondition` (a check, with debounce and hysteresis),
  :class:`AlertManager` (evaluates the conditions, keeps their episodes: one ``firing`` and one
  ``resolved`` :class:`AlertEvent` each), the :class:`Notifier` protocol;
- :mod:`.notifiers`: :class:`WebhookNotifier`, :class:`MqttNotifier` (its topics), and
  :func:`notifiers_from_config`;
- :mod:`.conditions`: :func:`storage_condition` (both services) and
  :func:`processing_conditions` (the processing service's, over its catalog).

Notification payload (webhook body; MQTT attributes)::

    {"alert": "camera_not_answering", "state": "firing" | "resolved",
     "severity": "critical" | "warning", "service": "capture", "station": "peak-1",
     "component": "camera", "title": "Camera not answering", "detail": "...",
     "episode": 3, "opened_at": "2024-03-20T18:02:11.123456+00:00",
     "resolved_at": null | "...", "duration_s": null | 93.2}

API
---
``AlertCondition(name, title, severity, component, check, raise_after_s, clear_after_s)``
``AlertManager(service, station, conditions, notifiers).evaluate() -> list[AlertEvent]``,
``.active()``, ``.health() -> Check``, ``await .run(every_s)``, ``.close()``.
``WebhookNotifier(url)``, ``MqttNotifier(host, port, topic_prefix, ...)``.
``notifiers_from_config(config, station) -> list``;
``processing_conditions(catalog, alerts_section, store_at_risk=None) -> list[AlertCondition]``;
``storage_condition(usage_pct, alerts, what) -> AlertCondition``.

This package's own namespace is the public API (``__all__``).
"""

from skylapse.alerts.conditions import processing_conditions, storage_condition
from skylapse.alerts.manager import (
    AlertCondition,
    AlertEvent,
    AlertManager,
    CheckFn,
    Notifier,
    Severity,
)
from skylapse.alerts.notifiers import MqttNotifier, WebhookNotifier, notifiers_from_config

__all__ = [
    "AlertCondition",
    "AlertEvent",
    "AlertManager",
    "CheckFn",
    "MqttNotifier",
    "Notifier",
    "Severity",
    "WebhookNotifier",
    "notifiers_from_config",
    "processing_conditions",
    "storage_condition",
]
