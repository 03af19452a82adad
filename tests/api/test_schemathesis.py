"""Property-based API testing: schemathesis generates requests, valid and invalid, from the
OpenAPI document the running service serves; no response may be a server error (5xx).

schemathesis and hypothesis are imported where they run, and schemathesis's pytest plugin is not
loaded (``-p no:schemathesis`` in pyproject.toml; these tests do not use it): every xdist worker
collects this module, and importing them costs each worker about 1.5 s."""

from __future__ import annotations

from collections import Counter

import pytest

from skylapse.api.processing.app import ProcessingSettings, create_processing_app
from skylapse.api.server import ServerThread
from skylapse.config import ProcessingConfig
from skylapse.processing.ingest import Ingestor
from skylapse.testing import SequenceSpec, generate_sequence
from tests_support import commit_frames_to_inbox

TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 80  # per generation mode, over all operations: a few seconds on loopback


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The service on a loopback port, over a catalog with one sequence (so that valid render
    requests get through) and no workers (so that queued jobs stay put)."""
    tmp = tmp_path_factory.mktemp("st")
    data = tmp / "data"
    generate_sequence(tmp / "gen", SequenceSpec(frames=3, size=(64, 36), seed=2))
    commit_frames_to_inbox(tmp / "gen", data / "inbox" / "peak-1")
    app = create_processing_app(
        ProcessingSettings(
            data_dir=data,
            token=TOKEN,
            workers=0,
            ingest=False,
            processing=ProcessingConfig(render_after_min=None),
        )
    )
    jobs = app.state.runtime.jobs
    Ingestor(data / "inbox", jobs.store, data / "quarantine", jobs.catalog).scan()
    with ServerThread(app) as server:
        yield server


def requests_without_server_errors(base_url: str, mode, after=None) -> Counter:
    """Run schemathesis' generated requests against a served API, asserting no 5xx; returns
    how often each (method, path, status) was seen; ``mode`` is "positive" or "negative".
    ``after(case, response)`` may clean up."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=AUTH)
    seen: Counter = Counter()

    @given(case=schema.as_strategy(GenerationMode(mode), headers=AUTH))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report a failure at once, unshrunk
        suppress_health_check=list(HealthCheck),
    )
    def no_5xx(case):
        response = case.call(base_url=base_url, headers=AUTH, timeout=10)
        seen[(case.method, case.path, response.status_code)] += 1
        assert response.status_code < 500, (
            case.method,
            case.formatted_path,
            case.body,
            response.status_code,
            response.text[:300],
        )
        if after is not None:
            after(case, response)

    no_5xx()
    return seen


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors(served, mode):
    seen = requests_without_server_errors(served.url, mode)
    operations = {(method, path) for method, path, _ in seen}
    assert len(operations) >= 6, seen  # the run reached most operations
    if mode == "negative":  # invalid input was refused as such
        assert any(code == 422 for *_, code in seen), seen
    else:
        assert any(code in (200, 202) for *_, code in seen), seen


@pytest.fixture(scope="module")
def served_capture(tmp_path_factory):
    """The capture service on the simulated camera at 160x90, plan off, with a frame taken."""
    import datetime as dt
    import time

    import httpx

    from skylapse.api.capture.app import create_capture_app
    from skylapse.capture.cameras import CameraConfig, SimulatedCamera
    from skylapse.capture.clock import SimulatedClock
    from skylapse.config import default_config

    clock = SimulatedClock(dt.datetime(2024, 3, 20, 12, tzinfo=dt.UTC))
    app = create_capture_app(
        default_config(),
        TOKEN,
        camera=SimulatedCamera(clock=clock, seed=1),
        clock=clock,
        buffer=tmp_path_factory.mktemp("st-capture"),
        unattended=False,
        notifiers=[],
        camera_config=CameraConfig(resolution=(160, 90)),
    )
    with ServerThread(app) as server:
        deadline = time.monotonic() + 20
        while httpx.post(server.url + "/capture", headers=AUTH).status_code != 200:
            assert time.monotonic() < deadline  # the camera opens in the background
        yield server


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_capture_api_has_no_server_errors(served_capture, mode):
    def stop_started_sessions(case, response):
        if case.method == "POST" and case.path == "/sessions" and response.status_code == 201:
            httpx_delete(served_capture.url, response.json()["session_id"])

    seen = requests_without_server_errors(served_capture.url, mode, stop_started_sessions)
    assert len({(m, p) for m, p, _ in seen}) >= 8, seen
    codes = {code for *_, code in seen}
    assert (422 in codes) if mode == "negative" else (200 in codes), seen


def httpx_delete(base: str, session_id: str) -> None:
    """Stop a session the generated requests started (the simulated clock would race)."""
    import httpx

    httpx.delete(f"{base}/sessions/{session_id}", headers=AUTH, timeout=10)
