"""eval.codec_probe: phase reconstructions, post-filters and the decoder hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_voice.codec import build_codec, randomize_codebooks
from e2e_voice.constants import SAMPLE_RATE
from eval import codec_probe
from eval.codec import Clip
from eval.codec_probe import Overlap, Variant, griffin_lim, parse_variant, probing, rtisi
from tests.helpers import SPECTRAL, TINY, espeak_speech

TINY_SPECTRAL = {**TINY, **SPECTRAL, "num_codebooks": 4}  # test_codec's tiny-spectral variant


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return espeak_speech("Where do the errors come from?", SAMPLE_RATE)


def _spectral_codec():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    codec = build_codec(**TINY_SPECTRAL)
    randomize_codebooks(codec.model, 0)
    decoder = codec.model.decoder
    last = decoder.net.model[-1].conv.conv  # the detail rows start at zero: give them values
    bands, bins = decoder.envelope.n_bands, decoder.envelope.expand.shape[0]
    with torch.no_grad():
        last.weight[bands : bands + bins].normal_(0, 0.05)
    return codec.eval()


def _convergence(ola: Overlap, signal: np.ndarray, mag: np.ndarray) -> float:
    """Spectral convergence: how far ``signal``'s magnitudes are from ``mag`` (0 = equal)."""
    return float(np.linalg.norm(np.abs(ola.analyse(signal, len(mag))) - mag) / np.linalg.norm(mag))


def test_parse_variant() -> None:
    assert parse_variant("own") == Variant("own")
    assert parse_variant("rtisi:3") == Variant("rtisi", 3.0)
    assert parse_variant("griffin-lim:32").name == "griffin-lim:32"
    assert parse_variant("envelope:0.5").name == "envelope:0.5"
    for bad, message in [
        ("phase", "unknown probe variant"),
        ("rtisi", "write it as rtisi:VALUE"),
        ("own:2", "write it as own"),
        ("detail:x", "is not a number"),
        ("griffin-lim:0", "whole number >= 1"),
        ("rtisi:1.5", "whole number >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_variant(bad)


def test_overlap_add_inverts_analysis_and_phase_retrieval_converges(speech: np.ndarray) -> None:
    ola = Overlap(960, 240)
    x = np.pad(speech[: 60 * 240].astype(np.float64), 720)  # zeros where fewer than 4 frames overlap
    spec = ola.analyse(x, 63)
    rebuilt = ola.overlap_add(ola.frames(spec))
    np.testing.assert_allclose(rebuilt, x, atol=1e-9)
    mag = np.abs(spec)
    rng = np.random.default_rng(0)
    noise_phase = rng.uniform(-np.pi, np.pi, mag.shape)
    random = _convergence(ola, ola.overlap_add(ola.frames(mag * np.exp(1j * noise_phase))), mag)
    gl = _convergence(ola, griffin_lim(ola, mag, noise_phase, 32), mag)
    causal = _convergence(ola, rtisi(ola, mag, 3), mag)
    assert gl < 0.6 * random and causal < 0.6 * random, (random, gl, causal)
    # From the true phase of a consistent spectrum, Griffin-Lim stays where it is.
    np.testing.assert_allclose(griffin_lim(ola, mag, np.angle(spec), 4), x, atol=1e-9)


def test_rtisi_is_causal(speech: np.ndarray) -> None:
    ola = Overlap(960, 240)
    mag = np.abs(ola.analyse(speech.astype(np.float64), 40))
    changed = mag.copy()
    changed[20:] = changed[20:][::-1] * 2  # a different future from frame 20 on
    a, b = rtisi(ola, mag, 2), rtisi(ola, changed, 2)
    np.testing.assert_array_equal(a[: 20 * 240], b[: 20 * 240])
    assert not np.allclose(a[20 * 240 : 21 * 240], b[20 * 240 : 21 * 240])


@torch.no_grad()
def test_probing_hooks_only_the_decoder_and_identities_hold(speech: np.ndarray) -> None:
    codec = _spectral_codec()
    x = torch.from_numpy(speech[: 4 * codec.frame_size])[None, None]
    codes = codec.encode(x)
    own = codec.decode(codes)
    for neutral in ("own", "detail:1", "envelope:0", "time:0"):
        with probing(codec, parse_variant(neutral)):
            torch.testing.assert_close(codec.decode(codes), own, atol=1e-6, rtol=1e-5)
    decoded = {}
    variants = ("random", "griffin-lim:2", "rtisi:1", "detail:2", "envelope:1", "time:1")
    for variant in (*variants, "original-phase", "original-magnitude"):
        with probing(codec, parse_variant(variant)):
            assert torch.equal(codec.encode(x), codes)  # the encoder is untouched
            decoded[variant] = codec.decode(codes)
        assert decoded[variant].shape == own.shape
        assert not torch.allclose(decoded[variant], own, atol=1e-4), variant
    torch.testing.assert_close(codec.decode(codes), own, atol=0, rtol=0)  # the hook is gone


def test_original_variants_need_the_encoded_clip() -> None:
    decoder = _spectral_codec().model.decoder
    with pytest.raises(ValueError, match="needs the encoded clip"):
        codec_probe.probe_decode(decoder, torch.zeros(1, 128, 10), Variant("original-phase"))


def test_probing_needs_a_spectral_codec_with_an_envelope() -> None:
    waveform = build_codec(
        num_codebooks=2, n_filters=16, transformer_layers=1, quantizer_levels=4, codebook_size=256
    )
    with pytest.raises(ValueError, match="needs a spectral codec"), probing(waveform, Variant("own")):
        pass
    torch.manual_seed(0)
    plain = build_codec(**{**TINY_SPECTRAL, "envelope_bands": 0})
    codes = plain.encode(torch.zeros(1, 1, plain.frame_size))
    with probing(plain, parse_variant("detail:2")), pytest.raises(ValueError, match="envelope head"):
        plain.decode(codes)


def test_run_probe_ranks_variants_against_own(tmp_path: Path, speech: np.ndarray) -> None:
    """The ranking pairs each variant with ``own`` on the same clips (a judge that reports the clip's loudness
    as words, so that variants differ)."""

    class Judge:
        def transcribe(self, audio: np.ndarray, sr: int) -> str:
            return "word " * int(10 * np.sqrt(np.mean(audio**2)) > 0.2)

    codec = _spectral_codec()
    clips = [
        Clip(f"c{i}", speech[i * 4000 : i * 4000 + 4 * codec.frame_size], "word", "assistant")
        for i in range(2)
    ]
    ranking = codec_probe.run_probe(codec, clips, [parse_variant("rtisi:1")], tmp_path, Judge(), plots=0)
    names = {r["name"] for r in ranking["groups"]["assistant"]}
    assert names == {"own", "rtisi:1"}
    assert (tmp_path / "own" / "codec_metrics.json").is_file()
    assert (tmp_path / "rtisi_1" / "codec_metrics.json").is_file()
    own = json.loads((tmp_path / "own" / "codec_metrics.json").read_text())
    assert own["machine"]["threads"] == torch.get_num_threads()  # each variant's RTFs carry their context
    assert "Real-time factors: Measured" in (tmp_path / "rtisi_1" / "codec_metrics.md").read_text()
    assert "rtisi:1" in (tmp_path / "rank.md").read_text()
    assert (tmp_path / "rank.png").stat().st_size > 0
