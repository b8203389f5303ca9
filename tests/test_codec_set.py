"""The codec evaluation set (eval/codec_set.py) and the checkpoint ranking (eval/codec_rank.py)."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.audio.io import load_audio
from e2e_voice.codec import build_codec, randomize_codebooks, save_codec
from e2e_voice.constants import REPO_ROOT, SAMPLE_RATE
from e2e_voice.data import content
from e2e_voice.data.synth import HELD_OUT_VOICES, VoicePool
from e2e_voice.stt.whisper import normalize_text
from e2e_voice.tts.engines import VoiceSpec
from eval import codec_rank, codec_set
from eval.codec import Clip, evaluate_clips, rescore, set_clips

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "dialogues" / "manifest.jsonl"
ASSISTANT = VoiceSpec("kokoro", "jm_kumo")
USERS = (
    VoicePool("espeak", ("en-us+m1", "en-us+f2"), rate=(0.9, 1.1)),
    VoicePool("flite", ("slt",), weight=2),
)


def test_the_sentence_bank_is_unseen_by_the_corpus_generator() -> None:
    bank = codec_set.load_sentences()
    assert len(bank) >= 80 and len(set(bank)) == len(bank)
    corpus_text = [normalize_text(t) for t in (*content.PROMPTS, *content.TEMPLATE_SENTENCES)]
    for s in bank:
        n = normalize_text(s)
        assert 6 <= len(n.split()) <= 20, s
        assert not any(n in t or t in n for t in corpus_text), f"{s!r} is corpus text"


def test_corpus_overlap_finds_a_sentence_said_in_a_turn(tmp_path: Path) -> None:
    turn = json.loads(FIXTURE.read_text().splitlines()[0])["turns"][0]["text"]
    said = turn.split(".")[0].strip()
    bank = codec_set.load_sentences()[:4]
    assert codec_set.corpus_overlap(bank, [FIXTURE]) == []
    assert codec_set.corpus_overlap([*bank, said.upper() + "!"], [FIXTURE]) == [said.upper() + "!"]
    bad = tmp_path / "bank.txt"
    bad.write_text("# comment\n\n")
    with pytest.raises(ValueError, match="no sentences"):
        codec_set.load_sentences(bad)
    bad.write_text("One two three.\nOne two three.\n")
    with pytest.raises(ValueError, match="twice"):
        codec_set.load_sentences(bad)


def test_clip_voices_by_group() -> None:
    assert {codec_set.clip_voice("assistant", i, ASSISTANT, USERS) for i in range(5)} == {ASSISTANT}
    users = [codec_set.clip_voice("user", i, ASSISTANT, USERS) for i in range(40)]
    assert {(v.engine, v.voice) for v in users} == {
        ("espeak", "en-us+m1"),
        ("espeak", "en-us+f2"),
        ("flite", "slt"),
    }
    held = [codec_set.clip_voice("held_out", i, ASSISTANT, USERS) for i in range(10)]
    assert {(v.engine, v.voice) for v in held} == HELD_OUT_VOICES  # each one, equally often
    assert all(0.9 <= v.rate <= 1.1 for v in held)
    assert codec_set.clip_voice("user", 3, ASSISTANT, USERS, seed=1) == codec_set.clip_voice(
        "user", 3, ASSISTANT, USERS, seed=1
    )
    with pytest.raises(ValueError, match="unknown group"):
        codec_set.clip_voice("robots", 0, ASSISTANT, USERS)


def test_the_default_corpus_uses_no_held_out_voice() -> None:
    assistant, users = codec_set.corpus_voices()
    drawn = {(p.engine, v) for p in users for v in p.voices} | {(assistant.engine, assistant.voice)}
    assert drawn and not drawn & HELD_OUT_VOICES


def _tone_tts(calls: list[tuple[VoiceSpec, str]]):  # type: ignore[no-untyped-def]
    def fake(spec: VoiceSpec, text: str) -> np.ndarray:
        calls.append((spec, text))
        t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
        return (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)

    return fake


def test_build_writes_every_group_on_the_same_sentences_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TTS is faked (the set's layout is what is tested); the real engines are used in the next test."""
    calls: list[tuple[VoiceSpec, str]] = []
    monkeypatch.setattr(codec_set.engines, "synthesize", _tone_tts(calls))
    bank = [f"Sentence number {w} is here." for w in ("one", "two", "three", "four", "five", "six")]
    manifest = codec_set.build(
        tmp_path, ASSISTANT, USERS, clips_per_group=3, sentences=bank, exclude=[FIXTURE]
    )
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["group"] for r in rows] == ["assistant"] * 3 + ["user"] * 3 + ["held_out"] * 3
    for group in codec_set.GROUPS:
        assert [r["text"] for r in rows if r["group"] == group] == [
            f"{bank[2 * i]} {bank[2 * i + 1]}" for i in range(3)
        ]
    for r in rows:
        audio = load_audio(tmp_path / r["audio"], SAMPLE_RATE)[0]
        assert (tmp_path / r["audio"]).with_suffix(".txt").read_text().strip() == r["text"]
        assert r["duration"] == pytest.approx(audio.size / SAMPLE_RATE, abs=1e-3)
        active = audio[np.abs(audio) > 1e-3]
        assert -26.5 <= 20 * np.log10(np.sqrt(np.mean(active**2))) <= -15.5  # the drawn level
    assert len(calls) == 18
    clips = set_clips(tmp_path)
    assert [c.group for c in clips] == [r["group"] for r in rows] and clips[0].reference == rows[0]["text"]
    # A rerun keeps finished clips (an interrupted build resumes without re-synthesising them).
    (tmp_path / rows[-1]["audio"]).unlink()
    codec_set.build(tmp_path, ASSISTANT, USERS, clips_per_group=3, sentences=bank)
    assert len(calls) == 20 and manifest.read_text().splitlines() == [json.dumps(r) for r in rows]
    # A Piper clip from before readings were seeded (no "reading" in its record) is read again.
    piper = {**rows[0], "voice": "piper:piper-en-us-joe rate=1.00"}
    assert codec_set.reusable(piper) and codec_set.reusable({**rows[0]})
    del piper["reading"]
    assert not codec_set.reusable(piper) and codec_set.reusable({**piper, "voice": "espeak:en-us"})
    meta = (tmp_path / rows[3]["audio"]).with_suffix(".json")
    meta.write_text(json.dumps({**{k: v for k, v in rows[3].items() if k != "reading"}, "voice": "piper:x"}))
    codec_set.build(tmp_path, ASSISTANT, USERS, clips_per_group=3, sentences=bank)
    assert len(calls) == 22 and manifest.read_text().splitlines() == [json.dumps(r) for r in rows]


def test_build_refuses_what_would_not_be_held_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_set.engines, "synthesize", _tone_tts([]))
    said = json.loads(FIXTURE.read_text().splitlines()[0])["turns"][0]["text"].split(".")[0].strip()
    bank = ["A first sentence that is new.", said]
    with pytest.raises(ValueError, match="occur in the corpus"):
        codec_set.build(tmp_path, ASSISTANT, USERS, clips_per_group=1, sentences=bank, exclude=[FIXTURE])
    with pytest.raises(ValueError, match=r"use 1\.\.1"):
        codec_set.build(tmp_path, ASSISTANT, USERS, clips_per_group=2, sentences=bank)
    with pytest.raises(ValueError, match="unknown groups"):
        codec_set.build(tmp_path, ASSISTANT, USERS, clips_per_group=1, sentences=bank, groups=["robots"])
    with pytest.raises(FileNotFoundError, match=r"python -m eval\.codec_set"):
        set_clips(tmp_path / "nothing")


@pytest.fixture(scope="module")
def espeak_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-group set read by espeak-ng (fast), one clip per group."""
    out = tmp_path_factory.mktemp("codec_eval")
    users = (VoicePool("espeak", ("en-us+m3",)),)
    codec_set.build(out, VoiceSpec("espeak", "en-us"), users, clips_per_group=1, groups=["assistant", "user"])
    return out


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for seed in (0, 1):
        codec = build_codec(
            num_codebooks=2, n_filters=16, transformer_layers=1, quantizer_levels=4, codebook_size=256
        )
        randomize_codebooks(codec.model, seed=seed)
        paths[f"r{seed}"] = save_codec(codec, out / f"r{seed}" / "codec.safetensors")
    return paths


def test_rank_cli_end_to_end_with_whisper_and_resume(
    espeak_set: Path, two_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rank"
    common = ["--set", str(espeak_set), "--baseline", "r0", "--checkpoint"]
    common += [str(p) for p in two_checkpoints.values()]
    cache = ["--judge-cache", str(tmp_path / "judge.json")]
    args = ["--out", str(out), *cache, *common]
    assert codec_rank.main(args) == 0
    first = capsys.readouterr().out
    assert "(6 judge transcriptions)" in first  # the 2 originals once, 2 reconstructions per checkpoint
    ranking = json.loads((out / "rank.json").read_text())
    assert set(ranking["groups"]) == {"assistant", "user", "all"}
    rows = {r["name"]: r for r in ranking["groups"]["all"]}
    assert set(rows) == {"r0", "r1"} and rows["r0"]["delta"] == [0.0, 0.0, 0.0]
    for name in rows:
        summary = json.loads((out / name / "codec_metrics.json").read_text())
        orig = summary["groups"]["assistant"]["wer_original"]
        assert orig[0] < 0.3  # Whisper understands the espeak original
        assert summary["groups"]["assistant"]["wer_reconstruction"][0] > orig[0]  # random weights do not
    assert "## assistant" in (out / "rank.md").read_text() and (out / "rank.png").stat().st_size > 1000
    # A rerun reuses both evaluations: no transcription at all.
    assert codec_rank.main(args) == 0
    assert "(0 judge transcriptions)" in capsys.readouterr().out
    # Another output folder evaluates both checkpoints again, but the judge cache heard every clip before.
    assert codec_rank.main(["--out", str(tmp_path / "again"), *cache, *common]) == 0
    assert "(0 judge transcriptions)" in capsys.readouterr().out
    assert json.loads((tmp_path / "again/rank.json").read_text()) == ranking
    # Without it the originals are transcribed again.
    assert codec_rank.main(["--out", str(tmp_path / "off"), "--judge-cache", "none", *common]) == 0
    assert "(6 judge transcriptions)" in capsys.readouterr().out


def _summary(
    group: str, errors: list[int], words: list[int], missed: list[int] | None = None
) -> dict[str, object]:
    missed = missed if missed is not None else errors
    rows = [
        {
            "file": f"c{i}",
            "group": group,
            "ref_words": w,
            "wer_reconstruction": e / w,
            "hits_reconstruction": w - m,
            "mel_distance": 0.2,
            "stoi": 0.7,
        }
        for i, (e, w, m) in enumerate(zip(errors, words, missed, strict=True))
    ]
    return {"per_clip": rows}


def test_rank_orders_by_pooled_wer_with_a_paired_difference() -> None:
    words = [10] * 30
    base = [5, 0, 9, 2, 7, 1, 8, 3, 6, 4] * 3
    better = [max(e - 1, 0) for e in base]  # one error fewer on most clips
    results = {"base": _summary("user", base, words), "better": _summary("user", better, words)}
    ranking = codec_rank.rank(results, "base")
    rows = ranking["groups"]["user"]
    assert [r["name"] for r in rows] == ["better", "base"]
    assert rows[0]["wer"][0] == pytest.approx(sum(better) / 300)
    delta = rows[0]["delta"]
    assert delta[0] == pytest.approx((sum(better) - sum(base)) / 300) and delta[2] < 0  # wholly below 0
    lo_base, hi_better = rows[1]["wer"][1], rows[0]["wer"][2]
    assert hi_better > lo_base  # unpaired intervals overlap; only pairing resolves the difference
    assert rows[0]["missed_delta"][2] < 0  # here every error is a miss, so the two measures agree
    with pytest.raises(ValueError, match="baseline"):
        codec_rank.rank(results, "nope")
    results["other"] = _summary("user", base[:10], words[:10])
    with pytest.raises(ValueError, match="different clips"):
        codec_rank.rank(results, "base")


def test_rank_missed_words_see_through_insertions() -> None:
    """A run whose extra WER is all hallucinated words is worse by WER and tied by missed words."""
    words = [10] * 30
    missed = [5, 0, 9, 2, 7, 1, 8, 3, 6, 4] * 3
    noisy = [m + 4 for m in missed]  # the same misses, plus 4 inserted words per clip
    results = {"base": _summary("user", missed, words), "noisy": _summary("user", noisy, words, missed)}
    rows = {r["name"]: r for r in codec_rank.rank(results, "base")["groups"]["user"]}
    assert rows["noisy"]["delta"][1] > 0  # worse by WER beyond noise
    assert rows["noisy"]["missed_delta"] == [0.0, 0.0, 0.0]
    assert rows["noisy"]["missed"][0] == pytest.approx(sum(missed) / 300)
    text = codec_rank.to_markdown(codec_rank.rank(results, "base"), "set")
    assert "| noisy | 85.0% [" in text and "| +0.0 [+0.0, +0.0] |" in text


def test_rank_sorts_by_missed_words_when_asked() -> None:
    """By WER the run that misses more words but inserts none leads; by missed words the other one does."""
    words = [10] * 30
    misses = [3, 1, 4, 2, 5] * 6
    fewer_misses_many_insertions = _summary(
        "user", [m - 1 + 5 for m in misses], words, [m - 1 for m in misses]
    )
    results = {"base": _summary("user", misses, words), "chatty": fewer_misses_many_insertions}
    by_wer = codec_rank.rank(results, "base")
    assert [r["name"] for r in by_wer["groups"]["user"]] == ["base", "chatty"] and by_wer["sort_by"] == "wer"
    by_missed = codec_rank.rank(results, "base", sort_by="missed")
    assert [r["name"] for r in by_missed["groups"]["user"]] == ["chatty", "base"]
    assert "Rows are sorted by missed words." in codec_rank.to_markdown(by_missed, "set")
    assert "sorted by missed" not in codec_rank.to_markdown(by_wer, "set")
    with pytest.raises(ValueError, match="give one of wer, missed"):
        codec_rank.rank(results, "base", sort_by="stoi")


def test_rescore_fills_missed_words_from_stored_transcripts() -> None:
    clips = [Clip("c0", np.zeros(10, np.float32), "the cat sat on the mat", "user")]
    row = {
        "file": "c0",
        "heard_original": "the cat sat on the mat",
        "heard_reconstruction": "a cat sat on mat x y z",
    }
    assert rescore([row], clips) == 1
    assert (row["hits_original"], row["hits_reconstruction"]) == (6, 4)
    assert rescore([row], clips) == 0  # already scored
    unknown = {"file": "other", "heard_original": "x", "heard_reconstruction": "y"}
    assert rescore([unknown], clips) == 0 and "hits_reconstruction" not in unknown


def test_parse_checkpoints_names_and_errors(two_checkpoints: dict[str, Path]) -> None:
    r0, r1 = two_checkpoints["r0"], two_checkpoints["r1"]
    parsed = codec_rank.parse_checkpoints([f"v5={r0}", str(r1.parent.parent / "*" / "codec.safetensors")])
    assert parsed == {"v5": r0, "r0": r0, "r1": r1}
    with pytest.raises(ValueError, match="two checkpoints are named"):
        codec_rank.parse_checkpoints([f"x={r0}", f"x={r1}"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        codec_rank.parse_checkpoints(["missing/*.safetensors"])


def test_a_name_at_n_ranks_the_same_file_from_its_first_n_levels(
    espeak_set: Path, two_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    r0 = two_checkpoints["r0"]
    parsed = codec_rank.parse_checkpoints([f"r0={r0}", f"r0@1={r0}"])
    assert parsed == {"r0": r0, "r0@1": r0}
    assert [codec_rank.name_levels(n) for n in parsed] == [None, 1]
    for bad in ("r0@", "r0@0", "r0@two"):
        with pytest.raises(ValueError, match="how many RVQ levels"):
            codec_rank.parse_checkpoints([f"{bad}={r0}"])

    class Judge:  # the judge is not what this checks
        def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
            return "words"

    clips = set_clips(espeak_set)
    results = codec_rank.evaluate_all(parsed, clips, "set", tmp_path, Judge())
    assert results["r0"]["codec"]["num_codebooks"] == 2 and "num_codebooks" not in results["r0"]["source"]
    assert results["r0@1"]["codec"]["num_codebooks"] == 1 and results["r0@1"]["source"]["num_codebooks"] == 1
    assert results["r0@1"]["codec"]["bitrate_bps"] == results["r0"]["codec"]["bitrate_bps"] / 2
    assert all(results[n]["machine"]["cores"] for n in parsed)  # each checkpoint's RTFs carry their context
    mel = [results[n]["groups"]["assistant"]["mel_distance"] for n in parsed]
    assert mel[0] != mel[1]  # the other level count decoded other audio
    # A level count the file does not have (it stores 4 levels and decodes 2 by default) names the range.
    with pytest.raises(ValueError, match=r"num_codebooks must be in \[1, 4\]"):
        codec_rank.evaluate_all({"r0@5": r0}, clips, "set", tmp_path, Judge())


def test_memo_judge_transcribes_each_clip_once() -> None:
    heard: list[int] = []

    class Judge:
        def transcribe(self, audio: np.ndarray, sr: int) -> str:
            heard.append(audio.size)
            return f"{audio.size} samples"

    judge = codec_rank.MemoJudge(Judge)
    a, b = np.zeros(100, np.float32), np.ones(100, np.float32)
    assert [judge.transcribe(x, SAMPLE_RATE) for x in (a, b, a.copy(), b)] == ["100 samples"] * 4
    assert judge.calls == 2 and len(heard) == 2


def test_the_codec_tools_judge_is_float32_and_keyed_apart_from_int8() -> None:
    from eval import codec as eval_codec

    default = codec_rank.judge_identity(eval_codec.judge_factory())
    int8 = codec_rank.judge_identity(eval_codec.judge_factory("int8"))
    assert "compute_type='float32'" in default and "compute_type='int8'" in int8 and default != int8
    with pytest.raises(ValueError, match="judge compute type 'int4'"):
        eval_codec.judge_factory("int4")
    parser = argparse.ArgumentParser()
    eval_codec.add_judge_argument(parser)
    assert parser.parse_args([]).judge_compute_type == "float32"
    assert parser.parse_args(["--judge-compute-type", "int8"]).judge_compute_type == "int8"
    with pytest.raises(SystemExit):
        parser.parse_args(["--judge-compute-type", "int4"])


def test_judge_identity_follows_the_judge_settings() -> None:
    from e2e_voice.stt.whisper import WhisperSTT

    base = codec_rank.judge_identity(WhisperSTT)
    assert base.startswith("WhisperSTT(") and "model='whisper-base'" in base and "compute_type='int8'" in base
    assert codec_rank.MemoJudge(WhisperSTT).judge_name == base  # built lazily: nothing loaded here
    small = codec_rank.judge_identity(functools.partial(WhisperSTT, model="whisper-small"))
    assert "model='whisper-small'" in small and small != base
    beam = codec_rank.judge_identity(
        functools.partial(functools.partial(WhisperSTT, beam_size=5), language=None)
    )
    assert "beam_size=5" in beam and "language=None" in beam and "model='whisper-base'" in beam

    class Plain:
        pass

    assert (
        codec_rank.judge_identity(Plain) == "test_judge_identity_follows_the_judge_settings.<locals>.Plain()"
    )


def test_memo_judge_cache_outlives_the_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    heard: list[int] = []

    class Judge:
        def transcribe(self, audio: np.ndarray, sr: int) -> str:
            heard.append(audio.size)
            return f"{audio.size} samples"

    cache = tmp_path / "cache/judge.json"
    a, b = np.zeros(100, np.float32), np.ones(50, np.float32)
    first = codec_rank.MemoJudge(Judge, cache=cache)
    first.transcribe(a, SAMPLE_RATE)
    first.save()
    second = codec_rank.MemoJudge(Judge, cache=cache)
    assert second.transcribe(a.copy(), SAMPLE_RATE) == "100 samples" and second.calls == 0
    assert second.transcribe(b, SAMPLE_RATE) == "50 samples" and second.calls == 1
    assert second.transcribe(a, 16_000) and second.calls == 2  # another rate is another clip
    other = codec_rank.MemoJudge(Judge, cache=cache, judge_name="whisper-small")
    other.transcribe(a, SAMPLE_RATE)
    assert other.calls == 1  # another judge never reuses this one's transcripts
    cache.write_text('{"truncated": ')
    with caplog.at_level("WARNING"):
        broken = codec_rank.MemoJudge(Judge, cache=cache)
    assert "unreadable" in caplog.text and broken.memo == {}
    broken.transcribe(a, SAMPLE_RATE)
    broken.save()  # replaces the broken file with a good one
    assert codec_rank.MemoJudge(Judge, cache=cache).transcribe(a, SAMPLE_RATE) == "100 samples"
    assert not cache.with_suffix(".json.tmp").exists()
    assert codec_rank.judge_cache("none") is None and codec_rank.judge_cache("x.json") == Path("x.json")


def test_group_summary_pools_words_not_clip_means(tmp_path: Path) -> None:
    """A 2-word clip Whisper hallucinates 10 words on weighs by its words in the pooled WER."""

    class Judge:
        def __init__(self) -> None:
            self.n = 0

        def transcribe(self, audio: np.ndarray, sr: int) -> str:
            self.n += 1
            return texts[(self.n - 1) // 2] if self.n % 2 else hyps[(self.n - 1) // 2]

    texts = ["one two three four five six seven eight nine ten", "hello there"]
    hyps = ["one two three four five six seven eight nine ten", "a b c d e f g h i j k l"]
    codec = build_codec(
        num_codebooks=2, n_filters=16, transformer_layers=1, quantizer_levels=4, codebook_size=256
    )
    tone = (0.1 * np.sin(np.arange(SAMPLE_RATE) / 10)).astype(np.float32)
    clips = [Clip(f"c{i}", tone, t, "user") for i, t in enumerate(texts)]
    summary = evaluate_clips(codec, clips, tmp_path, Judge(), plots=0)
    group = summary["groups"]["user"]
    assert group["ref_words"] == 12 and group["wer_original"][0] == 0.0
    assert group["wer_reconstruction"][0] == pytest.approx(12 / 12)  # 0 + 12 errors (2 subst, 10 ins)
    assert summary["mean"]["wer_reconstruction"] == pytest.approx((0 + 6.0) / 2)  # the clip mean
    assert "| user | 2 |" in (tmp_path / "codec_metrics.md").read_text()
    assert [r["heard_reconstruction"] for r in summary["per_clip"]] == hyps  # kept to read hallucinations
    # Missed words ignore the 10 hallucinated ones: only "hello there" (2 substitutions) is missed.
    assert group["missed_reconstruction"][0] == pytest.approx(2 / 12)
    assert [r["hits_reconstruction"] for r in summary["per_clip"]] == [10, 0]
