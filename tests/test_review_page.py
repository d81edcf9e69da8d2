"""The review page (GET /) in a real headless browser: Debian's chromium and
chromedriver driven by Selenium, against a real server process.

Screenshots go to $SIMSEARCH_ARTIFACTS, or else to pytest's temporary directory.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from audio_tools import DATA, excerpt, load_clip, resample, tone_sequence, write_audio
from server_tools import READ_KEY, running_server
from test_api import UPLOAD_SR

pytestmark = pytest.mark.slow

SPEED = 1.1
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture(scope="module")
def server(catalog_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("review")
    shutil.copytree(catalog_dir, work / "index")
    with running_server(work / "index", work / "server.log", "--max-upload-mb", 4, "--media-root", DATA) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):  # ./dev installs both; a suite without them must not pass
        pytest.fail("the review page is tested in Debian's chromium: apt-get install chromium chromium-driver "
                    "(./dev test does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--window-size=1200,760"):
        opts.add_argument(arg)
    # A driver path given: Selenium Manager never runs (it would try to download one).
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    where = os.environ.get("SIMSEARCH_ARTIFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(browser, server):
    browser.get(server.url + "/")
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def _wait(browser, condition, timeout=30):
    return WebDriverWait(browser, timeout).until(condition)


def _shown_error(browser):
    """The page's error box, once it shows."""
    return _wait(browser, lambda b: b.find_element(By.ID, "error").is_displayed() and b.find_element(By.ID, "error"))


def _text(node, css):
    return node.find_element(By.CSS_SELECTOR, css).text


def _media_loaded(browser, audio) -> bool:
    """The browser has decoded the element's audio far enough to know its length."""
    return browser.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0;", audio)


def _fetch_head(browser, url) -> dict:
    """Fetch `url` inside the page: its size and first 12 bytes."""
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then((r) => r.arrayBuffer()).then((buf) =>
            done({size: buf.byteLength, head: Array.from(new Uint8Array(buf.slice(0, 12)))}));""", url)


def _screenshot(browser, path: Path) -> None:
    """The page down to the end of its content, however long."""
    width, height = browser.execute_script(
        "return [document.documentElement.clientWidth, Math.ceil(document.querySelector('main')"
        ".getBoundingClientRect().bottom + window.scrollY)];")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def _sped_up_copy(path: Path) -> Path:
    """12 s of a catalog track played 10% faster (resampled: speed and pitch change together)."""
    y, sr = load_clip("flare_forest_theme")
    return write_audio(path, resample(excerpt(y, sr, 4.0, 12.0), int(round(sr * SPEED)), UPLOAD_SR),
                       UPLOAD_SR, "flac")


def test_review_a_sped_up_copy(browser, server, artifacts, tmp_path):
    upload = _sped_up_copy(tmp_path / "forest x1.1.flac")
    _open(browser, server)
    browser.find_element(By.ID, "file-input").send_keys(str(upload))
    _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "article.match svg.alignment"))
    card = browser.find_elements(By.CSS_SELECTOR, "article.match")[0]
    assert _text(card, ".track-id") == "flare_forest_theme"
    assert _text(card, ".kind") == "modified"
    assert float(_text(card, ".speed").lstrip("×")) == pytest.approx(SPEED, abs=0.01)
    assert float(_text(card, ".pitch").split()[0].replace("−", "-")) == pytest.approx(1.65, abs=0.25)

    # The alignment is drawn from the very hits the API returns for this upload.
    api = requests.post(server.url + "/v1/query", files={"file": (upload.name, upload.read_bytes())},
                        data={"hits": "true"}, timeout=60).json()["matches"][0]
    svg = card.find_element(By.CSS_SELECTOR, "svg.alignment")
    dots = svg.find_elements(By.CSS_SELECTOR, "circle.hit")
    assert int(svg.get_attribute("data-hits")) == len(dots) == len(api["hits"]) >= api["score"] > 0
    assert len(svg.find_elements(By.CSS_SELECTOR, "line.fit")) == 1

    # Both segments are ready to play: the upload at the match's start, the
    # catalog excerpt as a WAV the browser decoded.
    catalog = card.find_element(By.CSS_SELECTOR, "audio.catalog-audio")
    query = card.find_element(By.CSS_SELECTOR, "audio.query-audio")
    _wait(browser, lambda b: _media_loaded(b, catalog) and _media_loaded(b, query))
    src = catalog.get_attribute("src")
    assert src.startswith("blob:")
    wav = _fetch_head(browser, src)
    assert bytes(wav["head"][:4]) == b"RIFF" and bytes(wav["head"][8:12]) == b"WAVE" and wav["size"] > 44
    assert browser.execute_script("return arguments[0].duration;", catalog) == \
        pytest.approx(api["ref_end"] - api["ref_start"], abs=0.05)
    assert browser.execute_script("return arguments[0].currentTime;", query) == \
        pytest.approx(api["query_start"], abs=0.05)
    _screenshot(browser, artifacts / "review-page.png")


def test_review_a_bad_file(browser, server, artifacts, tmp_path):
    bad = tmp_path / "song.mp3"
    bad.write_text("this is a shopping list, not a song\n" * 40)
    want = requests.post(server.url + "/v1/query", files={"file": (bad.name, bad.read_bytes())}, timeout=60).json()
    _open(browser, server)
    browser.find_element(By.ID, "file-input").send_keys(str(bad))
    error = _shown_error(browser)
    assert _text(error, ".message") == want["message"]
    assert "song.mp3 could not be matched" in error.text and "HTTP 415, bad_audio" in error.text
    assert error.get_attribute("data-code") == "bad_audio"
    assert browser.find_elements(By.CSS_SELECTOR, "article.match") == []
    _screenshot(browser, artifacts / "review-error.png")


def test_upload_over_the_limit(browser, server, tmp_path):
    """The page's uploads meet the API's own limits (this server takes 4 MB)."""
    big = tmp_path / "long mix.wav"
    big.write_bytes(b"\0" * (5 * 1024 * 1024))
    _open(browser, server)
    browser.find_element(By.ID, "file-input").send_keys(str(big))
    error = _shown_error(browser)
    assert _text(error, ".message") == f"upload is larger than the limit of {4 * 1024 * 1024} bytes"
    assert error.get_attribute("data-code") == "too_large" and "HTTP 413" in error.text


_DROP = """
    const [name, b64] = arguments;
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], name));
    document.getElementById("drop-zone").dispatchEvent(
        new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));"""


def test_drop_a_file(browser, server, tmp_path):
    """A file dropped on the page (a drop event carrying it, as the browser fires one)."""
    y, sr = load_clip("flare_town_theme")
    copy = write_audio(tmp_path / "town.flac", resample(excerpt(y, sr, 6.0, 8.0), sr, UPLOAD_SR), UPLOAD_SR, "flac")
    _open(browser, server)
    browser.execute_script(_DROP, copy.name, base64.b64encode(copy.read_bytes()).decode())
    card = _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.match"))
    assert _text(card, ".track-id") == "flare_town_theme" and _text(card, ".kind") == "duplicate"
    assert _text(browser, "#status").startswith("town.flac: 8.00 s, 1 match")


def _look_up(browser, track_id):
    field = browser.find_element(By.ID, "track-id")
    field.clear()
    field.send_keys(track_id)
    browser.find_element(By.CSS_SELECTOR, "#track-form button").click()


def test_look_up_a_catalog_track_and_play_it(browser, server):
    _open(browser, server)
    _look_up(browser, "flare_cave_theme")
    card = _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.track"))
    assert _text(card, ".track-id") == "flare_cave_theme"
    assert _text(card, ".duration") == "25.00 s"
    catalog = card.find_element(By.CSS_SELECTOR, "audio.catalog-audio")
    _wait(browser, lambda b: _media_loaded(b, catalog))
    assert browser.execute_script("return arguments[0].duration;", catalog) == pytest.approx(25.0, abs=0.05)
    # Another minute, from a later start.
    start = card.find_element(By.CSS_SELECTOR, "input.from")
    start.clear()
    start.send_keys("20")
    old_src = catalog.get_attribute("src")
    card.find_element(By.CSS_SELECTOR, "button.load").click()
    _wait(browser, lambda b: catalog.get_attribute("src") != old_src and _media_loaded(b, catalog))
    assert browser.execute_script("return arguments[0].duration;", catalog) == pytest.approx(5.0, abs=0.05)


def test_track_without_catalog_audio(browser, server, tmp_path):
    melody = write_audio(tmp_path / "m.flac", tone_sequence([330.0, 440.0, 495.0, 660.0] * 3, 0.3, UPLOAD_SR),
                         UPLOAD_SR, "flac")
    track_id = "http/added melody"
    resp = server.post("/v1/tracks", files={"file": ("m.flac", melody.read_bytes())}, data={"track_id": track_id})
    assert resp.status_code == 201, resp.text
    try:
        _open(browser, server)
        _look_up(browser, track_id)
        card = _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.track"))
        note = card.find_element(By.CSS_SELECTOR, ".catalog-audio-box .note")
        _wait(browser, lambda b: note.text == "catalog audio not available for this track")
        assert not card.find_element(By.CSS_SELECTOR, "audio.catalog-audio").is_displayed()
    finally:
        server.delete("/v1/tracks/http%2Fadded%20melody")


def test_unknown_track_id(browser, server):
    _open(browser, server)
    _look_up(browser, "no/such track")
    error = _shown_error(browser)
    assert _text(error, ".message") == "no track 'no/such track' in the index"
    assert error.get_attribute("data-code") == "unknown_track"


_RECORD_AUTH = """
    window.sentAuth = [];
    const realFetch = window.fetch;
    window.fetch = (url, opts) => {
        window.sentAuth.push((opts && opts.headers && opts.headers.Authorization) || null);
        return realFetch(url, opts);
    };"""


def test_api_key_goes_with_every_request_and_stays_for_the_session(browser, server):
    _open(browser, server)
    browser.find_element(By.ID, "api-key").send_keys("s3cret key")
    browser.execute_script(_RECORD_AUTH)
    _look_up(browser, "flare_town_theme")
    catalog = _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.track audio.catalog-audio"))
    _wait(browser, lambda b: _media_loaded(b, catalog))
    sent = browser.execute_script("return window.sentAuth;")
    assert len(sent) == 2 and set(sent) == {"Bearer s3cret key"}  # the record and the audio
    browser.refresh()
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    key = browser.find_element(By.ID, "api-key")
    assert key.get_attribute("value") == "s3cret key"
    key.clear()
    assert browser.execute_script("return sessionStorage.getItem('simsearch.apiKey');") is None


def test_keys_on_a_server_that_wants_them_for_reads(browser, catalog_dir, tmp_path):
    """A real keyed server (--keys-for-reads): without a key and with a wrong one
    the page shows the server's 401 and asks to check the key; with a read key
    the track and its audio come."""
    shutil.copytree(catalog_dir, tmp_path / "index")
    with running_server(tmp_path / "index", tmp_path / "server.log", "--keys-for-reads",
                        "--media-root", DATA) as srv:
        _open(browser, srv)
        key = browser.find_element(By.ID, "api-key")
        key.clear()
        for typed, code, message in (("", "missing_key", "this needs a read key: send 'Authorization: Bearer <key>'"),
                                     ("not-a-key-of-this-server", "invalid_key", "the API key is not valid")):
            key.clear()
            if typed:
                key.send_keys(typed)
            _look_up(browser, "flare_town_theme")
            error = _wait(browser, lambda b: _shown_error(b) if _text(_shown_error(b), ".message") == message
                          else False)
            assert f"HTTP 401, {code}" in error.text and "Check the API key" in error.text
        key.clear()
        key.send_keys(READ_KEY)
        _look_up(browser, "flare_town_theme")
        catalog = _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.track audio.catalog-audio"))
        _wait(browser, lambda b: _media_loaded(b, catalog))
        key.clear()


def test_page_is_self_contained(server):
    """Every resource the page loads comes from this server, and its policy forbids any other origin."""
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "http" not in csp
    for asset in ("", "static/review.js", "static/review.css"):
        resp = requests.get(f"{server.url}/{asset}", timeout=10)
        assert resp.status_code == 200
        # The SVG namespace is a name, not a request.
        assert re.findall(r"https?://[^\s\"')]+", resp.text.replace(SVG_NAMESPACE, "")) == [], asset
