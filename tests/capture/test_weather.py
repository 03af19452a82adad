import asyncio
import datetime as dt
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from skylapse.capture.weather import (
    WeatherService,
    classify_sky,
    parse_owm_current,
)
from skylapse.config import LocationConfig, WeatherConfig

DATA = Path(__file__).parent / "data"
OBSERVED = dt.datetime.fromtimestamp(1718990400, dt.UTC)  # `dt` of the recorded answers
LOC = LocationConfig(latitude=46.55, longitude=7.98)


def recorded(name: str) -> bytes:
    return (DATA / f"owm_{name}.json").read_bytes()


class FakeOWM:
    """A real HTTP server on 127.0.0.1 replaying recorded OpenWeatherMap answers."""

    def __init__(self) -> None:
        self.body, self.status, self.delay_s = recorded("clear"), 200, 0.0
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(parse_qs(urlparse(self.path).query))
                time.sleep(owner.delay_s)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(owner.body if owner.status == 200 else b'{"cod":500}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data/2.5/weather"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def owm():
    server = FakeOWM()
    yield server
    server.close()


def service(url: str, tmp_path: Path, **kw) -> WeatherService:
    cfg = WeatherConfig(
        api_key="test-key",
        base_url=url,
        cache_path=tmp_path / "w.json",
        timeout_s=kw.pop("timeout_s", 2.0),
        **kw,
    )
    return WeatherService(cfg, LOC)


def at(minutes: float) -> dt.datetime:
    return OBSERVED + dt.timedelta(minutes=minutes)


def test_parse_and_classify_recorded_answers():
    cfg = WeatherConfig()
    obs = {
        n: parse_owm_current(json.loads(recorded(n)), OBSERVED)
        for n in ("clear", "overcast", "storm", "fog")
    }
    assert obs["clear"].cloud_cover_pct == 5 and obs["clear"].wind_gust_ms == 4.6
    assert obs["storm"].precipitation_mm_h == pytest.approx(4.27)
    assert obs["overcast"].wind_gust_ms is None and obs["overcast"].precipitation_mm_h == 0
    assert obs["clear"].observed_at == OBSERVED
    assert [classify_sky(obs[n], cfg) for n in ("clear", "overcast", "storm", "fog")] == [
        "clear",
        "overcast",
        "stormy",
        "overcast",
    ]
    assert classify_sky(None, cfg) == "clear"
    windy = json.loads(recorded("clear"))
    windy["wind"]["gust"] = 15.0  # gusts alone make it stormy (vibration)
    assert classify_sky(parse_owm_current(windy, OBSERVED), cfg) == "stormy"
    with pytest.raises(KeyError):
        parse_owm_current({"cod": 401}, OBSERVED)


def test_fetches_every_15_minutes_and_caches_on_disk(owm, tmp_path):
    async def run():
        svc = service(owm.url, tmp_path)
        assert await svc.condition(at(0)) == "clear"
        assert await svc.condition(at(5)) == "clear"  # served from memory
        assert len(owm.requests) == 1
        q = owm.requests[0]
        assert q["appid"] == ["test-key"] and q["units"] == ["metric"]
        assert float(q["lat"][0]) == 46.55 and float(q["lon"][0]) == 7.98
        owm.body = recorded("overcast")
        assert await svc.condition(at(15)) == "overcast"
        assert len(owm.requests) == 2
        # a restarted service reads the disk cache and does not fetch before it is due
        svc2 = service(owm.url, tmp_path)
        assert await svc2.condition(at(20)) == "overcast"
        assert len(owm.requests) == 2
        assert json.loads((tmp_path / "w.json").read_text())["cloud_cover_pct"] == 100

    asyncio.run(run())


def test_server_error_keeps_last_observation_until_stale(owm, tmp_path):
    async def run():
        svc = service(owm.url, tmp_path, stale_after_s=3600)
        owm.body = recorded("storm")
        assert await svc.condition(at(0)) == "stormy"
        owm.status = 500
        assert await svc.condition(at(16)) == "stormy"  # failed fetch, last one still fresh
        assert svc.failures == 1
        assert await svc.condition(at(59)) == "stormy"
        assert await svc.current(at(61)) is None  # stale: assume clear sky
        assert await svc.condition(at(61)) == "clear"
        assert svc.failures >= 2
        owm.status = 200
        owm.body = recorded("overcast")
        # recovers at the next due fetch (the recorded `dt` is old, so age counts from it)
        svc.config = svc.config.model_copy(update={"stale_after_s": 7200})
        assert await svc.condition(at(80)) == "overcast"
        assert svc.failures == 0

    asyncio.run(run())


def test_timeout_and_unreachable_never_raise(owm, tmp_path):
    async def run():
        owm.delay_s = 1.0
        svc = service(owm.url, tmp_path / "a", timeout_s=0.2)
        t0 = time.monotonic()
        assert await svc.current(at(0)) is None
        assert time.monotonic() - t0 < 0.9
        assert svc.failures == 1
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dead = service(f"http://127.0.0.1:{port}/weather", tmp_path / "b")
        assert await dead.condition(at(0)) == "clear"
        assert dead.failures == 1

    asyncio.run(run())


def test_missing_key_and_corrupt_cache_degrade_quietly(owm, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENWEATHERMAP_API_KEY", raising=False)
    (tmp_path / "w.json").write_text("{not json")

    async def run():
        cfg = WeatherConfig(base_url=owm.url, cache_path=tmp_path / "w.json")
        svc = WeatherService(cfg, LOC)
        assert await svc.condition(at(0)) == "clear"
        assert owm.requests == []  # no key, no request
        monkeypatch.setenv("OPENWEATHERMAP_API_KEY", "env-key")
        owm.body = recorded("fog")
        assert await svc.condition(at(15)) == "overcast"
        assert owm.requests[0]["appid"] == ["env-key"]

    asyncio.run(run())
