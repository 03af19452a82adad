"""How bright the open sky is for a given sun altitude: the table every part of Skylapse shares.

The simulated camera renders its scene at this brightness, the exposure controller predicts the
next frame's light from it (feed-forward), and the planner shows the expected light of a day.

Source: USNO Circular 171 (Janiczek & DeYoung 1987), horizontal illuminance on open ground under
a clear, moonless sky, as tabulated in ``data/sky-ev100.csv`` (a copy of the project's shared
table). EV100 = log2(lux / 2.5), the incident-meter relation with C = 250. Between rows the
illuminance is interpolated in log10(lux), which is how the light actually falls.

Clouds: :func:`cloud_ev` is the dimming of a cloud cover, from Kasten & Czeplak (1980, "Solar
and terrestrial radiation dependent on the amount and type of cloud", Solar Energy 24:177),
global irradiance under N oktas of cloud ``G / G_clear = 1 - 0.75 (N / 8) ** 3.4``: nothing
under a few clouds, -2 EV under a full overcast. The simulated scene darkens by it and the
station's learned sky (`skylapse.capture.learning`) takes it out and puts it back.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources

import numpy as np

#: Below this altitude the sky is as dark as starlight and stays so.
NIGHT_ALTITUDE_DEG = -18.0


@cache
def _table() -> tuple[np.ndarray, np.ndarray]:
    text = resources.files("skylapse").joinpath("data/sky-ev100.csv").read_text()
    rows = [r for r in csv.reader(line for line in text.splitlines() if not line.startswith("#"))]
    header, body = rows[0], rows[1:]
    alt = np.array([float(r[header.index("sun_altitude_deg")]) for r in body])
    lux = np.array([float(r[header.index("illuminance_lux")]) for r in body])
    order = np.argsort(alt)
    return alt[order], np.log10(lux[order])


def illuminance_lux(sun_altitude_deg: float | np.ndarray) -> float | np.ndarray:
    """Clear-sky horizontal illuminance for a sun altitude; clamped to the table's ends."""
    alt, log_lux = _table()
    return 10.0 ** np.interp(sun_altitude_deg, alt, log_lux)


def ev100(sun_altitude_deg: float | np.ndarray) -> float | np.ndarray:
    """Clear-sky exposure value at ISO 100 for a sun altitude; an array for an array.

    >>> [round(float(ev100(alt)), 1) for alt in (60, 0, -6)]
    [15.3, 8.2, 0.4]
    """
    return np.log2(illuminance_lux(sun_altitude_deg) / 2.5)


def cloud_transmission(cloud_cover_pct: float) -> float:
    """Kasten & Czeplak's global-irradiance ratio for a cloud cover in % (clamped to 0..100).

    >>> [round(cloud_transmission(c), 3) for c in (0, 50, 100)]
    [1.0, 0.929, 0.25]
    """
    c = min(max(float(cloud_cover_pct), 0.0), 100.0) / 100.0
    return 1.0 - 0.75 * c**3.4


def cloud_ev(cloud_cover_pct: float | None) -> float:
    """The cover's dimming in EV (<= 0); 0 for an unknown cover (None)."""
    if cloud_cover_pct is None:
        return 0.0
    return float(np.log2(cloud_transmission(cloud_cover_pct)))
