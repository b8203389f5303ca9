"""The batched engine behind the websocket server, and loaded from a real train-lm run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.engine import DuplexEngine, load_engine
from e2e_voice.lm.generate import GREEDY
from e2e_voice.serve.client import chat
from tests.helpers import espeak_speech
from tests.serve_helpers import serving
from tests.test_engine import _models

pytestmark = pytest.mark.slow


def test_two_conversations_through_the_engine_equal_separate_runs() -> None:
    codec, lm = _models()
    engine = DuplexEngine(codec, lm, text_piece=lambda i: f"<{i}>", max_conversations=2, sampling=GREEDY)
    a = espeak_speech("First caller, speaking now.")[: 12 * FRAME_SIZE]
    b = espeak_speech("Second caller says hello.")[: 10 * FRAME_SIZE]

    async def run() -> tuple[list, list]:
        async with serving(engine.open) as (url, server, _):
            ws = url.replace("http", "ws") + "/api/chat"
            solo = [await chat(ws, x, realtime=False, tail_seconds=0.3) for x in (a, b)]
            both = await asyncio.gather(
                chat(ws, a, realtime=True, tail_seconds=0.3), chat(ws, b, realtime=True, tail_seconds=0.3)
            )
            assert not server.live
        return solo, list(both)

    solo, both = asyncio.run(run())
    assert engine.stats.joined == 4 and engine.stats.left == 4  # every conversation gave its slot back
    for s, t in zip(solo, both):
        assert not s.errors and not t.errors
        n = min(len(s.audio), len(t.audio))
        assert n >= 8 * FRAME_SIZE
        np.testing.assert_allclose(s.audio[:n], t.audio[:n], atol=1e-4)
        ts, tt = [x for _, x in s.texts], [x for _, x in t.texts]
        k = min(len(ts), len(tt))  # a run may step a few more tail frames before the client closes
        assert k > 0 and ts[:k] == tt[:k]


def test_load_engine_from_a_train_lm_run(tmp_path: Path) -> None:
    from e2e_voice.codec.codec import build_codec, save_codec
    from e2e_voice.codec.mimi import randomize_codebooks

    torch.manual_seed(0)
    codec = build_codec(
        num_codebooks=4,
        n_filters=16,
        transformer_layers=1,
        quantizer_levels=4,
        codebook_size=256,
        dimension=128,
        transformer_ff=512,
        quantizer_dimension=64,
    )
    randomize_codebooks(codec.model)
    codec_file = save_codec(codec, tmp_path / "codec.safetensors")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "e2e_voice.cli",
        "train-lm",
        f"out_dir={run}",
        f"codec.checkpoint={codec_file}",
        f"lm_data.streams={tmp_path / 'streams' / 'streams.pt'}",
        "lm_data.smoke_conversations=3",
        "train.steps=2",
        "train.save_every=2",
        "lm_data.seq_len=16",
        "lm.text_card=300",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "tokenizer.model").is_file()

    engine = load_engine(run, max_conversations=1)
    assert engine.text_piece is not None  # the run's tokenizer streams the inner monologue as text
    slot = engine.open()
    speech = espeak_speech("Hello, can you hear me?")
    frames = [speech[i : i + FRAME_SIZE] for i in range(0, len(speech) - FRAME_SIZE + 1, FRAME_SIZE)]
    outs = [slot.step(f) for f in frames]
    engine.shutdown()
    assert all(o.audio.shape == (FRAME_SIZE,) for o in outs)
    assert any(np.abs(o.audio).max() > 0 for o in outs[2:])
    assert engine.stats.ticks == len(frames) and engine.stats.real_time_factor > 0
    with pytest.raises(FileNotFoundError, match="train-lm"):
        load_engine(tmp_path / "nowhere")
    assert SAMPLE_RATE == 24_000

    # The shippable export: same weights (fp32 export), codec found relative to the export, fp16 smaller.
    for dtype in ("float32", "float16"):
        out = tmp_path / f"export-{dtype}"
        cmd = [sys.executable, "-m", "e2e_voice.cli", "export", "lm", str(run), str(out), "--dtype", dtype]
        proc = subprocess.run([*cmd, "--codec", str(codec_file)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        exported = load_engine(out, max_conversations=1)
        ref, got = engine.lm.state_dict(), exported.lm.state_dict()
        assert ref.keys() == got.keys()
        for k in ref:
            tol = 0 if dtype == "float32" else 1e-3 * (1 + ref[k].abs().max().item())
            assert (ref[k].float() - got[k].float()).abs().max().item() <= tol, k
        assert exported.text_piece is not None
        exported.shutdown()
    fp32 = (tmp_path / "export-float32" / "model.safetensors").stat().st_size
    assert (tmp_path / "export-float16" / "model.safetensors").stat().st_size < 0.6 * fp32
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2e_voice.cli",
            "export",
            "lm",
            str(tmp_path / "nowhere"),
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "train-lm" in bad.stderr


def test_engine_streams_text_pieces_from_a_sentencepiece_tokenizer(tmp_path: Path) -> None:
    from e2e_voice.lm.tokenizer import SentencePieceTokenizer, train_sentencepiece

    path = train_sentencepiece(
        ["hello there general kenobi", "the weather is nice today"] * 20,
        tmp_path / "tok.model",
        vocab_size=40,
    )
    tok = SentencePieceTokenizer(path)
    ids = tok.encode_word("hello")
    assert "".join(tok.id_to_piece(i) for i in ids) == " hello"
    # The LM's text vocabulary can be larger than the tokenizer's: such ids carry no text.
    assert tok.id_to_piece(tok.vocab_size + 5) == ""
