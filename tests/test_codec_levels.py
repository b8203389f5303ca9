"""eval/codec_levels.py: where a codec's mel error lies by loudness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_voice.codec import build_codec, randomize_codebooks, save_codec
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.tts.engines import VoiceSpec
from eval import codec_levels, codec_set
from tests.helpers import espeak_speech


def test_bands_split_bins_and_see_a_uniform_gain() -> None:
    speech = torch.from_numpy(espeak_speech("Loud and quiet parts of speech.", SAMPLE_RATE))[None, None]
    sums = np.zeros((len(codec_levels.SCALES), len(codec_levels.EDGES) + 1, 3))
    codec_levels.accumulate(speech, speech, sums)
    same = codec_levels.summarize(sums)
    assert sum(r["bins"] for r in same if r["n_fft"] == 1024) == pytest.approx(1.0)
    assert all(r["mean"] == 0.0 and r["error"] == 0.0 for r in same)
    sums[:] = 0
    codec_levels.accumulate(speech, speech * 0.5, sums)
    half = codec_levels.summarize(sums)
    audible = [r for r in half if r["band"] in ("[-3, -2)", "[-2, 0)") and r["bins"] > 0.01]
    assert audible and all(r["bias"] == pytest.approx(math.log10(0.5), abs=1e-3) for r in audible)
    assert sum(r["error"] for r in half if r["n_fft"] == 256) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ"):
        codec_levels.accumulate(speech, speech[..., :-1], sums)


def test_cli_writes_a_table_per_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_dir = tmp_path / "set"
    codec_set.build(set_dir, VoiceSpec("espeak", "en-us"), (), clips_per_group=1, groups=["assistant"])
    codec = build_codec(num_codebooks=2, n_filters=16, transformer_layers=1, quantizer_levels=4)
    randomize_codebooks(codec.model, seed=0)
    path = save_codec(codec, tmp_path / "r0.safetensors")
    out = tmp_path / "levels"
    args = ["--set", str(set_dir), "--out", str(out), "--checkpoint", f"r0={path}", f"r0@1={path}"]
    assert codec_levels.main(args) == 0
    data = json.loads((out / "levels.json").read_text())
    assert set(data["results"]) == {"r0", "r0@1"} and data["clips"] == 1
    rows = data["results"]["r0"]
    assert len(rows) == len(codec_levels.SCALES) * (len(codec_levels.EDGES) + 1)
    assert sum(r["error"] for r in rows if r["n_fft"] == 512) == pytest.approx(1.0)
    assert "r0@1: error share" in (out / "levels.md").read_text()
    assert (out / "levels.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        codec_levels.main([*args[:4], "--edges", "0", "-1", "--checkpoint", str(path)])
    with pytest.raises(SystemExit):
        codec_levels.main([*args, "--groups", "robots"])
    assert "unknown groups ['robots']" in capsys.readouterr().err
