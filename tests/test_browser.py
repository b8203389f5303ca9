"""The browser page end to end in headless Chromium, with a fake microphone fed from a wav file."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.audio.io import save_audio
from e2e_voice.serve.loopback import LoopbackSystem
from tests.helpers import espeak_speech
from tests.serve_helpers import serving_in_thread

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and not os.environ.get("CI"):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (`make setup` as root installs them)",
        allow_module_level=True,
    )


def _driver(wav: Path, shots: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={shots / 'profile'}",
        "--window-size=900,800",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER or "chromedriver"), options=opts)


def test_page_talks_to_the_server(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    speech = espeak_speech("Hello there. This is a test of the microphone path, one two three.")
    wav = save_audio(tmp_path / "mic.wav", np.concatenate([speech, np.zeros(24_000, np.float32)]), 24_000)
    with serving_in_thread(lambda: LoopbackSystem(delay_frames=3, text_every=5)) as url:
        driver = _driver(wav, tmp_path)
        try:
            driver.get(url + "/")
            driver.find_element(By.ID, "start").click()
            stats: dict = {}
            deadline = time.time() + 30
            while time.time() < deadline:
                stats = driver.execute_script("return window.e2eStats")
                if stats["samplesReceived"] > 24_000 and stats["texts"] >= 3:
                    break
                time.sleep(0.25)
            driver.save_screenshot(str(tmp_path / "page.png"))
            transcript = driver.find_element(By.ID, "transcript").text
            errors = driver.find_element(By.ID, "errors").text
        finally:
            driver.quit()
    assert stats["handshake"], stats
    assert not stats["errors"] and not errors, (stats, errors)
    assert stats["samplesSent"] > 24_000, stats
    assert stats["samplesReceived"] > 24_000, stats  # audio came back through Opus, Ogg and WebCodecs
    assert stats["texts"] >= 3 and transcript.strip().startswith("5"), transcript
