"""`e2e-voice serve` as a user runs it: a real process, a real client, watermarked replies, Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.safety.watermark import PerthWatermarker
from e2e_voice.serve.client import chat
from tests.helpers import espeak_speech

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def test_serve_loopback_watermarked(tmp_path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "e2e_voice.cli",
            "serve",
            "system=loopback",
            f"serve.port={port}",
            f"hydra.run.dir={tmp_path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        speech = espeak_speech("Testing the watermark on the server path, one two three four five six.")
        result = asyncio.run(chat(f"ws://127.0.0.1:{port}/api/chat", speech, realtime=False, timeout=120))
        assert not result.errors and len(result.audio) >= len(speech)
        wm = PerthWatermarker()
        assert wm.detect(result.audio, SAMPLE_RATE).present  # the echo came back marked
        assert not wm.detect(speech, SAMPLE_RATE).present
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, -signal.SIGINT, 130), proc.returncode


def test_serve_refuses_bad_config(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2e_voice.cli",
            "serve",
            "serve.max_conversations=0",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "serve.max_conversations must be >= 1" in proc.stderr
