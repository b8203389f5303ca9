"""``serve system=cascade`` with shared models: a new connection reuses the loaded STT/LLM/TTS/VAD, and
conversations on the shared models keep their own state (issue #6).

Real Whisper base and Silero VAD from the bundle, espeak-ng TTS and the local fake HTTP LLM (fast and
deterministic); loads are counted with a spy on the builder's stage loader, not a mock of the system.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from cascade_baseline import builders
from cascade_baseline.system import CascadeSystem
from e2e_voice.constants import CONFIG_DIR, SAMPLE_RATE
from e2e_voice.converse import ConversationResult, converse
from e2e_voice.serve.app import system_factory
from e2e_voice.system import DuplexSystem
from tests.cascade_fakes import ChatServer, serve_chat
from tests.helpers import espeak_speech
from tests.serve_helpers import serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ChatServer]:
    yield from serve_chat()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fresh process-wide model cache; returns the names of the stages (and ``vad``) loaded since."""
    monkeypatch.setattr(builders, "_SHARED", {})
    calls: list[str] = []
    stage, session = builders._stage, builders.load_session

    def spy_stage(cascade: Any, name: str) -> Any:
        calls.append(name)
        return stage(cascade, name)

    def spy_session(model_path: str | None = None) -> Any:
        calls.append("vad")
        return session(model_path)

    monkeypatch.setattr(builders, "_stage", spy_stage)
    monkeypatch.setattr(builders, "load_session", spy_session)
    return calls


def _factory(llm_server: ChatServer, *overrides: str) -> Callable[[], DuplexSystem]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "serve",
            overrides=[
                "system=cascade",
                "cascade/tts=espeak",
                "cascade/llm=openai",
                f"cascade.llm.base_url={llm_server.url}/v1",
                "cascade.warmup=false",
                *overrides,
            ],
        )
    return system_factory(cfg.system, watermark=False)


async def _handshakes(url: str, n: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.ws_connect(url.replace("http", "ws", 1) + "/api/chat") as ws:
                msg = await ws.receive(timeout=60)
                assert msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00", msg


@pytest.mark.parametrize(
    "share, loads_expected",
    [
        pytest.param(True, 1, id="shared"),
        pytest.param(False, 3, id="per-connection"),  # the check at start-up, then one load per connection
    ],
)
def test_connections_reuse_loaded_models(
    llm_server: ChatServer, loads: list[str], share: bool, loads_expected: int
) -> None:
    factory = _factory(llm_server, f"system.share_models={str(share).lower()}")

    async def run() -> None:
        async with serving(factory) as (url, server, _):
            await _handshakes(url, 2)
            assert server.metrics.conversations_total == 2

    asyncio.run(run())
    assert sorted(loads.count(n) for n in ("stt", "llm", "tts")) == [loads_expected] * 3, loads
    if share:
        assert loads.count("vad") == 1, loads


def _script(*parts: str | float) -> np.ndarray:
    return np.concatenate(
        [
            np.zeros(int(p * SAMPLE_RATE), np.float32) if isinstance(p, float) else espeak_speech(p)
            for p in parts
        ]
    )


def _user_turns(request: dict[str, Any]) -> list[str]:
    return [m["content"].lower() for m in request["messages"] if m["role"] == "user"]


def test_parallel_conversations_keep_their_own_state(llm_server: ChatServer, loads: list[str]) -> None:
    factory = _factory(llm_server, "system.realtime=false")  # offline clock: output depends on input only
    audio = {
        "france": _script(0.5, "What is the capital of France?", 7.0, "Is it a big city?", 7.0),
        "japan": _script(0.3, "What is the capital of Japan?", 7.0, "Tell me about it.", 7.0),
    }
    solo, solo_history = {}, {}
    for key, a in audio.items():
        system = factory()
        assert isinstance(system, CascadeSystem)
        solo[key] = converse(system, a, progress=False)
        solo_history[key] = system.history
        system.close()
    systems = {k: factory() for k in audio}
    assert isinstance(systems["france"], CascadeSystem) and isinstance(systems["japan"], CascadeSystem)
    assert systems["france"].stt is systems["japan"].stt and systems["france"].vad is not systems["japan"].vad
    together: dict[str, ConversationResult] = {}
    llm_server.requests.clear()

    def talk(key: str) -> None:
        together[key] = converse(systems[key], audio[key], progress=False)

    threads = [threading.Thread(target=talk, args=(k,)) for k in audio]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(together) == set(audio)
    for key, system in systems.items():
        assert len(system.turns) == 2 and len(system.history) == 4, system.history
        assert system.history == solo_history[key]  # nothing of the other conversation leaked in
        np.testing.assert_array_equal(together[key].audio, solo[key].audio)
        system.close()
    # Every LLM request carries one conversation's history only.
    own = {k: [m["content"].lower() for m in h if m["role"] == "user"] for k, h in solo_history.items()}
    assert own["france"] != own["japan"]
    assert len(llm_server.requests) == 4
    for request in llm_server.requests:
        turns = _user_turns(request)
        assert any(turns == texts[: len(turns)] for texts in own.values()), (turns, own)
    assert sorted(loads) == ["llm", "stt", "tts", "vad"]


def test_new_conversation_starts_clean(llm_server: ChatServer, loads: list[str]) -> None:
    factory = _factory(llm_server, "system.realtime=false")
    first = factory()
    assert isinstance(first, CascadeSystem)
    converse(first, _script(0.5, "What is the capital of France?", 6.0), progress=False)
    assert first.history and first.turns
    first.reset()  # the RESTART control message
    assert first.history == [] and first.turns == []
    first.close()
    second = factory()
    assert isinstance(second, CascadeSystem)
    assert second.history == [] and second.turns == [] and not second.busy()
    llm_server.requests.clear()
    converse(second, _script(0.5, "What is the capital of Japan?", 6.0), progress=False)
    assert len(llm_server.requests) == 1 and len(_user_turns(llm_server.requests[0])) == 1
    second.close()
