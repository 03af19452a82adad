"""The processing service's API: every endpoint, its refusals, range requests, metrics and
live job events from a real render of a small synthetic sequence."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import get_args

import httpx
import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from skylapse.api.auth import TOKEN_ENV, MissingTokenError, resolve_token, token_matches
from skylapse.api.processing.app import ProcessingSettings, create_processing_app
from skylapse.api.processing.models import JobState
from skylapse.api.processing.settings import PROCESSING_METRICS
from skylapse.api.server import ServerThread
from skylapse.catalog import JOB_STATES
from skylapse.config import ApiConfig, ProcessingConfig
from skylapse.metrics import METRICS, ServiceMetrics, UptimeTracker
from skylapse.processing.options import RenderOptions
from skylapse.testing import SequenceSpec, generate_sequence
from tests_support import commit_frames_to_inbox, wait_for

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"formats": ["h265", "h264"], "preset": "ultrafast", "denoise": "off"}
FRAMES = 24


def settings(
    data: Path,
    *,
    workers: int = 0,
    ingest_every_s: float | None = None,
    api: ApiConfig | None = None,
    **processing,
) -> ProcessingSettings:
    """A service with ``workers`` job threads, an ingest loop every ``ingest_every_s`` (None:
    none) and these ``processing`` section values (no automatic renders unless given)."""
    section = {"render_after_min": None, "job_poll_s": 0.2, **processing}
    if ingest_every_s is not None:
        section["ingest_every_s"] = ingest_every_s
    return ProcessingSettings(
        data_dir=data,
        token=TOKEN,
        workers=workers,
        ingest=ingest_every_s is not None,
        processing=ProcessingConfig(**section),
        api=api or ApiConfig(),
    )


wait_for = partial(wait_for, timeout=60.0)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A real service (uvicorn on loopback, one worker thread, ingest loop) that ingested a
    synthetic sequence from its inbox and rendered it while a WebSocket client listened."""
    tmp = tmp_path_factory.mktemp("served")
    data = tmp / "data"
    src = tmp / "gen"
    generate_sequence(src, SequenceSpec(frames=FRAMES, size=(320, 180), seed=3))
    commit_frames_to_inbox(src, data / "inbox" / "peak-1")
    app = create_processing_app(settings(data, workers=1, ingest_every_s=0.2))
    with (
        ServerThread(app) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):

        def ingested():
            seqs = client.get("/sequences").json()
            return seqs if seqs and seqs[0]["frames"] == FRAMES else None

        seqs = wait_for(ingested, what="ingest of every frame")
        events = []
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        with connect(ws_url, additional_headers={"X-Unused": "1"}) as ws:
            ws.send(json.dumps({"token": TOKEN}))  # first-message authentication
            events.append(json.loads(ws.recv(timeout=10)))
            r = client.post(
                "/jobs",
                json={"sequence_id": seqs[0]["id"], "options": FAST},
                headers={"X-Correlation-ID": "req-render-1"},
            )
            assert r.status_code == 202, r.text
            job = r.json()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                event = json.loads(ws.recv(timeout=30))
                events.append(event)
                if (
                    event["type"] == "job"
                    and event["job"]["id"] == job["id"]
                    and event["job"]["state"] in ("done", "failed")
                ):
                    break
        metrics_text = client.get("/metrics").text
        yield {
            "client": client,
            "server": server,
            "job": job,
            "events": events,
            "metrics": metrics_text,
            "data": data,
            "sequence": seqs[0],
        }


@pytest.fixture()
def client(tmp_path):
    app = create_processing_app(settings(tmp_path / "data"))
    with TestClient(app) as c:
        yield c


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/sequences"),
        ("GET", "/jobs"),
        ("GET", "/jobs/abc"),
        ("POST", "/jobs"),
        ("POST", "/jobs/abc/cancel"),
        ("POST", "/jobs/abc/retry"),
        ("GET", "/timelapses"),
        ("GET", "/timelapses/abc/timelapse.mp4"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ],
)
def test_every_endpoint_but_health_needs_the_token(client, method, path):
    missing = client.request(method, path)
    wrong = client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}x"})
    basic = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    for r in (missing, wrong, basic):
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_token_and_reports_each_part(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["service"] == "processing" and body["status"] == "ok"
    assert set(body["checks"]) == {
        "queue",
        "disk",
        "catalog",
        "workers",
        "ingest",
        "store",
        "alerts",
    }
    assert all(
        c["status"] in ("ok", "degraded", "failing") and c["detail"]
        for c in body["checks"].values()
    )
    assert "sqlite" in body["checks"]["queue"]["detail"]


def test_token_resolution_and_comparison(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(MissingTokenError):
        resolve_token(None)
    assert resolve_token("from-config-0123456") == "from-config-0123456"
    monkeypatch.setenv(TOKEN_ENV, "from-env-0123456789")
    assert resolve_token("from-config-0123456") == "from-env-0123456789"
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
    assert not token_matches("abc", None) and not token_matches("abc", "ab")


# -- input validation ---------------------------------------------------------------------


def fields_of(response) -> set[str]:
    assert response.status_code == 422, response.text
    return {e["field"] for e in response.json()["detail"]}


def test_invalid_render_requests_are_422_naming_the_field(client):
    post = lambda body: client.post("/jobs", json=body, headers=AUTH)  # noqa: E731
    assert fields_of(post({})) == {"sequence_id"}
    assert fields_of(post({"sequence_id": "x"})) == {"sequence_id"}
    assert fields_of(post({"sequence_id": 2**70})) == {"sequence_id"}
    assert fields_of(post({"sequence_id": 1, "options": {"fps": 0, "crf": 99}})) == {
        "options.fps",
        "options.crf",
    }
    assert fields_of(post({"sequence_id": 1, "options": {"size": "huge"}})) == {"options.size"}
    assert fields_of(post({"sequence_id": 1, "options": {"preset": "warp"}})) == {"options.preset"}
    assert fields_of(post({"sequence_id": 1, "options": {"white_balance": "900K"}})) == {
        "options.white_balance"
    }
    assert fields_of(post({"sequence_id": 1, "options": {"formats": []}})) == {"options.formats"}
    for formats in (["gif"], ["h265@huge"], ["h265@16384x16384"], ["h264@hd", "h264@720p"]):
        body = {"sequence_id": 1, "options": {"formats": formats}}
        fields = fields_of(post(body))  # the list, or the item: options.formats.0
        assert fields and all(f.startswith("options.formats") for f in fields), formats
    assert fields_of(post({"sequence_id": 1, "surprise": True})) == {"surprise"}
    assert fields_of(post({"sequence_id": 1})) == {"sequence_id"}  # no such sequence
    bad_json = client.post(
        "/jobs", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert fields_of(client.get("/jobs?limit=0", headers=AUTH)) == {"limit"}
    assert fields_of(client.get("/jobs?state=sleeping", headers=AUTH)) == {"state"}
    assert fields_of(client.get("/jobs/" + "a" * 65, headers=AUTH)) == {"job_id"}


def test_request_bodies_are_bounded(client):
    big = {"sequence_id": 1, "phase": "x" * 70_000}
    r = client.post("/jobs", json=big, headers=AUTH)
    assert r.status_code == 413
    chunked = client.post(
        "/jobs",
        content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413


def test_unknown_jobs_are_404(client):
    for method, path in [
        ("GET", "/jobs/nope"),
        ("POST", "/jobs/nope/cancel"),
        ("POST", "/jobs/nope/retry"),
        ("GET", "/timelapses/nope/a.mp4"),
    ]:
        assert client.request(method, path, headers=AUTH).status_code == 404


def test_openapi_describes_every_json_answer(client):
    """Successes with their models, refusals with ErrorOut (what they send: one ``detail``)."""
    doc = client.get("/openapi.json", headers=AUTH).json()
    refusals = {
        ("get", "/sequences"): {"401"},
        ("get", "/jobs"): {"401"},
        ("get", "/jobs/{job_id}"): {"401", "404"},
        ("post", "/jobs"): {"401", "413", "429"},
        ("post", "/jobs/{job_id}/cancel"): {"401", "404", "409"},
        ("post", "/jobs/{job_id}/retry"): {"401", "404", "409"},
        ("get", "/timelapses"): {"401"},
        ("get", "/timelapses/{job_id}/{file_name}"): {"401", "404"},
    }
    for (method, path), codes in refusals.items():
        responses = doc["paths"][path][method]["responses"]
        for code in codes:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)
        success = responses.get("200") or responses["202"]
        if path != "/timelapses/{job_id}/{file_name}":  # the file itself
            assert success["content"]["application/json"]["schema"], (method, path)
    assert doc["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    assert set(client.get("/jobs/nope", headers=AUTH).json()) == {"detail"}
    assert set(client.get("/jobs").json()) == {"detail"}
    # the state filter's type is the catalog's list of states
    assert get_args(JobState) == JOB_STATES


def test_correlation_id_is_echoed_or_made(client):
    r = client.get("/health", headers={"X-Correlation-ID": "abc-123"})
    assert r.headers["x-correlation-id"] == "abc-123"
    r = client.get("/health", headers={"X-Correlation-ID": "bad id\twith spaces"})
    made = r.headers["x-correlation-id"]
    assert made != "bad id\twith spaces" and len(made) == 16


def test_serve_processing_builds_the_service_from_the_configs_sections(tmp_path, monkeypatch):
    """`skylapse serve processing` hands the config's sections to the service whole: each
    setting arrives where it acts. The archive folder too: archive jobs write into the
    archive section's ``dir``, so the API serves archived files from there."""
    from PIL import Image

    from skylapse.cli.serve import _processing_app
    from skylapse.config import SkylapseConfig

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    monkeypatch.delenv("SKYLAPSE_ARCHIVE_DIR", raising=False)
    archive = tmp_path / "elsewhere" / "archive"
    cfg = SkylapseConfig.model_validate(
        {
            "processing": {
                "workers": 3,
                "ingest_every_s": 2.0,
                "render_after_min": 12,
                "max_frame_pixels": 5000,
                "job_poll_s": 0.3,
                "render": {"crf": 21},
                "retention": {"keep_days": 2},
            },
            "archive": {"dir": str(archive), "after_render": True},
            "alerts": {"job_failures": 5},
            "transfer": {"station": "peak-2"},
        }
    )
    runtime = _processing_app(cfg, TOKEN, tmp_path / "data", None).state.runtime
    assert runtime.jobs.archive.dir == archive and runtime.jobs.archive.after_render
    assert runtime.stores == (runtime.jobs.timelapses, archive)
    assert runtime.watcher.interval_s == 0.3
    assert runtime.retention.policy == cfg.processing.retention
    loop = runtime.ingest_loop
    assert loop.every_s == 2.0 and loop.render_after.total_seconds() == 12 * 60
    assert loop.render_options == cfg.processing.render and loop.ingestor.max_pixels == 5000
    assert runtime.alerts_section.job_failures == 5
    assert runtime.settings.worker_threads == 3 and runtime.settings.station == "peak-2-processing"
    workers = _processing_app(cfg, TOKEN, tmp_path / "data", 0).state.runtime.settings
    assert workers.worker_threads == 0  # --workers 0


def test_cors_is_off_by_default_and_on_when_configured(tmp_path):
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_processing_app(settings(tmp_path / "a"))) as c:
        r = c.get("/health", headers={"Origin": "https://dash.example"})
        assert "access-control-allow-origin" not in r.headers
        assert c.options("/jobs", headers=preflight).status_code in (401, 405)
    app = create_processing_app(
        settings(tmp_path / "b", api=ApiConfig(cors_origins=["https://dash.example"]))
    )
    with TestClient(app) as c:
        r = c.options("/jobs", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://dash.example"


def test_websocket_refuses_a_wrong_or_missing_token(client):
    from starlette.websockets import WebSocketDisconnect

    with (
        client.websocket_connect("/ws?token=wrong") as ws,
        pytest.raises(WebSocketDisconnect) as refused,
    ):
        ws.receive_json()
    assert refused.value.code == 4401
    with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as refused:
        ws.send_text(json.dumps({"token": "nope"}))
        ws.receive_json()
    assert refused.value.code == 4401
    with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        assert ws.receive_json()["type"] == "snapshot"
        ws.send_text(json.dumps({"type": "ping"}))
        assert ws.receive_json() == {"type": "pong"}


# -- the real render, served --------------------------------------------------------------


def test_websocket_streams_progress_of_a_real_render(rendered):
    events, job_id = rendered["events"], rendered["job"]["id"]
    assert events[0]["type"] == "snapshot"
    progress = [e["progress"] for e in events if e["type"] == "progress" and e["job_id"] == job_id]
    assert any(0 < p < 1 for p in progress), progress
    assert progress == sorted(progress)  # never goes backwards
    states = [e["job"]["state"] for e in events if e["type"] == "job" and e["job"]["id"] == job_id]
    assert states[-1] == "done", events[-3:]
    assert "running" in states or len(progress) > 0
    done = [e["job"] for e in events if e["type"] == "job" and e["job"]["state"] == "done"][-1]
    assert done["progress"] == 1.0 and done["result"]["frames"] == FRAMES
    assert done["correlation_id"] == "req-render-1"  # carried from the request into the job


def test_a_render_job_fuses_the_captures_bracket_sets_unless_told_otherwise(rendered):
    options = rendered["job"]["params"]["options"]
    assert options["brackets"] == "capture"  # the default: FAST does not name it
    assert options["formats"] == ["h265", "h264"]


def test_automatic_renders_use_the_configured_options(tmp_path):
    generate_sequence(tmp_path / "gen", SequenceSpec(frames=3, size=(64, 36), seed=4))
    commit_frames_to_inbox(tmp_path / "gen", tmp_path / "data" / "inbox" / "peak-1")
    configured = RenderOptions(formats="h265@2160p,h264@720p,hlg", crf=20, denoise="spatial")
    app = create_processing_app(
        settings(tmp_path / "data", ingest_every_s=0.1, render_after_min=0.001, render=configured)
    )
    with TestClient(app) as client:
        jobs = wait_for(lambda: client.get("/jobs", headers=AUTH).json(), what="the render")
    assert RenderOptions.model_validate(jobs[0]["params"]["options"]) == configured


def test_jobs_list_get_cancel_retry(rendered):
    client, job_id = rendered["client"], rendered["job"]["id"]
    listed = client.get("/jobs").json()
    assert [j["id"] for j in listed] == [job_id]
    assert client.get("/jobs?state=done").json()[0]["id"] == job_id
    assert client.get("/jobs?state=failed").json() == []
    one = client.get(f"/jobs/{job_id}").json()
    assert one["state"] == "done" and one["sequence_id"] == rendered["sequence"]["id"]
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 409  # already done
    assert client.post(f"/jobs/{job_id}/retry").status_code == 409  # only failed/cancelled


def test_cancel_then_retry_a_queued_job(tmp_path):
    data = tmp_path / "data"
    src = tmp_path / "gen"
    generate_sequence(src, SequenceSpec(frames=4, size=(160, 90), seed=1))
    commit_frames_to_inbox(src, data / "inbox" / "peak-2")
    app = create_processing_app(settings(data, ingest_every_s=0.1))  # no workers: stays queued
    with TestClient(app) as c:
        seq = wait_for(lambda: c.get("/sequences", headers=AUTH).json(), what="ingest")[0]
        job = c.post("/jobs", json={"sequence_id": seq["id"]}, headers=AUTH).json()
        assert job["state"] == "queued"
        cancelled = c.post(f"/jobs/{job['id']}/cancel", headers=AUTH)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        retried = c.post(f"/jobs/{job['id']}/retry", headers=AUTH)
        assert retried.status_code == 200 and retried.json()["state"] == "queued"
        bad_phase = c.post("/jobs", json={"sequence_id": seq["id"], "phase": "noon"}, headers=AUTH)
        assert fields_of(bad_phase) == {"phase"}


def test_timelapses_list_their_files_with_urls(rendered):
    client, job_id = rendered["client"], rendered["job"]["id"]
    (tl,) = client.get("/timelapses").json()
    assert tl["job_id"] == job_id and tl["frames"] == FRAMES
    kinds = {f["kind"]: f for f in tl["files"]}
    assert set(kinds) == {"video", "preview", "keogram", "contact_sheet"}
    for f in tl["files"]:
        assert f["url"] == f"/timelapses/{job_id}/{f['name']}" and f["size_bytes"] > 0
        r = client.get(f["url"])
        assert r.status_code == 200 and r.headers["content-type"] == f["media_type"]
        assert len(r.content) == f["size_bytes"]
    assert kinds["keogram"]["media_type"] == "image/png"
    assert client.get(kinds["keogram"]["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_range_requests_return_206_with_the_right_bytes(rendered):
    client, data = rendered["client"], rendered["data"]
    (tl,) = client.get("/timelapses").json()
    video = next(f for f in tl["files"] if f["kind"] == "preview")
    whole = next((data / "timelapses").glob("*/timelapse.preview.mp4")).read_bytes()
    size = len(whole)
    r = client.get(video["url"], headers={"Range": "bytes=100-299"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 100-299/{size}"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == whole[100:300]
    tail = client.get(video["url"], headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == whole[-50:]
    beyond = client.get(video["url"], headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416


def test_file_endpoint_never_leaves_its_store(rendered):
    client, job_id, data = rendered["client"], rendered["job"]["id"], rendered["data"]
    assert (data / "processing.db").exists()
    secret = (data / "processing.db").read_bytes()[:16]
    attempts = [
        f"/timelapses/{job_id}/..%2F..%2Fprocessing.db",
        f"/timelapses/{job_id}/%2e%2e%2f%2e%2e%2fprocessing.db",
        f"/timelapses/{job_id}/processing.db",
        f"/timelapses/{job_id}/..%5C..%5Cprocessing.db",
        f"/timelapses/..%2F{job_id}/timelapse.mp4",
        f"/timelapses/{job_id}/%2Fetc%2Fpasswd",
    ]
    for path in attempts:
        r = client.get(path)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert secret not in r.content and b"root:" not in r.content
    # a symlink planted in the output folder that points outside the store is not served
    folder = next((data / "timelapses").glob(f"*-{job_id}"))
    outside = data / "secret.txt"
    outside.write_text("top secret")
    keogram = folder / "timelapse.keogram.png"
    keogram.rename(folder / "keogram.bak")
    keogram.symlink_to(outside)
    try:
        r = client.get(f"/timelapses/{job_id}/timelapse.keogram.png")
        assert r.status_code == 404 and b"top secret" not in r.content
    finally:
        keogram.unlink()
        (folder / "keogram.bak").rename(keogram)


def test_metrics_have_help_and_count_the_real_work(rendered):
    text = rendered["metrics"]
    for name in PROCESSING_METRICS:
        assert f"# HELP {name} " in text or f"# HELP {name}_total " in text, name
        assert f"# TYPE {name} " in text or f"# TYPE {name}_total counter" in text, name
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["frames_transferred_total"] == FRAMES
    assert values["render_frames_per_second"] > 0
    assert values['job_duration_seconds_count{kind="render",state="done"}'] == 1
    assert 0 < values["storage_utilization_pct"] <= 100
    assert 0 < values["system_uptime_pct"] <= 100
    assert values["processing_queue_depth"] == 0


def test_health_of_the_running_service(rendered):
    body = httpx.get(rendered["server"].url + "/health").json()
    assert body["status"] == "ok"
    assert body["checks"]["workers"]["detail"].startswith("1 in-process worker")
    assert body["checks"]["ingest"]["status"] == "ok"


# -- the shared metric definitions --------------------------------------------------------


def test_every_named_metric_is_defined_with_help():
    required = [
        "capture_latency_ms",
        "focus_acquisition_time_s",
        "processing_queue_depth",
        "storage_utilization_pct",
        "image_quality_score",
        "system_uptime_pct",
        "frames_captured",
        "frames_transferred",
        "frames_failed",
        "render_frames_per_second",
        "job_duration_seconds",
    ]
    everything = ServiceMetrics(required)
    text = everything.exposition().decode()
    for name in required:
        assert len(METRICS[name].help) > 20
        assert f"# HELP {name}" in text
    assert "# TYPE capture_latency_ms histogram" in text
    assert "# TYPE processing_queue_depth gauge" in text
    assert "# TYPE frames_captured_total counter" in text
    assert "_created" not in text  # no creation-time series: half the scrape for nothing
    with pytest.raises(KeyError):
        ServiceMetrics(["no_such_metric"])


def test_uptime_counts_downtime_between_runs(tmp_path):
    now = [1000.0]
    tracker = UptimeTracker(tmp_path / "up.json", max_gap_s=10, clock=lambda: now[0])
    for _ in range(10):  # 100 s up
        now[0] += 10
        tracker.heartbeat()
    assert tracker.percent() == pytest.approx(100.0)
    now[0] += 100  # down for 100 s, then restarted
    again = UptimeTracker(tmp_path / "up.json", max_gap_s=10, clock=lambda: now[0])
    assert again.percent() == pytest.approx(50.0, abs=0.5)
    for _ in range(10):
        now[0] += 10
        again.heartbeat()
    assert again.percent() == pytest.approx(200 / 300 * 100, abs=0.5)
