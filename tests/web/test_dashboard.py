"""The web dashboard in a real browser: Playwright driving Debian's Chromium (headless) against
both services, started here on loopback ports.

Checks what a user would: the page loads without console errors, the login form keeps the
token, the live preview updates over the WebSocket, "Capture now" adds a frame to the list, a
render queued from the page shows progress and lands in the gallery, a finished timelapse
plays, and a phone-sized viewport never scrolls sideways. Screenshots go to /tmp for a look.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from skylapse.api.capture.app import create_capture_app
from skylapse.api.processing.app import ProcessingSettings, create_processing_app
from skylapse.api.server import ServerThread
from skylapse.capture.cameras import CameraConfig, SimulatedCamera
from skylapse.capture.clock import RealClock
from skylapse.capture.watchdog import Watchdog
from skylapse.config import ProcessingConfig, default_config
from skylapse.processing.ingest import Ingestor
from skylapse.testing import SequenceSpec, generate_sequence
from tests_support import CHROMIUM, commit_frames_to_inbox, wait_for

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TOKEN = "dashboard-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"formats": ["h265", "h264"], "preset": "ultrafast", "denoise": "off"}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("SKYLAPSE_SCREENSHOTS", "/tmp/skylapse-dashboard"))


pytestmark = pytest.mark.system(CHROMIUM)

wait_for = partial(wait_for, timeout=30.0)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A fresh browser context and page that records console errors and page errors."""

    def __init__(self, browser, viewport=None):
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def sign_in(self, url: str, token: str = TOKEN):
        self.page.goto(url)
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()

    def no_horizontal_scroll(self):
        width = self.page.evaluate("document.documentElement.scrollWidth")
        inner = self.page.evaluate("window.innerWidth")
        assert width <= inner, f"page is {width} px wide in a {inner} px viewport"

    def accessibility_basics(self):
        """Every image has alt text, every form field a label, every button a name."""
        missing = self.page.evaluate("""() => {
            const bad = [];
            for (const img of document.querySelectorAll('img'))
                if (!img.alt.trim()) bad.push('img ' + img.outerHTML.slice(0, 80));
            for (const input of document.querySelectorAll('input:not([type=hidden]):not([hidden])'))
                if (!input.labels.length && !input.getAttribute('aria-label'))
                    bad.push('input ' + input.id);
            for (const b of document.querySelectorAll('button'))
                if (!(b.textContent.trim() || b.getAttribute('aria-label'))) bad.push('button');
            return bad;
        }""")
        assert missing == [], missing

    def screenshot(self, name: str):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / name), full_page=True)

    def close(self):
        self.context.close()


@pytest.fixture()
def page_of(browser):
    opened = []

    def make(viewport=None):
        p = Page(browser, viewport)
        opened.append(p)
        return p

    yield make
    for p in opened:
        p.close()


# -- the processing service -------------------------------------------------------------------


@pytest.fixture(scope="module")
def processing(tmp_path_factory):
    """The processing service with three ingested sequences: one rendered to H.265 and an
    H.264 preview, one rendered to H.265 only, one not rendered."""
    tmp = tmp_path_factory.mktemp("processing")
    data = tmp / "data"
    for station, seed in (("peak-1", 3), ("peak-2", 4), ("peak-3", 5)):
        generate_sequence(tmp / station, SequenceSpec(frames=16, size=(320, 180), seed=seed))
        commit_frames_to_inbox(tmp / station, data / "inbox" / station)
    app = create_processing_app(
        ProcessingSettings(
            data_dir=data,
            token=TOKEN,
            workers=1,
            ingest=False,
            processing=ProcessingConfig(render_after_min=None, job_poll_s=0.2),
        )
    )
    jobs = app.state.runtime.jobs
    Ingestor(data / "inbox", jobs.store, data / "quarantine", jobs.catalog).scan()
    with (
        ServerThread(app) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        first, second, third = client.get("/sequences").json()
        job = client.post("/jobs", json={"sequence_id": first["id"], "options": FAST}).json()
        hevc = client.post(
            "/jobs", json={"sequence_id": third["id"], "options": {**FAST, "formats": ["h265"]}}
        ).json()
        for j in (job, hevc):
            wait_for(
                lambda j=j: client.get(f"/jobs/{j['id']}").json()["state"] == "done",
                what="the renders",
            )
        yield {
            "url": server.url + "/",
            "client": client,
            "job": job,
            "hevc_job": hevc,
            "unrendered": second,
        }


def test_processing_page_lists_jobs_and_plays_a_finished_timelapse(processing, page_of):
    p = page_of()
    p.sign_in(processing["url"])
    page = p.page
    job_id = processing["job"]["id"]
    job = page.locator(f'li.job[data-job-id="{job_id}"]')
    sync_api.expect(job).to_have_attribute("data-state", "done")
    assert job.locator("progress").evaluate("e => e.value") == 1.0
    sync_api.expect(page.locator("#connection")).to_have_text("live")

    card = page.locator(f'article.timelapse[data-job-id="{job_id}"]')
    video = card.locator("video")
    # The H.264 preview comes first: Chromium without an H.265 decoder still plays it.
    sources = video.locator("source").evaluate_all("s => s.map(e => e.src)")
    assert "timelapse.preview.mp4" in sources[0] and "token=" in sources[0]
    played = video.evaluate("""async v => {
        await v.play();
        const t0 = v.currentTime;
        await new Promise(r => setTimeout(r, 400));
        return {readyState: v.readyState, t0, t1: v.currentTime, src: v.currentSrc,
                w: v.videoWidth, h: v.videoHeight, error: v.error && v.error.code};
    }""")
    assert played["error"] is None and played["readyState"] >= 2, played
    assert played["src"].split("?")[0].endswith(".preview.mp4")
    assert (played["w"], played["h"]) == (320, 180)
    assert played["t1"] > played["t0"], played  # it plays, not just loads

    keogram = card.get_by_role("img", name="Keogram")
    assert keogram.evaluate("i => i.complete && i.naturalWidth > 0")
    assert "the sky's colours over time" in keogram.get_attribute("alt")
    assert page.evaluate("localStorage.getItem('skylapse.token')") == TOKEN
    p.screenshot("processing-desktop.png")
    assert p.errors == []


def test_a_video_the_browser_cannot_decode_says_so(processing, page_of):
    """Debian's Chromium has no H.265 decoder: an H.265-only timelapse gets a note and its
    download link instead of a black player (and plays where the browser can decode it)."""
    p = page_of()
    p.sign_in(processing["url"])
    card = p.page.locator(f'article.timelapse[data-job-id="{processing["hevc_job"]["id"]}"]')
    sync_api.expect(card).to_be_visible()
    hevc = p.page.evaluate(
        "document.createElement('video').canPlayType('video/mp4; codecs=\"hvc1.2.4.L93.B0\"')"
    )
    if hevc:
        card.locator("video").evaluate("v => v.play()")
    else:
        sync_api.expect(card.locator(".cannot-play")).to_contain_text("cannot play")
        assert card.locator("video").count() == 0
    assert card.get_by_role("link", name=re.compile("^Video")).count() == 1
    assert p.errors == []


def test_render_queued_from_the_page_shows_progress_and_reaches_the_gallery(processing, page_of):
    p = page_of()
    p.sign_in(processing["url"])
    page = p.page
    seq = processing["unrendered"]
    page.get_by_role("button", name=f"Render sequence {seq['id']}").click()
    client = processing["client"]
    job = wait_for(
        lambda: next(
            (j for j in client.get("/jobs").json() if j["sequence_id"] == seq["id"]), None
        ),
        what="the new job",
    )
    item = page.locator(f'li.job[data-job-id="{job["id"]}"]')
    sync_api.expect(item).to_be_visible()
    # pushed over the WebSocket: the list follows the job to done without a reload
    sync_api.expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    sync_api.expect(item.locator(".pct")).to_have_text("100 %")
    sync_api.expect(
        page.locator(f'article.timelapse[data-job-id="{job["id"]}"] video')
    ).to_have_count(1)
    assert p.errors == []


def test_processing_page_fits_a_phone(processing, page_of):
    p = page_of(PHONE)
    p.sign_in(processing["url"])
    p.page.locator("article.timelapse video").first.wait_for()
    columns = p.page.evaluate(
        "getComputedStyle(document.querySelector('#processing-view')).gridTemplateColumns"
    )
    assert len(columns.split()) == 1, columns  # one column
    p.no_horizontal_scroll()
    for button in p.page.get_by_role("button").all():
        if button.is_visible():
            box = button.bounding_box()
            assert box["height"] >= 44 and box["width"] >= 44, (button.inner_text(), box)
    p.accessibility_basics()
    p.screenshot("processing-phone.png")
    assert p.errors == []


def test_a_wrong_token_brings_the_login_back(processing, page_of):
    p = page_of()
    p.sign_in(processing["url"], token="not-the-token")
    sync_api.expect(p.page.locator("#login-error")).to_contain_text("refused")
    assert p.page.locator("#processing-view").is_hidden()
    assert p.page.evaluate("localStorage.getItem('skylapse.token')") is None


# -- the capture service ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """The capture service with a simulated camera at 320x180 on the real clock, no plan.
    Exposures are capped at 50 ms: the simulated camera takes as long as a real one would, and
    a night-time run of this test must not wait for 30-second exposures."""
    cfg = default_config()
    cfg = cfg.model_copy(
        update={
            "capture": cfg.capture.model_copy(update={"autofocus": False, "hdr": False}),
            "weather": cfg.weather.model_copy(update={"enabled": False}),
            "strategies": {
                name: s.model_copy(update={"max_exposure_s": 0.05, "hdr": False})
                for name, s in cfg.strategies.items()
            },
        }
    )
    clock = RealClock()
    app = create_capture_app(
        cfg,
        TOKEN,
        camera=SimulatedCamera(clock=clock, seed=3),
        clock=clock,
        buffer=tmp_path_factory.mktemp("buffer"),
        camera_config=CameraConfig(resolution=(320, 180)),
        unattended=False,
        watchdog=Watchdog(env={}),
        notifiers=[],
        tick_s=0.5,
    )
    with (
        ServerThread(app) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
    ):
        wait_for(
            lambda: client.get("/health").json()["checks"]["camera"]["status"] == "ok",
            what="the camera to open",
        )
        yield {"url": server.url + "/", "client": client}


def newest_frame_id(client) -> int:
    frames, offset = [], 0
    while offset is not None:
        page = client.get(f"/frames?limit=1000&offset={offset}").json()
        frames += page["frames"]
        offset = page["next_offset"]
    return max((f["id"] for f in frames), default=0)


def test_capture_page_live_preview_session_and_capture_now(capture, page_of):
    client = capture["client"]
    p = page_of()
    p.sign_in(capture["url"])
    page = p.page
    sync_api.expect(page.locator("#connection")).to_have_text("live")
    sync_api.expect(page.locator("#frames")).to_contain_text("No frames yet")

    # a session started from the page, one frame a second: the preview follows it
    page.get_by_label("Interval (s)").fill("1")
    page.get_by_role("button", name="Start session").click()
    preview = page.get_by_role("img", name="Live preview from the camera, frame taken at")
    sync_api.expect(preview).to_have_attribute("src", re.compile("^blob:"))
    first = (preview.get_attribute("src"), preview.get_attribute("data-frame-at"))
    page.wait_for_function(
        "([src, at]) => { const i = document.querySelector('#preview');"
        " return i.src !== src && i.dataset.frameAt > at && i.complete && i.naturalWidth > 0; }",
        arg=list(first),
        timeout=6000,
    )
    assert preview.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [320, 180]
    page.get_by_role("button", name="Stop session").click()
    sync_api.expect(page.get_by_role("button", name="Start session")).to_be_visible(timeout=10_000)

    # "Capture now" puts the new frame at the top of the list, with its thumbnail
    before = newest_frame_id(client)
    page.get_by_role("button", name="Capture now").click()
    new_id = wait_for(lambda: (n := newest_frame_id(client)) > before and n, what="a new frame")
    item = page.locator(f'li[data-frame-id="{new_id}"]')
    sync_api.expect(item).to_be_visible()
    sync_api.expect(item).to_contain_text("manual")
    assert page.locator("#frames li").first.get_attribute("data-frame-id") == str(new_id)
    thumb = item.get_by_role("img")
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=thumb.element_handle())
    assert thumb.evaluate("i => i.src").startswith("blob:")
    p.screenshot("capture-desktop.png")
    assert p.errors == []


def test_capture_chart_shows_the_sun_and_the_exposure_of_each_frame(capture, page_of):
    client = capture["client"]
    client.post("/capture", json={})
    p = page_of()
    p.sign_in(capture["url"])
    page = p.page
    chart = page.locator("#sun-chart svg")
    sync_api.expect(chart).to_be_visible()
    # golden and blue hours come from the service's plan (46.55 N has both every day)
    phases = [ph["phase"] for ph in client.get("/schedule").json()["phases"]]
    assert chart.locator("rect.band.golden").count() == phases.count("golden_hour") >= 1
    assert chart.locator("rect.band.blue").count() == phases.count("blue_hour") >= 1
    frames = client.get("/frames?limit=1000").json()["frames"]
    assert chart.locator("circle.ev-dot").count() == len(frames) >= 1
    # the page's own sun model agrees with the service's (astral) to a tenth of a degree
    status = client.get("/status").json()
    js = page.evaluate(
        """async ([now, lat, lon]) => {
        const {sunElevation} = await import('/static/sun.js');
        return sunElevation(Date.parse(now), lat, lon);
    }""",
        [status["now"], 46.55, 7.98],
    )
    assert js == pytest.approx(status["sun_elevation_deg"], abs=0.1)
    assert "The sun peaks at" in chart.get_attribute("aria-label")
    assert p.errors == []


def test_capture_page_fits_a_phone(capture, page_of):
    capture["client"].post("/capture", json={})
    p = page_of(PHONE)
    p.sign_in(capture["url"])
    page = p.page
    page.locator("#frames li.frame-item").first.wait_for()
    page.locator("#sun-chart svg").wait_for()
    columns = page.evaluate(
        "getComputedStyle(document.querySelector('#capture-view')).gridTemplateColumns"
    )
    assert len(columns.split()) == 1, columns
    p.no_horizontal_scroll()
    for button in page.get_by_role("button").all():
        if button.is_visible():
            box = button.bounding_box()
            assert box["height"] >= 44 and box["width"] >= 44, (button.inner_text(), box)
    # the chart is drawn for the phone's width: its labels stay readable
    assert page.locator("#sun-chart svg").evaluate("s => s.viewBox.baseVal.width") <= 390
    p.accessibility_basics()
    p.screenshot("capture-phone.png")
    assert p.errors == []
