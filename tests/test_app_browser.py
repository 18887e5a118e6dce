"""The web page end to end in a real browser: `python -m metatalk_jax.app` on loopback with a
talker bundle (random-initialised models: the page's plumbing is under test, not the face),
driven by Debian's headless chromium through Selenium. Checked: the page loads; a typed
sentence gives a playable video as long as the sentence's speech; a bad upload and a too-long
recording show their one-line messages on the page and the server keeps serving; the app
listens on 127.0.0.1 only. Slow (~2 minutes: the app's start, one job, the browser).

Needs chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run installs
them and sets METATALK_REQUIRE_BROWSER=1, which turns their absence into a failure).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from metatalk_jax.media.audio_files import write_wav
from tests.support.infer_fixtures import REPO, random_a2e, random_renderer

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        message = "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("METATALK_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on port."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if int(hex_port, 16) == port and fields[3] == "0A":        # LISTEN
                    out.add(address)
    return out


@pytest.fixture(scope="module")
def app(carphone_subject, tmp_path_factory):
    from metatalk_jax.inference.talker_bundle import export_talker
    root = tmp_path_factory.mktemp("app")
    subject = str(carphone_subject[0])
    bundle = str(root / "me.talker")
    export_talker(subject, random_a2e(str(root / "a2e"), subject, 10),
                  random_renderer(str(root / "renderer"), subject, resolution=32), bundle)
    port = _free_port()
    log = open(root / "app.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "metatalk_jax.app", "--talker", bundle,
                               "--port", str(port), "--max-seconds", "4",
                               "--max-upload-mb", "2"], cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError((root / "app.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    yield {"url": f"http://127.0.0.1:{port}/", "port": port, "root": root}
    server.terminate()
    server.wait(30)


def _toasts(driver) -> str:
    from selenium.webdriver.common.by import By
    return " | ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "[class*=toast]"))


def test_the_page_says_a_sentence_and_reports_bad_audio(app, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from metatalk_jax.media.speech import synthesize
    assert _listening_addresses(app["port"]) == {"0100007F"}     # 127.0.0.1, nothing else
    driver = _browser()
    try:
        driver.get(app["url"])
        box = WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#sentence textarea"))
        sentence = "Bob made a map."
        box.send_keys(sentence)
        driver.find_element(By.CSS_SELECTOR, "#say").click()
        duration = WebDriverWait(driver, 300).until(lambda d: d.execute_script(
            "const v = document.querySelector('#video video');"
            "return v && v.readyState >= 1 ? v.duration : null;"))
        spoken = synthesize(sentence).duration_s
        assert abs(duration - spoken) < 0.1, (duration, spoken)      # whole frames at 25 fps
        assert driver.execute_script(
            "return document.querySelector('#preview video') !== null")

        # A file that is not audio, then a recording longer than --max-seconds: one message
        # each on the page, and the page keeps working.
        garbage = tmp_path / "garbage.wav"
        garbage.write_bytes(b"RIFF not really a wave file" * 10)
        t = np.arange(6 * 16000) / 16000
        long = write_wav(str(tmp_path / "long.wav"),
                         (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
        for upload, words in ((str(garbage), "garbage.wav: not an audio or video file"),
                              (long, "at most 4 s")):
            box.clear()
            clear = driver.find_elements(By.CSS_SELECTOR, "#audio button[aria-label='Clear']")
            if clear:
                clear[0].click()
            driver.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(upload)
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(
                By.CSS_SELECTOR, "#audio audio, #audio [class*=waveform], #audio button"))
            time.sleep(1)
            driver.find_element(By.CSS_SELECTOR, "#say").click()
            WebDriverWait(driver, 120).until(lambda d: words in _toasts(d))
            assert "/tmp/gradio" not in _toasts(driver)    # the upload's name, not a server path
        assert app["url"] and _listening_addresses(app["port"]) == {"0100007F"}
    finally:
        driver.save_screenshot(str(app["root"] / "last.png"))
        driver.quit()
