"""The alert defaults (the seed's targets) and the maintenance alerts, each through the real
`AlertManager` over sources that follow the kernel's formats (`skylapse.maintenance`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from skylapse.alerts import AlertCondition, AlertManager, storage_condition
from skylapse.api.capture.health import _uptime
from skylapse.capture.sensors import read_thermal_zone
from skylapse.capture.weather import WeatherService
from skylapse.config import AlertsConfig, LocationConfig, WeatherConfig, default_config
from skylapse.maintenance import (
    ClockState,
    KernelLog,
    StorageErrors,
    UsageHistory,
    disk_of,
    is_storage_error,
    maintenance_conditions,
    parse_kmsg,
    parse_life_time,
    read_clock,
    read_wear,
    time_to_full_h,
)
from skylapse.metrics import ScheduledUptime
from tests_support import quiet_station_signals

GB = 10**9
HOUR = 3600.0


def manager(signals, section: AlertsConfig | None = None) -> AlertManager:
    section = section or AlertsConfig(clear_after_s=0)
    return AlertManager("capture", "peak-1", maintenance_conditions(signals, lambda: section, 0.0))


def opened(mgr: AlertManager) -> list[tuple[str, str]]:
    return [(e.alert, e.state) for e in mgr.evaluate()]


def test_alert_defaults_are_the_seed_targets():
    """latency p99 > 50 ms, quality < 0.9, queue > 10, storage > 80 %, uptime < 99.5 %; the
    packaged file says the same as the model."""
    for section in (AlertsConfig(), default_config().alerts):
        assert section.capture_latency_p99_ms == 50
        assert section.image_quality_min == 0.9
        assert section.processing_queue_max == 10
        assert section.storage_max_pct == 80
        assert section.uptime_min_pct == 99.5
    assert default_config().alerts == AlertsConfig()


# -- kernel log: storage I/O errors ------------------------------------------------------------

#: Records as /dev/kmsg gives them (Documentation/ABI/testing/dev-kmsg): a continuation line
#: starts with a space.
BOOT = (
    "6,1,0,-;Booting Linux on physical CPU 0x0\n"
    "6,412,2345678,-;mmc0: new ultra high speed DDR50 SDHC card at address aaaa\n"
    " SUBSYSTEM=mmc\n"
    " DEVICE=+mmc:mmc0:aaaa\n"
    "3,900,5000000,-;I/O error, dev sda, sector 2048 op 0x0:(READ) flags 0x0 phys_seg 1 prio"
    " class 0\n"
)
MMC_ERROR = (
    "3,1201,{us},-;I/O error, dev mmcblk0, sector 1234567 op 0x1:(WRITE) flags 0x800 phys_seg 1"
    " prio class 2\n"
)


def test_kmsg_records_parse_and_only_the_buffers_disk_counts():
    record = parse_kmsg(MMC_ERROR.format(us=7_000_000).rstrip("\n"))
    assert record is not None and (record.priority, record.sequence, record.at_us) == (
        3,
        1201,
        7_000_000,
    )
    assert parse_kmsg(" SUBSYSTEM=mmc") is None
    assert is_storage_error(record.message, ("mmcblk0",))
    assert is_storage_error("Buffer I/O error on dev mmcblk0p2, logical block 9", ("mmcblk0",))
    assert is_storage_error("EXT4-fs error (device mmcblk0p2): ext4_find_entry", ("mmcblk0",))
    assert not is_storage_error("I/O error, dev sda, sector 2048", ("mmcblk0",))
    assert not is_storage_error("mmc0: new ultra high speed card", ("mmcblk0",))
    assert is_storage_error("I/O error, dev sda, sector 2048", ())


def test_storage_errors_in_the_kernel_log_alert_and_age_out(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(BOOT)
    now = {"us": 10_000_000}
    errors = StorageErrors(KernelLog(kmsg), ("mmcblk0",), now_us=lambda: now["us"])
    mgr = manager(quiet_station_signals(tmp_path / "s", storage_errors=errors))
    assert opened(mgr) == []  # an error on another disk (sda) does not count
    with kmsg.open("a") as f:
        f.write(MMC_ERROR.format(us=11_000_000))
    now["us"] = 12_000_000
    assert opened(mgr) == [("storage_io_errors", "firing")]
    assert "sector 1234567" in mgr.active()[0]["detail"]
    now["us"] = 11_000_000 + int(25 * HOUR * 1e6)  # older than io_error_window_h (24 h)
    assert opened(mgr) == [("storage_io_errors", "resolved")]


def test_an_unreadable_kernel_log_says_so_and_never_fires(tmp_path):
    errors = StorageErrors(KernelLog(tmp_path / "missing"), ("mmcblk0",))
    assert errors.check(HOUR) == (False, f"kernel log not readable ({tmp_path}/missing: "
                                  "No such file or directory)")  # fmt: skip


def test_this_machines_kernel_log_reads_without_blocking():
    log = KernelLog()
    records = log.read()  # the real /dev/kmsg, or unavailable without the privilege
    assert log.unavailable is not None or all(r.at_us >= 0 for r in records)
    log.close()


# -- eMMC wear ---------------------------------------------------------------------------------


def fake_sysfs(tmp_path: Path, buffer: Path, life_time: str, pre_eol: str) -> Path:
    """/sys/dev/block/<major>:<minor> of ``buffer``'s device linking to a partition of an eMMC
    (Documentation/ABI/testing/sysfs-dev, drivers/mmc/core/mmc.c's attributes)."""
    sys_root = tmp_path / "sys"
    disk = sys_root / "devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block"
    disk = disk / "mmcblk0"
    part = disk / "mmcblk0p2"
    part.mkdir(parents=True)
    (part / "partition").write_text("2\n")
    (disk / "device").mkdir()
    (disk / "device" / "life_time").write_text(life_time)
    (disk / "device" / "pre_eol_info").write_text(pre_eol)
    links = sys_root / "dev/block"
    links.mkdir(parents=True)
    dev = os.stat(buffer).st_dev
    os.symlink(os.path.relpath(part, links), links / f"{os.major(dev)}:{os.minor(dev)}")
    return sys_root


def test_emmc_wear_from_life_time_and_pre_eol(tmp_path):
    buffer = tmp_path / "buffer"
    buffer.mkdir()
    sys_root = fake_sysfs(tmp_path, buffer, "0x02 0x03\n", "0x01\n")
    disk = disk_of(buffer, sys_root)
    assert disk is not None and disk.name == "mmcblk0"
    assert parse_life_time("0x01 0x0b\n") == (0, 100)
    assert parse_life_time("0x00 0x0a\n") == (None, 90)
    wear_file = disk / "device" / "life_time"
    mgr = manager(quiet_station_signals(tmp_path / "s", wear=lambda: read_wear(disk)))
    assert opened(mgr) == []  # 10-20 % and 20-30 % used, pre-EOL normal
    wear_file.write_text("0x02 0x09\n")  # type B: 80-90 % used
    assert opened(mgr) == [("storage_wear", "firing")]
    assert "at least 80 %" in mgr.active()[0]["detail"]
    wear_file.write_text("0x02 0x03\n")
    (disk / "device" / "pre_eol_info").write_text("0x02\n")  # reserved blocks 80 % used
    mgr.evaluate()
    assert "pre-EOL warning" in mgr.active()[0]["detail"]
    assert read_wear(None) is None
    assert disk_of(buffer, tmp_path / "no-sys") is None  # not a block device: no wear, any disk


# -- temperature -------------------------------------------------------------------------------


def test_soc_temperature_from_the_thermal_zone_with_hysteresis(tmp_path):
    zone = tmp_path / "thermal_zone0" / "temp"  # millidegrees, as the kernel writes it
    zone.parent.mkdir()
    zone.write_text("64250\n")
    signals = quiet_station_signals(tmp_path / "s", soc_temp_c=lambda: read_thermal_zone(zone))
    mgr = manager(signals)
    assert opened(mgr) == []
    zone.write_text("82125\n")
    assert opened(mgr) == [("soc_temperature", "firing")]
    assert "82.1 °C" in mgr.active()[0]["detail"]
    zone.write_text("77000\n")  # under the limit, not 5 °C under it
    assert opened(mgr) == []
    zone.write_text("74000\n")
    assert opened(mgr) == [("soc_temperature", "resolved")]


# -- time to full ------------------------------------------------------------------------------


def day_of_captures(history: UsageHistory, start: float, used: float, grows: float, frees: float):
    """One day sampled every 5 min: an evening session writes ``grows`` bytes over two hours,
    and the storage check's retention frees ``frees`` at midnight."""
    for step in range(288):
        at = start + step * 300
        hour = step / 12
        if 18 <= hour < 20:
            used += grows / 24
        if step == 0:
            used -= frees
        history.add(at, int(used), 32 * GB)
    return used


def test_time_to_full_from_the_usage_history_against_retention(tmp_path):
    history = UsageHistory(tmp_path / "storage-history.json")
    signals = quiet_station_signals(tmp_path / "s", usage=history)
    mgr = manager(signals)
    t0 = 1_700_000_000.0
    used = day_of_captures(history, t0, 20 * GB, grows=2 * GB, frees=0)
    assert opened(mgr) == []  # not a whole window of history yet: no estimate
    # retention frees what a day captures: no growth, no alert, however full
    used = day_of_captures(history, t0 + 86400, used, grows=2 * GB, frees=2 * GB)
    hours, rate = time_to_full_h(history.samples, 80, 24 * HOUR)
    assert hours is None and rate is not None and abs(rate) < 0.01 * GB
    assert opened(mgr) == []
    # retention frees less than is captured: 1.5 GB a day net, 3.6 GB left to 80 % (25.6 GB)
    used = day_of_captures(history, t0 + 2 * 86400, used, grows=2 * GB, frees=0.5 * GB)
    hours, rate = time_to_full_h(history.samples, 80, 24 * HOUR)
    assert rate == pytest.approx(1.5 * GB / 24, rel=0.05)
    assert hours == pytest.approx((25.6 * GB - used) / rate, rel=0.01) and hours < 72
    assert opened(mgr) == [("disk_time_to_full", "firing")]
    assert "80 % watermark in" in mgr.active()[0]["detail"]
    # the history survives a restart
    assert UsageHistory(tmp_path / "storage-history.json").samples == history.samples


# -- clock and weather -------------------------------------------------------------------------


def test_clock_not_synchronised_by_the_kernels_maximum_error(tmp_path):
    state = {"now": ClockState(max_error_us=16_000_000, status=0x40, state=5)}  # STA_UNSYNC
    mgr = manager(quiet_station_signals(tmp_path / "s", clock=lambda: state["now"]))
    assert opened(mgr) == [("clock_unsynchronised", "firing")]
    state["now"] = ClockState(max_error_us=35_000, status=0x2001, state=0)  # NTP disciplined
    assert opened(mgr) == [("clock_unsynchronised", "resolved")]
    real = read_clock()  # this machine's adjtimex: a read needs no privilege
    assert real is not None and real.max_error_us >= 0 and 0 <= real.state <= 5


def test_weather_api_failing_counts_the_clients_failed_fetches(tmp_path):
    calls = {"n": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503 if calls["n"] > 1 else 200, json=OWM_CLEAR)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    config = WeatherConfig(api_key="k" * 32, refresh_s=60, cache_path=tmp_path / "weather.json")
    weather = WeatherService(config, LocationConfig(), http=http)
    mgr = manager(
        quiet_station_signals(tmp_path / "s", weather_failures=lambda: weather.failures),
        AlertsConfig(weather_failures=3, clear_after_s=0),
    )

    async def fetch(minute: int) -> None:
        await weather.current(dt.datetime(2024, 3, 20, 12, minute, tzinfo=dt.UTC))

    asyncio.run(fetch(0))
    assert opened(mgr) == []
    for minute in (1, 2):
        asyncio.run(fetch(minute))
    assert opened(mgr) == []  # two failures
    asyncio.run(fetch(3))
    assert opened(mgr) == [("weather_failing", "firing")]
    assert "3 consecutive" in mgr.active()[0]["detail"]
    calls["n"] = 0  # the API answers again
    asyncio.run(fetch(4))
    assert opened(mgr) == [("weather_failing", "resolved")]


OWM_CLEAR = {
    "dt": 1710936000,
    "clouds": {"all": 5},
    "visibility": 10000,
    "wind": {"speed": 2.0},
    "weather": [{"id": 800, "description": "clear sky"}],
}


# -- the targets: storage and uptime -----------------------------------------------------------


def test_storage_above_its_target_on_either_service():
    used = {"pct": 79.0}
    section = {"now": AlertsConfig(clear_after_s=0)}
    mgr = AlertManager(
        "processing",
        "host",
        [storage_condition(lambda: used["pct"], lambda: section["now"], clear_after_s=0)],
    )
    assert opened(mgr) == []
    used["pct"] = 81.0
    assert opened(mgr) == [("storage_utilization", "firing")]
    used["pct"] = 77.0  # under the target, not 5 points under it
    assert opened(mgr) == []
    section["now"] = AlertsConfig(clear_after_s=0, storage_max_pct=90)  # PUT /config
    assert opened(mgr) == [("storage_utilization", "resolved")]


def test_uptime_alert_below_the_target_once_an_hour_was_scheduled(tmp_path):
    now = [1_700_000_000.0]
    ledger = ScheduledUptime(
        tmp_path / "up.json", lambda a, b: [], save_every_s=3600, clock=lambda: now[0]
    )
    runtime = SimpleNamespace(config=default_config(), uptime=ledger)
    condition = AlertCondition(
        "system_uptime", "t", "warning", "scheduler", partial(_uptime, runtime), 0.0, 0.0
    )
    mgr = AlertManager("capture", "peak-1", [condition])

    def scheduled(seconds: float, captured: bool) -> None:
        for _ in range(int(seconds // 50)):  # heartbeats 50 s apart (not a gap: < 60 s)
            now[0] += 50
            ledger.heartbeat(True, captured)

    scheduled(1200, False)  # 20 min with a dead camera: too little scheduled time to judge
    assert opened(mgr) == []
    scheduled(3000, True)  # 70 min scheduled, 50 captured: 71 %
    assert opened(mgr) == [("system_uptime", "firing")]
    assert "71.43 % of 1.2 h" in mgr.active()[0]["detail"]
    scheduled(4 * 86400, True)  # days of capture later: 99.66 %, above 99.5 % + 0.1
    assert ledger.percent() > 99.6
    assert opened(mgr) == [("system_uptime", "resolved")]
