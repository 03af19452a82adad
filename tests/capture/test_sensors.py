import sys
import types

import pytest

from skylapse import sky
from skylapse.capture import sensors


def test_a_mid_grey_frame_reads_the_scene_it_was_exposed_for():
    # exposed for the sunset's EV100 (760 lux in the shared table), rendering mid grey
    sunset = float(sky.ev100(0.0))
    lux = sensors.lux_estimate(log2_mean_luminance=-2.4739, frame_ev100=sunset)
    assert lux == pytest.approx(sky.illuminance_lux(0.0), rel=0.001)
    # one stop brighter in the frame = one stop more light
    assert sensors.lux_estimate(-1.4739, sunset) == pytest.approx(2 * lux)
    assert sensors.scene_ev100(-2.4739, 8.3) == pytest.approx(8.3, abs=1e-3)


def test_thermal_zone(tmp_path):
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert sensors.read_thermal_zone(zone) == pytest.approx(48.312)
    assert sensors.read_thermal_zone(tmp_path / "missing") is None
    zone.write_text("garbage")
    assert sensors.read_thermal_zone(zone) is None


def test_bme280_absent_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "smbus2", None)  # import fails as on a station without it
    sensor = sensors.Bme280()
    assert sensor.read() is None
    assert sensor.read() is None  # and it does not retry the import every frame


def test_bme280_through_its_driver(monkeypatch):
    calls = []
    smbus2 = types.SimpleNamespace(SMBus=lambda bus: calls.append(("bus", bus)) or "bus")
    driver = types.SimpleNamespace(
        load_calibration_params=lambda bus, addr: calls.append(("cal", addr)) or {"c": 1},
        sample=lambda bus, addr, cal: types.SimpleNamespace(
            temperature=3.5, humidity=81.0, pressure=702.4
        ),
    )
    monkeypatch.setitem(sys.modules, "smbus2", smbus2)
    monkeypatch.setitem(sys.modules, "bme280", driver)
    env = sensors.Bme280(bus=1, address=0x77).read()
    assert env == sensors.Environment(3.5, 81.0, 702.4)
    assert calls == [("bus", 1), ("cal", 0x77)]
