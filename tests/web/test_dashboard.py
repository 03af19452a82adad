"""The web dashboard in a real browser: Playwright driving Debian's Chromium (headless) against
both services, started here on loopback ports.

Checks what a user would: the page loads without console errors, the login form keeps the
token, the live preview updates over the WebSocket, "Capture now" adds a frame to the list, a
render queued from the page shows progress and lands in the gallery, a finished timelapse
plays, and a phone-sized viewport never scrolls sideways. Screenshots go to /tmp for a look.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from skylapse.api.processing import ProcessingSettings, create_processing_app
from skylapse.api.server import ServerThread
from skylapse.processing.ingest import Ingestor
from skylapse.synthetic import generate_sequence
from tests_support import commit_frames_to_inbox

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
TOKEN = "dashboard-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"formats": ["h265", "h264"], "preset": "ultrafast", "denoise": "off"}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("SKYLAPSE_SCREENSHOTS", "/tmp/skylapse-dashboard"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing (apt-get install chromium)")


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
    """The processing service with two ingested sequences, one already rendered."""
    tmp = tmp_path_factory.mktemp("processing")
    data = tmp / "data"
    for station, seed in (("peak-1", 3), ("peak-2", 4)):
        generate_sequence(tmp / station, frames=16, size=(320, 180), seed=seed)
        commit_frames_to_inbox(tmp / station, data / "inbox" / station)
    app = create_processing_app(ProcessingSettings(
        data_dir=data, token=TOKEN, workers=1, ingest_every_s=None, render_after_min=None,
        job_poll_s=0.2))
    jobs = app.state.jobs
    Ingestor(data / "inbox", jobs.store, data / "quarantine", jobs.catalog).scan()
    with ServerThread(app) as server, httpx.Client(base_url=server.url, headers=AUTH,
                                                   timeout=30) as client:
        first, second = client.get("/sequences").json()
        job = client.post("/jobs", json={"sequence_id": first["id"], "options": FAST}).json()
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["state"] == "done",
                 what="the first render")
        yield {"url": server.url + "/", "client": client, "job": job, "unrendered": second}


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


def test_render_queued_from_the_page_shows_progress_and_reaches_the_gallery(processing,
                                                                           page_of):
    p = page_of()
    p.sign_in(processing["url"])
    page = p.page
    seq = processing["unrendered"]
    page.get_by_role("button", name=f"Render sequence {seq['id']}").click()
    client = processing["client"]
    job = wait_for(lambda: next((j for j in client.get("/jobs").json()
                                 if j["sequence_id"] == seq["id"]), None), what="the new job")
    item = page.locator(f'li.job[data-job-id="{job["id"]}"]')
    sync_api.expect(item).to_be_visible()
    # pushed over the WebSocket: the list follows the job to done without a reload
    sync_api.expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    sync_api.expect(item.locator(".pct")).to_have_text("100 %")
    sync_api.expect(page.locator(f'article.timelapse[data-job-id="{job["id"]}"] video')) \
        .to_have_count(1)
    assert p.errors == []


def test_processing_page_fits_a_phone(processing, page_of):
    p = page_of(PHONE)
    p.sign_in(processing["url"])
    p.page.locator("article.timelapse video").first.wait_for()
    columns = p.page.evaluate(
        "getComputedStyle(document.querySelector('#processing-view')).gridTemplateColumns")
    assert len(columns.split()) == 1, columns  # one column
    p.no_horizontal_scroll()
    for button in p.page.get_by_role("button").all():
        if button.is_visible():
            box = button.bounding_box()
            assert box["height"] >= 44 and box["width"] >= 44, (button.inner_text(), box)
    p.screenshot("processing-phone.png")
    assert p.errors == []


def test_a_wrong_token_brings_the_login_back(processing, page_of):
    p = page_of()
    p.sign_in(processing["url"], token="not-the-token")
    sync_api.expect(p.page.locator("#login-error")).to_contain_text("refused")
    assert p.page.locator("#processing-view").is_hidden()
    assert p.page.evaluate("localStorage.getItem('skylapse.token')") is None
