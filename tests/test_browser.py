"""The browser client in a real headless Chromium (Debian's), driven by Playwright.

The fake microphone plays a generated espeak-ng wav; frames are read back from the <video>
element through a canvas, so what is checked is what a person would see.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.images import png_bytes
from tests.support.live_server import LiveServer
from tests.support.media import speech, write_wav

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="Debian chromium is not installed (make test installs it)")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
# As root, with no network: sandbox off, and nothing that phones home.
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             "--autoplay-policy=no-user-gesture-required"]
# Samples the <video> every ``step`` ms for ``ms`` ms in the page itself and returns the mean
# absolute change of the mouth region between consecutive samples (cheap to send back).
MOUTH_JS = """([ms, step]) => new Promise((resolve) => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas'); c.width = 512; c.height = 512;
  const g = c.getContext('2d', { willReadFrequently: true });
  let prev = null; const out = []; const t0 = performance.now();
  const timer = setInterval(() => {
    if (v.videoWidth) {
      g.drawImage(v, 0, 0, 512, 512);
      const d = g.getImageData(190, 290, 130, 90).data;
      if (prev) {
        let s = 0;
        for (let i = 0; i < d.length; i += 4) {
          s += Math.abs(d[i] - prev[i]) + Math.abs(d[i + 1] - prev[i + 1]) +
               Math.abs(d[i + 2] - prev[i + 2]);
        }
        out.push(s / (3 * d.length / 4));
      }
      prev = d;
    }
    if (performance.now() - t0 > ms) { clearInterval(timer); resolve(out); }
  }, step);
})"""


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of silence, then a sentence, then silence: what the fake microphone loops."""
    sentence = speech("Hello there! Peter bought a big bottle of milk today.")
    silence = np.zeros(32000, np.float32)
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav",
                     np.concatenate([silence, sentence, silence]), rate=16000)


@pytest.fixture(scope="module")
def browser(mic_wav: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=[*BASE_ARGS, f"--use-file-for-fake-audio-capture={mic_wav}"])
        yield b
        b.close()


class Page:
    """A page plus the console errors it produced."""

    def __init__(self, browser: Any, url: str) -> None:
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def mouth_series(self, seconds: float, step: float = 0.1) -> np.ndarray:
        """Mean absolute change of the mouth region between samples ``step`` apart."""
        return np.array(self.page.evaluate(MOUTH_JS, [seconds * 1000, step * 1000]),
                        np.float32)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self) -> None:
        self.page.close()


def test_call_mode_shows_a_talking_avatar(browser: Any, live_server: LiveServer) -> None:
    p = Page(browser, live_server.url)
    p.page.wait_for_selector("#avatars button")
    p.page.click("#start-call")
    p.page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=20000)
    assert p.page.evaluate("document.getElementById('video').videoWidth") == 512
    assert p.page.evaluate("document.getElementById('video').videoHeight") == 512
    activity = p.mouth_series(7.0)  # the fake mic loops 2 s silence / speech / 2 s silence
    p.shot("call-mode")
    stats = p.page.evaluate("window.vivifyStats")
    assert activity.max() > 4.0, activity
    assert np.percentile(activity, 20) < 0.5 * activity.max()  # still in the silences
    # frames arrive (how many per second a machine delivers is make bench: bench/browser.py)
    assert stats["width"] == 512 and stats["fps"] > 0
    assert p.page.text_content("#state") in ("Speaking…", "Connected.", "Finished speaking.")
    p.page.click("#stop")
    p.page.wait_for_function("document.getElementById('start-call').disabled === false")
    assert p.errors == []
    p.close()


def test_presenter_with_a_viewer_and_interrupt(browser: Any, live_server: LiveServer) -> None:
    presenter = Page(browser, live_server.url)
    presenter.page.click("#tab-present")
    presenter.page.click("#start-present")
    presenter.page.wait_for_function(
        "document.getElementById('viewer-link').value.includes('watch.html')", timeout=20000)
    link = presenter.page.input_value("#viewer-link")
    viewer = Page(browser, link)
    viewer.page.wait_for_function("document.getElementById('video').videoWidth > 0",
                                  timeout=20000)
    presenter.page.fill("#say", "This is a long announcement from the presenter. " * 4)
    presenter.page.click("#speak")
    presenter.page.wait_for_function(  # the speech reached the face (playback_started)
        "document.getElementById('state').textContent === 'Speaking…'", timeout=10000)
    talking = viewer.mouth_series(2.0)
    viewer.shot("viewer-page")
    presenter.shot("presenter-mode")
    presenter.page.click("#interrupt")
    presenter.page.wait_for_function(
        "document.getElementById('state').textContent.startsWith('Interrupted')", timeout=5000)
    viewer.page.wait_for_timeout(400)  # the frames still in flight reach the viewer
    after = viewer.mouth_series(2.0)
    assert talking.max() > 4.0, talking
    assert after.mean() < 0.5 * talking.mean(), (talking.mean(), after.mean())
    assert viewer.errors == [] and presenter.errors == []
    viewer.close()
    presenter.page.click("#stop-present")
    presenter.close()


def test_upload_without_a_face_shows_the_error(browser: Any, live_server: LiveServer,
                                               tmp_path: Path) -> None:
    p = Page(browser, live_server.url)
    gradient = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (300, 1, 3))
    image = tmp_path / "landscape.png"
    image.write_bytes(png_bytes(gradient))
    p.page.check("#consent")
    p.page.set_input_files("#upload", str(image))
    p.page.wait_for_selector("#avatar-error:not([hidden])", timeout=20000)
    assert "no face" in (p.page.text_content("#avatar-error") or "").lower()
    p.shot("upload-error")
    p.close()


def box_scale(p: Page) -> float:
    box = p.page.locator("#place-img").bounding_box()
    assert box is not None
    return float(box["width"]) / 400


def test_a_face_the_detector_misses_can_be_placed_by_hand(browser: Any, live_server: LiveServer,
                                                          tmp_path: Path) -> None:
    """No face found → the portrait is shown, five clicks place the face, and the upload
    goes through with them (the server fits its reference mesh to the points)."""
    p = Page(browser, live_server.url)
    canvas = np.full((400, 400, 3), 200, np.uint8)  # a blank "drawing": nothing to detect
    image = tmp_path / "blank.png"
    image.write_bytes(png_bytes(canvas))
    before = p.page.locator("#avatars button").count()
    p.page.check("#consent")
    p.page.set_input_files("#upload", str(image))
    p.page.wait_for_selector("#place:not([hidden])", timeout=20000)
    assert "1 of 5" in (p.page.text_content("#place-prompt") or "")
    clicks = [(160, 170), (240, 170), (200, 215), (168, 260), (232, 260)]  # image pixels
    for i, (x, y) in enumerate(clicks):
        if i == 4:
            p.page.locator("#place").scroll_into_view_if_needed()
            p.shot("place-face")
        p.page.locator("#place-img").click(position={"x": x * box_scale(p), "y": y * box_scale(p)})
    p.page.wait_for_function(f"document.querySelectorAll('#avatars button').length > {before}",
                             timeout=30000)
    assert "placed by hand" in (p.page.text_content("#state") or "")
    assert p.page.is_hidden("#place")
    assert all("422" in e for e in p.errors), p.errors  # only the first upload's no_face
    p.close()


def test_phone_sized_screen_and_keyboard(browser: Any, live_server: LiveServer) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(live_server.url)
    page.wait_for_selector("#avatars button")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no sideways scrolling
    page.keyboard.press("Tab")
    focused = [page.evaluate("document.activeElement.id || document.activeElement.tagName")]
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || "
                                     "document.activeElement.tagName"))
    assert "start-call" in focused or "drop" in focused
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    page.close()


def test_presenter_audio_file_drives_the_broadcast(browser: Any, live_server: LiveServer,
                                                    mic_wav: Path) -> None:
    p = Page(browser, live_server.url)
    p.page.click("#tab-present")
    p.page.click("#start-present")
    p.page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=20000)
    p.page.set_input_files("#audio-file", str(mic_wav))
    p.page.wait_for_function(
        "document.getElementById('state').textContent === 'Speaking…'", timeout=10000)
    assert p.mouth_series(2.5).max() > 4.0
    p.page.click("#stop-present")
    assert p.errors == []
    p.close()


def test_a_full_server_is_explained(browser: Any, live_server: LiveServer) -> None:
    import httpx

    with httpx.Client(base_url=live_server.url) as c:
        ids = []
        while len(live_server.manager.sessions) < live_server.manager.capacity:
            ids.append(c.post("/v1/sessions", json={"mode": "broadcast"}).json()["id"])
        p = Page(browser, live_server.url)
        p.page.click("#start-call")
        p.page.wait_for_function(
            "document.getElementById('state').textContent.includes('server is full')",
            timeout=10000)
        assert p.page.get_attribute("#state", "class") == "state bad"
        p.shot("server-full")
        p.close()
        for sid in ids:
            c.delete(f"/v1/sessions/{sid}")
