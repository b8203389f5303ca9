"""The committed checkpoints load and still do what their model cards measured (golden tests).

These catch a corrupted, truncated or accidentally replaced file, or a change in the code that reads
it: on the fixture's assistant speech a codec with random weights has a mel distance of 0.40 (1.37 at the
metric's default floor) and Whisper hears nothing in its output; the committed one measures 0.06 (0.15)
and is partly intelligible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from e2e_voice.audio.io import load_audio
from e2e_voice.codec import load_codec
from e2e_voice.codec.spectral import multiscale_mel_distance
from e2e_voice.constants import FRAME_SIZE, REPO_ROOT

CODEC = REPO_ROOT / "checkpoints/codec_cpu/codec.safetensors"
FIXTURE = REPO_ROOT / "tests/fixtures/dialogues/audio"


def _assistant_speech(seconds: float = 6.0) -> np.ndarray:
    path = sorted(Path(FIXTURE).glob("*.flac"))[0]
    audio = load_audio(path, mono=False)[0]
    start = int(np.argmax(np.abs(audio) > 0.01))  # skip the leading silence
    return audio[start : start + int(seconds * 24_000)].astype(np.float32)


@torch.no_grad()
def test_committed_codec_matches_its_model_card() -> None:
    codec = load_codec(CODEC)
    assert codec.num_codebooks == 8 and codec.cardinality == 1024 and codec.frame_rate == 12.5
    x = torch.from_numpy(_assistant_speech())[None, None]
    codes = codec.encode(x)
    assert codes.shape == (1, 8, x.shape[-1] // FRAME_SIZE + (x.shape[-1] % FRAME_SIZE > 0))
    assert len(torch.unique(codes[0, 0])) > 10  # the semantic level is not collapsed
    recon = codec.decode(codes)[..., : x.shape[-1]]
    # Both ranges: the audible one (floor 1e-3, ~60 dB down) is what the card's intelligibility follows;
    # the metric's default 1e-5 floor also catches a decoder that puts sound far below it (v8, trained
    # with its losses floored at 1e-3, measured 0.331 here; v10's and v9's floors sit at 1e-4).
    audible = float(multiscale_mel_distance(x, recon, 24_000, floor=1e-3))
    assert audible < 0.15, audible  # measured 0.058 (v10; v9 0.059, v8 0.060, v7 0.063); random 0.395
    full = float(multiscale_mel_distance(x, recon, 24_000))
    assert full < 0.3, full  # measured 0.147 (v10; v9 0.147, v8 0.331, v7 0.109); random 1.374
    assert torch.equal(codec.encode(x), codes)  # deterministic


@pytest.fixture(scope="module")
def round_trip() -> tuple[np.ndarray, np.ndarray]:
    """The fixture's assistant speech and the committed codec's whole-clip reconstruction of it."""
    codec = load_codec(CODEC)
    audio = _assistant_speech()
    with torch.no_grad():
        recon = codec.decode(codec.encode(torch.from_numpy(audio)[None, None]))[0, 0, : audio.size].numpy()
    return audio, recon


@pytest.fixture(scope="module")
def codec_judge() -> Any:
    """The codec tools' judge (``eval.codec.judge_factory``: float32 Whisper base), loaded once."""
    from eval.codec import judge_factory

    return judge_factory()()


def test_committed_codec_is_partly_intelligible(
    round_trip: tuple[np.ndarray, np.ndarray], codec_judge: Any
) -> None:
    """Whisper base reads most words of the reconstruction (v10: 22 % WER with the float32 judge, 2 of 9
    words; v9: 33 %; with the int8 judge used before, 22 % for v9, 11 % for v8, 22 % for v7, v6 and v5, 44 %
    for v3, against its transcript of the original; random weights: nothing heard, 100 %). The model card
    has the corpus-wide numbers."""
    from e2e_voice.stt.whisper import word_error_rate

    audio, recon = round_trip
    heard = codec_judge.transcribe(audio, 24_000)
    assert len(heard.split()) >= 5, heard
    wer = word_error_rate(heard, codec_judge.transcribe(recon, 24_000))
    assert wer < 0.7, wer


def test_the_codec_judge_reads_a_reconstruction_the_same_under_float_rounding(
    round_trip: tuple[np.ndarray, np.ndarray], codec_judge: Any
) -> None:
    """The codec tools' judge (``eval.codec.judge_factory``, float32 Whisper base) gives one transcript for a
    reconstruction and four copies moved by at most 5e-7 (what another torch thread count does to the
    decoder's output). The int8 judge used before gave 2 distinct transcripts for these 5 inputs, and
    changed 32 of the 40 held-out clips of the evaluation set under such a change."""
    recon = round_trip[1]
    rng = np.random.default_rng(0)
    inputs = [recon] + [recon + rng.uniform(-5e-7, 5e-7, recon.size).astype(np.float32) for _ in range(4)]
    heard = {codec_judge.transcribe(x, 24_000) for x in inputs}
    assert len(heard) == 1, heard


def test_codec_config_and_recipe_describe_the_committed_codec() -> None:
    """``codec=cpu`` loads the committed file (a stored architecture that clashes with the config is an
    error), and the committed recipe (``codec_cpu_deep_qd0_floor80``) builds that same architecture."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from e2e_voice.codec.codec import read_arch
    from e2e_voice.constants import CONFIG_DIR
    from tests.helpers import codec_recipe

    stored = read_arch(CODEC)
    assert stored is not None and stored["transformer_layers"] == 4  # v10 (as v9, v8, v7 and v6)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["codec=cpu"])
    assert instantiate(cfg.codec, _convert_="all").num_codebooks == 8
    recipe = codec_recipe("codec_cpu_deep_qd0_floor80")["codec"]
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in stored.items()}  # ratios are a tuple
    differ = {k: (recipe[k], v) for k, v in plain.items() if k in recipe and recipe[k] != v}
    assert not differ, differ


LM = REPO_ROOT / "checkpoints/lm_tiny"


@torch.no_grad()
def test_committed_lm_matches_its_model_card() -> None:
    """Teacher-forced loss of the exported tiny LM on a fixture conversation (not in its training data)
    against a randomly initialised twin: the trained model must be far better on every stream."""
    from e2e_voice.data.manifest import read_manifest
    from e2e_voice.lm.builders import build_from_config
    from e2e_voice.lm.export import load_export
    from e2e_voice.lm.loss import lm_loss
    from e2e_voice.lm.streams import build_streams
    from train.lm_data import conversation_from_entry

    loaded = load_export(LM)
    built = loaded.built
    assert built.n_q == 8 and loaded.codec_checkpoint == CODEC.resolve()
    entry = read_manifest(REPO_ROOT / "tests/fixtures/dialogues/manifest.jsonl").entries[0]
    conv = conversation_from_entry(entry)
    codes = build_streams(conv, load_codec(CODEC), built.tokenizer, built.n_q).codes[None, :, :128]
    trained = lm_loss(built.model(codes), codes, specials=built.specials)
    torch.manual_seed(0)
    fresh = build_from_config(loaded.config["lm"], tokenizer_path=LM / "tokenizer.model")
    untrained = lm_loss(fresh.model.eval()(codes), codes, specials=fresh.specials)
    for stream in ("text", "semantic", "acoustic"):
        assert float(getattr(trained, stream)) < 0.75 * float(getattr(untrained, stream)), stream
