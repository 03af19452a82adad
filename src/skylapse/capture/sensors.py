"""The station's other senses: light from the camera's own metering, temperatures, humidity.

* **Light.** A frame exposed at EV100 ``E`` whose (geometric) mean linear luminance is ``Y``
  (1.0 = sensor white) shows a scene of EV100 ``E + log2(Y / 0.18)``: an average scene reflects
  18 % grey. Through the incident-meter relation the shared sky table uses (EV100 =
  log2(lux / 2.5), C = 250, see `skylapse.sky`) that is an illuminance, so every frame doubles
  as a light-meter reading without a light sensor.
* **The Pi's own temperature** from the kernel's thermal zone (``/sys/class/thermal``).
* **Ambient temperature, humidity and pressure** from a BME280 on I²C when one is fitted. Its
  driver (``smbus2`` and ``RPi.bme280``) is imported only when asked for, so stations without
  one, and this package's tests, need neither.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from skylapse.log import get_logger

log = get_logger(__name__)

#: Reflectance of the average scene, which a reflected-light meter renders as mid grey.
MID_GREY = 0.18
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def scene_ev100(log2_mean_luminance: float, frame_ev100: float) -> float:
    """The scene's EV100 from a frame's exposure and its log2 mean linear luminance."""
    return frame_ev100 + log2_mean_luminance - math.log2(MID_GREY)


def lux_estimate(log2_mean_luminance: float, frame_ev100: float) -> float:
    """Illuminance (lux) a frame implies, by the incident-meter relation EV100 = log2(lux/2.5)."""
    return 2.5 * 2.0 ** scene_ev100(log2_mean_luminance, frame_ev100)


def read_thermal_zone(path: Path = THERMAL_ZONE) -> float | None:
    """The SoC temperature in °C, or None where the kernel does not report one."""
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Environment:
    """One BME280 reading."""

    temperature_c: float
    humidity_pct: float
    pressure_hpa: float


class Bme280:
    """A BME280 on I²C, through ``smbus2`` and ``RPi.bme280`` (imported when first read).

    ``read()`` returns None, and logs once, when the libraries or the sensor are missing, so a
    station without one carries on.
    """

    def __init__(self, bus: int = 1, address: int = 0x76):
        self.bus_number = bus
        self.address = address
        # smbus2 and bme280 are loaded at run time (a Pi's extras) and have no type hints
        self._bus: Any = None
        self._driver: ModuleType | None = None
        self._calibration: Any = None
        self._unavailable = False

    def _open(self) -> ModuleType | None:
        """The bme280 driver with the bus open, or None when the sensor is unavailable."""
        if self._unavailable:
            return None
        if self._bus is None:
            try:
                smbus2 = importlib.import_module("smbus2")
                self._driver = importlib.import_module("bme280")
                self._bus = smbus2.SMBus(self.bus_number)
                self._calibration = self._driver.load_calibration_params(self._bus, self.address)
            except (ImportError, OSError) as exc:
                self._unavailable = True
                log.info(
                    "no BME280", bus=self.bus_number, address=hex(self.address), reason=str(exc)
                )
                return None
        return self._driver

    def read(self) -> Environment | None:
        driver = self._open()
        if driver is None:
            return None
        try:
            sample = driver.sample(self._bus, self.address, self._calibration)
        except OSError as exc:
            log.warning("BME280 read failed", reason=str(exc))
            return None
        return Environment(
            float(sample.temperature), float(sample.humidity), float(sample.pressure)
        )


def read_environment(bme280: Bme280) -> dict[str, float]:
    """The Pi's own temperature and, with a BME280 fitted, the air around the station (the
    keys a frame's catalog row takes: ``soc_temp_c``, ``ambient_temp_c``, ``humidity_pct``,
    ``pressure_hpa``; absent when not measured)."""
    values: dict[str, float] = {}
    soc = read_thermal_zone()
    if soc is not None:
        values["soc_temp_c"] = soc
    air = bme280.read()
    if air is not None:
        values.update(
            ambient_temp_c=air.temperature_c,
            humidity_pct=air.humidity_pct,
            pressure_hpa=air.pressure_hpa,
        )
    return values
