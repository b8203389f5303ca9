"""The synthetic dialogue generator: alignment, channels, scenario timing, noise SNR, determinism.

Fast tests generate a few conversations with fast engines (espeak/flite/piper users, a Piper
assistant, template answers, word-by-word alignment); the committed fixture (Kokoro assistant, LLM
answers, Whisper alignment) is checked with the same invariants.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf

from e2e_voice import cli
from e2e_voice.data import synth
from e2e_voice.data.align import split_words
from e2e_voice.data.manifest import ASSISTANT, CHANNEL_OF, USER, DialogueEntry, read_manifest
from e2e_voice.data.scenarios import TimingSettings, active_mask
from e2e_voice.data.synth import SynthSettings, VoicePool, generate, plan
from e2e_voice.tts.engines import VoiceSpec

FIXTURE = Path(__file__).parent / "fixtures" / "dialogues" / "manifest.jsonl"
SR = 24000
SILENT_DB = -45.0  # a channel with nothing placed is digital silence; this is far above it
TIMING = TimingSettings()


def fast_settings(out: Path, **over: object) -> SynthSettings:
    base = SynthSettings(
        out_dir=out,
        num_conversations=4,
        seed=3,
        workers=1,
        exchanges=(2, 3),
        assistant=VoiceSpec("espeak", "en-us+m3", rate=1.1),
        users=(
            VoicePool("espeak", ("en-us+f2", "en-gb+m3"), rate=(0.9, 1.1), pitch=(30, 70)),
            VoicePool("flite", ("slt", "rms"), rate=(0.9, 1.1)),
        ),
        content_source="templates",
        alignment="concat",
        scenario_weights={"pause": 1, "interruption": 1, "backchannel": 1, "long_silence": 1},
        noise_prob=0.5,
        snr_db=(8.0, 20.0),
        use_cache=False,
    )
    return replace(base, **over)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[DialogueEntry]:
    out = tmp_path_factory.mktemp("synth")
    generate(fast_settings(out))
    return [e for s in ("train", "valid", "test") for e in read_manifest(out / f"{s}.jsonl").entries]


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12)) if x.size else -120.0


def _seg(audio: np.ndarray, ch: int, a: float, b: float) -> np.ndarray:
    return audio[ch, max(0, round(a * SR)) : max(0, round(b * SR))]


def _load(e: DialogueEntry) -> np.ndarray:
    data, sr = sf.read(str(e.audio), dtype="float32", always_2d=True)
    assert sr == SR
    return data.T  # [C=2, T]


def check_alignment(e: DialogueEntry) -> None:
    """Words lie inside the audio and inside their turns, and spell the turn texts in order."""
    for w in e.words:
        assert 0 <= w.start <= w.end <= e.duration, w
    for t in e.turns:
        inside = [w.word for w in e.words if w.speaker == t.speaker and t.start - 1e-3 <= w.start < t.end]
        assert inside == split_words(t.text), (t, inside)


def check_channels(e: DialogueEntry, audio: np.ndarray) -> None:
    """Each speaker's words carry energy in their own channel; the assistant channel is silent when
    only the user speaks (and the user channel when only the assistant speaks, unless noisy)."""
    n = audio.shape[-1]
    for speaker, other in ((ASSISTANT, USER), (USER, ASSISTANT)):
        own = active_mask(list(e.turns), speaker, n)
        other_on = active_mask(list(e.turns), other, n)
        assert _db(audio[CHANNEL_OF[speaker], own]) > -35, (e.id, speaker)
        alone = other_on & ~own
        if speaker == USER and e.noise_snr_db is not None:
            continue  # noise lives in the user channel
        assert _db(audio[CHANNEL_OF[speaker], alone]) < SILENT_DB, (e.id, speaker)
    loud_words = [w for w in e.words if w.end - w.start > 0.15]
    ok = [_db(_seg(audio, CHANNEL_OF[w.speaker], w.start, w.end)) > -40 for w in loud_words]
    assert np.mean(ok) > 0.95, (e.id, np.mean(ok))


def check_scenarios(e: DialogueEntry, audio: np.ndarray, timing: TimingSettings = TIMING) -> None:
    """Each event's timing invariant."""
    a_ch, u_ch = CHANNEL_OF[ASSISTANT], CHANNEL_OF[USER]
    clean = e.noise_snr_db is None
    for ev in e.events:
        if ev.kind == "turn_gap":
            lo, hi = timing.gap_range_s
            assert lo - 2e-3 <= ev.end - ev.start <= hi + 2e-3, ev
            assert _db(_seg(audio, a_ch, ev.start - 0.05, ev.end)) < SILENT_DB, ev
            assert any(t.speaker == ASSISTANT and abs(t.start - ev.end) < 2e-3 for t in e.turns), ev
        elif ev.kind == "pause":
            assert ev.end - ev.start >= timing.pause_s[0] - 2e-3, ev
            assert _db(_seg(audio, a_ch, ev.start, ev.end)) < SILENT_DB, "assistant took the turn in a pause"
            if clean:
                assert _db(_seg(audio, u_ch, ev.start + 0.03, ev.end - 0.03)) < SILENT_DB, ev
            assert _db(_seg(audio, u_ch, ev.end, ev.end + 0.3)) > -40, "user does not resume after the pause"
            resumed = [t for t in e.turns if t.speaker == USER and abs(t.start - ev.end) < 2e-3]
            assert resumed, ev
        elif ev.kind == "interruption":
            assert 0 < ev.end - ev.start <= ev.info["max_stop_s"] + 1e-3, ev
            assert _db(_seg(audio, u_ch, ev.start, ev.start + 0.3)) > -40, "no barge-in speech"
            following = [t.start for t in e.turns if t.speaker == ASSISTANT and t.start > ev.end]
            stop = min(following, default=e.duration)
            assert _db(_seg(audio, a_ch, ev.end + 0.002, stop)) < SILENT_DB, "assistant kept talking"
            assert any(
                t.speaker == ASSISTANT and t.start < ev.start and abs(t.end - ev.end) < 2e-3 for t in e.turns
            )
        elif ev.kind == "backchannel":
            assert any(t.speaker == ASSISTANT and t.start < ev.start and ev.end < t.end for t in e.turns), (
                "backchannel does not overlap assistant speech"
            )
            assert _db(_seg(audio, u_ch, ev.start, ev.end)) > -40, ev
        elif ev.kind == "long_silence":
            assert ev.end - ev.start >= timing.long_silence_s[0] - 2e-3, ev
            assert _db(_seg(audio, a_ch, ev.start + 0.01, ev.end)) < SILENT_DB, ev
            if clean:
                assert _db(_seg(audio, u_ch, ev.start + 0.01, ev.end)) < SILENT_DB, ev


def measured_snr(e: DialogueEntry, audio: np.ndarray) -> float:
    """SNR of the user channel from the file alone: noise power where nobody of the user speaks,
    speech power = power in user turns minus noise power."""
    user = audio[CHANNEL_OF[USER]].astype(np.float64)
    mask = active_mask(list(e.turns), USER, user.shape[-1])
    p_noise = float(np.mean(user[~mask] ** 2))
    p_total = float(np.mean(user[mask] ** 2))
    return 10 * np.log10((p_total - p_noise) / p_noise)


def test_generated_conversations_cover_the_scenarios(generated: list[DialogueEntry]) -> None:
    tags = {t for e in generated for t in e.scenarios}
    assert {"smooth", "pause", "interruption", "backchannel", "long_silence", "noise"} <= tags, tags


@pytest.mark.parametrize(
    "check", [check_alignment, check_channels, check_scenarios], ids=lambda f: f.__name__
)
def test_generated_invariants(generated: list[DialogueEntry], check: object) -> None:
    for e in generated:
        if check is check_alignment:
            check_alignment(e)
        else:
            check(e, _load(e))  # type: ignore[operator]


@pytest.mark.parametrize(
    "check", [check_alignment, check_channels, check_scenarios], ids=lambda f: f.__name__
)
def test_fixture_invariants(check: object) -> None:
    for e in read_manifest(FIXTURE).entries:
        if check is check_alignment:
            check_alignment(e)
        else:
            check(e, _load(e))  # type: ignore[operator]


def test_noise_snr_matches_request(generated: list[DialogueEntry]) -> None:
    noisy = [e for e in generated if e.noise_snr_db is not None]
    assert noisy
    for e in noisy:
        assert abs(measured_snr(e, _load(e)) - e.noise_snr_db) < 1.0, (e.id, e.noise_snr_db)  # type: ignore[operator]


def test_plan_is_independent_of_the_rest_of_the_run(tmp_path: Path) -> None:
    a = fast_settings(tmp_path, num_conversations=3)
    b = fast_settings(tmp_path, num_conversations=50, workers=2)
    assert [plan(a, i) for i in range(3)] == [plan(b, i) for i in range(3)]
    assert plan(a, 0) != plan(fast_settings(tmp_path, seed=4), 0)


def _prompts_by_split(settings: SynthSettings, n: int = 400) -> dict[str, set[str]]:
    from e2e_voice.data.content import FOLLOW_UPS

    out: dict[str, set[str]] = {}
    for i in range(n):
        p = plan(settings, i)
        out.setdefault(p.split, set()).update(q for q in p.prompts if q not in FOLLOW_UPS)
    return out


def test_held_out_splits_ask_questions_train_never_asks(tmp_path: Path) -> None:
    """Each prompt belongs to one split (the default), so valid/test questions and their answers are
    unseen in train; with one shared bank (null, the corpora before 2026-11-30) they leak."""
    settings = fast_settings(tmp_path, content_source="llm")
    by_split = _prompts_by_split(settings)
    assert set(by_split) == {"train", "valid", "test"}
    assert not by_split["train"] & (by_split["valid"] | by_split["test"])
    assert not by_split["valid"] & by_split["test"]
    shared = _prompts_by_split(fast_settings(tmp_path, content_source="llm", prompt_splits=None))
    assert shared["train"] & shared["test"], "the shared bank should leak over 400 conversations"


def test_prompt_splits_must_leave_every_split_a_prompt(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"leaves no prompt for split\(s\) \['valid', 'test'\]"):
        fast_settings(tmp_path, prompt_splits={"train": 1.0})
    with pytest.raises(ValueError, match="prompt_splits must be fractions"):
        fast_settings(tmp_path, prompt_splits={"dev": 1.0})


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.suffix in (".jsonl", ".flac"):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    one = fast_settings(tmp_path / "a", num_conversations=2, exchanges=(2, 2))
    generate(one)
    generate(replace(one, out_dir=tmp_path / "b", workers=2))  # worker processes change nothing
    generate(replace(one, out_dir=tmp_path / "c", seed=11))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_audio_digest_follows_samples_not_file_bytes(tmp_path: Path) -> None:
    from e2e_voice.data.digests import audio_digest

    rng = np.random.default_rng(0)
    (tmp_path / "audio").mkdir()
    entries = []
    for i in (1, 0):  # manifest order does not matter, file names do
        samples = rng.integers(-2000, 2000, size=(4800, 2), dtype=np.int16)
        sf.write(tmp_path / f"audio/c{i}.flac", samples, 24_000, subtype="PCM_16", compression_level=0.0)
        entries.append({"audio": f"audio/c{i}.flac"})
    first = audio_digest(tmp_path, entries)
    path = tmp_path / "audio/c0.flac"
    samples, _ = sf.read(path, dtype="int16")
    before = path.read_bytes()
    sf.write(path, samples, 24_000, subtype="PCM_16", compression_level=1.0)  # other bytes, same samples
    assert path.read_bytes() != before and audio_digest(tmp_path, entries) == first
    samples[100, 1] += 1  # one sample, one step
    sf.write(path, samples, 24_000, subtype="PCM_16")
    assert audio_digest(tmp_path, entries) != first


def test_digest_compare_names_the_differing_channel_and_its_voice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two builds that differ in one sample of one user channel: the comparison names that channel."""
    from e2e_voice.data.digests import audio_digests
    from e2e_voice.data.digests import main as compare_main

    voices = {
        0: {"assistant": "kokoro:jm_kumo", "user": "piper:joe"},
        1: {"assistant": "kokoro:jm_kumo", "user": "flite:kal16"},
    }
    builds = {}
    for name in ("a", "b"):
        d = tmp_path / name
        (d / "audio").mkdir(parents=True)
        entries = []
        for i in (0, 1):
            samples = np.random.default_rng(i).integers(-2000, 2000, size=(4800, 2), dtype=np.int16)
            if name == "b" and i == 0:
                samples[7, 1] += 1  # the user channel of conversation 0
            sf.write(d / f"audio/c{i}.flac", samples, 24_000, subtype="PCM_16")
            entries.append({"audio": f"audio/c{i}.flac", "voices": voices[i]})
        (d / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
        whole, channels = audio_digests(d, entries)
        (d / "synth_summary.json").write_text(
            json.dumps({"audio_sha256": whole, "audio_sha256_channels": channels})
        )
        builds[name] = channels
    assert builds["a"]["audio/c0.flac"][0] == builds["b"]["audio/c0.flac"][0]
    assert builds["a"]["audio/c0.flac"][1] != builds["b"]["audio/c0.flac"][1]
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--list"]) == 1
    out = capsys.readouterr().out
    assert "1 of 4 channels differ" in out
    assert "audio/c0.flac user      piper:joe" in out
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "a" / "synth_summary.json")]) == 0
    assert "the same audio" in capsys.readouterr().out
    (tmp_path / "old.json").write_text(json.dumps({"audio_sha256": "x"}))
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "old.json")]) == 2
    assert "audio_sha256_channels" in capsys.readouterr().err
    # Several others: status 0 when one of them has the same audio, and the summary line names it.
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a")]) == 0
    assert f"same audio as: {tmp_path / 'a'}" in capsys.readouterr().out
    assert compare_main([str(tmp_path / "b"), str(tmp_path / "a"), str(tmp_path / "a")]) == 1
    assert "same audio as: none of them" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # nothing to compare with and nothing to save
        compare_main([str(tmp_path / "a")])


def test_digest_save_keeps_the_build_and_its_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--save`` writes digests a later comparison reads back as the same audio, with the machine the summary
    recorded; a summary without one gets this machine's, marked as read when saving."""
    from e2e_voice.data.digests import audio_digests
    from e2e_voice.data.digests import main as digests_main

    d = tmp_path / "corpus"
    (d / "audio").mkdir(parents=True)
    sf.write(d / "audio/c0.flac", np.zeros((2400, 2), dtype=np.int16), 24_000, subtype="PCM_16")
    entries = [{"audio": "audio/c0.flac", "voices": {"assistant": "kokoro:jm_kumo", "user": "piper:joe"}}]
    (d / "train.jsonl").write_text(json.dumps(entries[0]) + "\n")
    whole, channels = audio_digests(d, entries)
    machine = {"cpu": "Test CPU", "family": "25", "model": "17", "vector_isa": "avx512", "cores": 2}
    summary = {
        "audio_sha256": whole,
        "audio_sha256_channels": channels,
        "built": "2026-12-02",
        "machine": machine,
    }
    (d / "synth_summary.json").write_text(json.dumps(summary))
    out = tmp_path / "digests" / "saved.json"
    assert digests_main([str(d), "--save", str(out), "--label", "test corpus"]) == 0
    saved = json.loads(out.read_text())
    assert saved["corpus"] == "test corpus" and saved["built"] == "2026-12-02"
    assert saved["machine"] == machine and "machine_read" not in saved
    assert saved["audio_sha256_channels"] == channels
    assert "Test CPU, family 25 model 17, avx512, 2 cores" in capsys.readouterr().out
    assert saved["voices"] == {"audio/c0.flac": entries[0]["voices"]}
    assert digests_main([str(d), str(out)]) == 0  # the saved file compares as the same audio
    capsys.readouterr()
    # As the first build, a saved file counts by engine from the voices it carries, not from stray
    # manifests that happen to lie beside it.
    (out.parent / "stray.jsonl").write_text(json.dumps({"audio": "audio/c0.flac", "voices": {}}) + "\n")
    assert digests_main([str(out), str(d)]) == 0
    assert "kokoro          0    1" in capsys.readouterr().out
    assert not list(out.parent.glob("*.tmp"))

    del summary["machine"], summary["built"]
    (d / "synth_summary.json").write_text(json.dumps(summary))
    assert digests_main([str(d), "--save", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert "machine_read" in saved and saved["machine"]["cores"] >= 1
    assert saved["corpus"] == str(d) and len(saved["built"]) == 10
    assert digests_main([str(tmp_path / "missing"), "--save", str(out)]) == 2
    assert "no synth_summary.json" in capsys.readouterr().err


def test_machine_fingerprint_reads_cpu_family_and_widest_vector_isa(tmp_path: Path) -> None:
    """The first processor's block of ``/proc/cpuinfo`` gives the CPU; AVX-512 is told from AVX2 alone."""
    from e2e_voice.data.digests import describe_machine, machine_fingerprint

    block = (
        "vendor_id\t: AuthenticAMD\ncpu family\t: {fam}\nmodel\t\t: {model}\n"
        "model name\t: AMD EPYC\nflags\t\t: {flags}\n"
    )
    for fam, model, flags, isa in (
        ("25", "1", "sse4_2 avx avx2", "avx2"),
        ("25", "17", "avx avx2 avx512f", "avx512"),
    ):
        info = tmp_path / f"cpuinfo_{model}"
        # A second processor with other flags is ignored: the first block describes the machine.
        info.write_text(
            block.format(fam=fam, model=model, flags=flags) + "\n" + block.format(fam=9, model=9, flags="")
        )
        machine = machine_fingerprint(str(info))
        assert (machine["vendor"], machine["family"], machine["model"]) == ("AuthenticAMD", fam, model)
        assert machine["vector_isa"] == isa
        assert machine["packages"]["numpy"] == np.__version__
        assert describe_machine(machine).startswith(f"AMD EPYC, family {fam} model {model}, {isa}")
    missing = machine_fingerprint(str(tmp_path / "none"))
    assert missing["cpu"] is None and missing["vector_isa"] is None
    assert describe_machine("Intel Xeon, 2 vCPUs") == "Intel Xeon, 2 vCPUs"  # older files: free text


REAL_RENDER = synth.render


def _counting_render(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[str]:
    """Wrap ``synth.render`` to record the conversations it renders (and optionally crash midway)."""
    real, rendered = REAL_RENDER, []

    def render(settings: SynthSettings, p: synth.ConversationPlan) -> object:
        if fail_after is not None and len(rendered) == fail_after:
            raise RuntimeError("stopped by the test")
        rendered.append(p.id)
        return real(settings, p)

    monkeypatch.setattr(synth, "render", render)
    return rendered


def test_an_interrupted_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped after two conversations keeps them: the rerun renders only the other two, and the
    corpus is byte-identical to one made in a single run."""
    settings = fast_settings(tmp_path / "a")
    rendered = _counting_render(monkeypatch, fail_after=2)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        generate(settings)
    assert len(rendered) == 2 and not (tmp_path / "a" / "train.jsonl").exists()
    rendered = _counting_render(monkeypatch)
    result = generate(settings)
    assert result.resumed == 2 and len(rendered) == 2
    assert len(result.entries) == 4
    rendered = _counting_render(monkeypatch)
    generate(replace(settings, out_dir=tmp_path / "b"))  # the same corpus in one go
    assert len(rendered) == 4
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_resume_redoes_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changed corpus settings, a damaged sidecar, a missing audio file or resume=False render again;
    run-only settings (workers, cache) do not."""
    settings = fast_settings(tmp_path, num_conversations=3, exchanges=(2, 2))
    generate(settings)
    rendered = _counting_render(monkeypatch)
    assert generate(replace(settings, use_cache=True, cache_root=tmp_path / "cache")).resumed == 3
    assert rendered == []
    generate(replace(settings, noise_prob=0.0))  # another corpus: nothing is reused
    assert len(rendered) == 3
    sidecars = sorted((tmp_path / "audio").glob("*.json"))
    assert len(sidecars) == 3
    sidecars[0].write_text("{not json")
    entry = json.loads(sidecars[1].read_text())["entry"]
    (tmp_path / entry["audio"]).unlink()
    rendered.clear()
    assert generate(replace(settings, noise_prob=0.0)).resumed == 1
    assert sorted(rendered) == sorted(p.stem for p in sidecars[:2])
    rendered.clear()
    assert generate(replace(settings, noise_prob=0.0, resume=False)).resumed == 0
    assert len(rendered) == 3


def test_piper_users_repeat_without_a_cache(tmp_path: Path) -> None:
    """Piper samples its prosody; seeded by voice + text, two uncached runs still give the same bytes."""
    piper = (VoicePool("piper", ("piper-en-us-joe",), rate=(0.9, 1.1), noise=(0.5, 0.8)),)
    one = fast_settings(tmp_path / "a", num_conversations=1, exchanges=(2, 2), users=piper, noise_prob=0.0)
    generate(one)
    generate(replace(one, out_dir=tmp_path / "b"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_cache_reuses_clips(tmp_path: Path) -> None:
    # Piper samples noise inside its ONNX graph: a rerun must take its clips from the cache, not re-read them.
    settings = fast_settings(
        tmp_path / "a",
        num_conversations=1,
        exchanges=(2, 2),
        users=(VoicePool("piper", ("piper-en-us-joe",), rate=(0.9, 1.1), noise=(0.5, 0.8)),),
        use_cache=True,
        cache_root=tmp_path / "cache",
    )
    generate(settings)
    clips = sorted((tmp_path / "cache" / "tts").glob("*.npz"))
    assert clips
    stamps = [p.stat().st_mtime_ns for p in clips]
    generate(replace(settings, out_dir=tmp_path / "b"))
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "tts").glob("*.npz"))] == stamps
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


class FakeAligner:
    """Stands in for Whisper: words spread evenly over each clip; records the size of every call."""

    calls: ClassVar[list[int]] = []

    def __init__(self, *args: object) -> None:
        pass

    def align_many(
        self, clips: list[tuple[np.ndarray, str]], sample_rate: int = SR
    ) -> list[list[tuple[str, float, float]]]:
        FakeAligner.calls.append(len(clips))
        out = []
        for audio, text in clips:
            words, d = split_words(text), len(audio) / sample_rate
            out.append([(w, d * i / len(words), d * (i + 1) / len(words)) for i, w in enumerate(words)])
        return out


def test_whisper_path_aligns_a_conversation_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "WhisperAligner", FakeAligner)
    monkeypatch.setattr(FakeAligner, "calls", [])
    settings = fast_settings(
        tmp_path / "a",
        num_conversations=2,
        alignment="whisper",
        use_cache=True,
        cache_root=tmp_path / "cache",
    )
    generate(settings)
    assert len(FakeAligner.calls) == 2 and min(FakeAligner.calls) >= 3  # every clip of a conversation at once
    before = [
        e for s in ("train", "valid", "test") for e in read_manifest(tmp_path / "a" / f"{s}.jsonl").entries
    ]
    for e in before:
        check_alignment(e)
    # the offset correction is applied to the aligner's raw times: no new TTS, words move by the offset
    clips = sorted((tmp_path / "cache" / "tts").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in clips]
    shifted = replace(
        settings, out_dir=tmp_path / "b", align_offsets={"espeak": (0.05, 0.05), "flite": (0.05, 0.05)}
    )
    generate(shifted)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "tts").glob("*.npz"))] == stamps
    assert FakeAligner.calls[2:] == FakeAligner.calls[:2]  # each conversation aligned again, all at once
    after = [
        e for s in ("train", "valid", "test") for e in read_manifest(tmp_path / "b" / f"{s}.jsonl").entries
    ]
    moved = [b.start - a.start for x, y in zip(before, after) for a, b in zip(x.words, y.words)]
    assert np.median(moved) == pytest.approx(0.05, abs=0.002)
    for e in after:
        check_alignment(e)


class CompanionAligner(FakeAligner):
    """A fake Whisper whose times depend on the clips sharing the call, as the real one's depend on the
    clips sharing a window (self-attention sees them all)."""

    def align_many(
        self, clips: list[tuple[np.ndarray, str]], sample_rate: int = SR
    ) -> list[list[tuple[str, float, float]]]:
        squeeze = 1.0 - 0.01 * len(clips)
        return [
            [(w, a * squeeze, b * squeeze) for w, a, b in c] for c in super().align_many(clips, sample_rate)
        ]


def test_word_times_do_not_depend_on_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversation's times are the same whatever the cache held: before, only the clips it lacked were
    aligned (together), so a half-warm cache gave other times than a cold one (the audio the same)."""
    monkeypatch.setattr(synth, "WhisperAligner", CompanionAligner)
    monkeypatch.setattr(FakeAligner, "calls", [])
    cache = tmp_path / "cache"
    settings = fast_settings(
        tmp_path / "cold", num_conversations=2, alignment="whisper", use_cache=True, cache_root=cache
    )
    generate(settings)
    clips = sorted((cache / "tts").glob("*.npz"))
    for p in clips[::2]:  # half of the clips are gone, as if another run had made the others
        p.unlink()
    generate(replace(settings, out_dir=tmp_path / "half"))
    generate(replace(settings, out_dir=tmp_path / "warm"))
    assert _digest(tmp_path / "cold") == _digest(tmp_path / "half") == _digest(tmp_path / "warm")
    assert len(FakeAligner.calls) == 6 and FakeAligner.calls[:2] == FakeAligner.calls[2:4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        pytest.param("workers=0", "workers must be >= 1", id="workers"),
        pytest.param("content.source=wiki", "content.source must be", id="content"),
        pytest.param("users.espeak.voices=[]", "'voices' is empty", id="voices"),
        pytest.param("scenarios.timing.max_stop_s=0.1", "stated bound would not hold", id="max-stop"),
        pytest.param("+scenarios.weights.nap=1", "unknown scenario", id="scenario"),
        pytest.param("alignment.offsets_s.kokoro=[0.1]", "expected \\[start_s, end_s\\]", id="offset-pair"),
        pytest.param("+alignment.offsets_s.nemo=[0.1,0.1]", "offsets for unknown engine", id="offset-engine"),
    ],
)
def test_bad_config_value(tmp_path: Path, override: str, message: str) -> None:
    from hydra import compose, initialize_config_dir

    from e2e_voice.constants import CONFIG_DIR
    from e2e_voice.data.synth_cli import settings_from_config

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("synth_data", overrides=[override])
    with pytest.raises(ValueError, match=message):
        settings_from_config(cfg)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "synth-data",
            "num_conversations=2",
            "workers=1",
            "exchanges=[2,2]",
            "assistant.engine=piper",
            "assistant.voice=piper-en-us-joe",
            "users.kokoro.weight=0",
            "users.piper.weight=0",
            "content.source=templates",
            "alignment.method=concat",
            f"out_dir={tmp_path / 'out'}",
            f"cache.dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "out" / "synth_summary.json").read_text())
    assert summary["conversations"] == 2 and summary["audio_seconds"] > 5
    entries = [
        e for s in ("train", "valid", "test") for e in read_manifest(tmp_path / "out" / f"{s}.jsonl").entries
    ]
    assert len(entries) == 2
    from e2e_voice.data.digests import audio_digest

    digest = audio_digest(tmp_path / "out", [{"audio": e.audio} for e in entries])
    assert summary["audio_sha256"] == digest
    channels = summary["audio_sha256_channels"]  # keyed by the manifests' paths, relative to the corpus
    assert sorted(Path(k).name for k in channels) == sorted(Path(e.audio).name for e in entries)
    assert all(len(d) == 2 for d in channels.values())  # assistant, user
    from e2e_voice.data.digests import machine_fingerprint

    assert summary["machine"] == machine_fingerprint()  # the machine that built it, recorded beside
    assert summary["built"] == datetime.date.today().isoformat()
    out = capsys.readouterr().out
    assert "real time" in out and f"audio sha256 (16-bit samples): {digest}" in out
    assert "built on: " in out


@pytest.mark.slow
def test_default_path_llm_kokoro_whisper(tmp_path: Path) -> None:
    """One conversation with the default engines: SmolLM2 answers, Kokoro assistant, Whisper alignment."""
    from e2e_voice.stt.whisper import WhisperSTT, word_error_rate

    code = cli.main(
        [
            "synth-data",
            "num_conversations=1",
            "workers=1",
            "exchanges=[1,1]",
            "scenarios.noise_prob=0",
            f"out_dir={tmp_path / 'out'}",
            f"cache.dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
    )
    assert code == 0
    entries = [
        e for s in ("train", "valid", "test") for e in read_manifest(tmp_path / "out" / f"{s}.jsonl").entries
    ]
    (e,) = entries
    assert e.voices[ASSISTANT].startswith("kokoro:jm_kumo")
    audio = _load(e)
    check_alignment(e)
    check_channels(e, audio)
    check_scenarios(e, audio)
    stt = WhisperSTT()
    for t in e.turns:
        if t.speaker == ASSISTANT and t.end - t.start > 1.0:
            heard = stt.transcribe(_seg(audio, CHANNEL_OF[ASSISTANT], t.start, t.end), SR)
            assert word_error_rate(t.text, heard) < 0.5, (t.text, heard)


class _FakeChat:
    """Stands in for the chat LM (the logic around it is under test): answers name the prompt and how
    many answers this instance gave, so another instance (another "machine") answers differently."""

    def __init__(self, tag: str) -> None:
        self.tag, self.calls = tag, 0

    def reply(self, prompt: str, history: list[dict[str, str]]) -> str:
        self.calls += 1
        return f"{self.tag} answer {self.calls} to {prompt.split()[0]} after {len(history) // 2}."


def _with_chat(monkeypatch: pytest.MonkeyPatch, chat: object) -> None:
    monkeypatch.setattr(synth.LLMAnswers, "_model", lambda self: chat)


def test_an_answer_bank_replaces_the_llm_and_rebuilds_the_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run writes the answers it used; given back as a bank they replace the LLM (here one that answers
    otherwise, like another machine's), and the corpus comes out byte-identical."""
    settings = fast_settings(tmp_path / "a", content_source="llm", num_conversations=3)
    first = _FakeChat("first")
    _with_chat(monkeypatch, first)
    generate(settings)
    bank = tmp_path / "a" / synth.ANSWERS_FILE
    records = json.loads(bank.read_text("utf-8"))
    assert first.calls == len(records) > 3 and all(r["answer"].startswith("first") for r in records)
    assert any(r["history"] for r in records)  # later answers carry their history

    other = _FakeChat("other")
    _with_chat(monkeypatch, other)
    generate(replace(settings, out_dir=tmp_path / "b", answer_bank=bank))
    assert other.calls == 0 and _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert (tmp_path / "b" / synth.ANSWERS_FILE).read_bytes() == bank.read_bytes()
    generate(replace(settings, out_dir=tmp_path / "c"))  # without the bank: other answers, another corpus
    assert other.calls > 0 and _digest(tmp_path / "c") != _digest(tmp_path / "a")

    # A bank that lacks an answer: the LLM fills it in, and the run says so.
    (tmp_path / "short.json").write_text(json.dumps(records[1:]), "utf-8")
    other.calls = 0
    capsys.readouterr()
    generate(replace(settings, out_dir=tmp_path / "d", answer_bank=tmp_path / "short.json"))
    assert other.calls >= 1 and "were not in the answer bank" in capsys.readouterr().out


def test_a_resumed_run_writes_every_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = fast_settings(
        tmp_path / "a",
        content_source="llm",
        num_conversations=3,
        use_cache=True,
        cache_root=tmp_path / "cache",
    )
    _with_chat(monkeypatch, _FakeChat("x"))
    _counting_render(monkeypatch, fail_after=1)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        generate(settings)
    _counting_render(monkeypatch)
    assert generate(settings).resumed == 1
    _counting_render(monkeypatch)
    generate(replace(settings, out_dir=tmp_path / "b"))
    bank = (tmp_path / "a" / synth.ANSWERS_FILE).read_bytes()
    assert bank == (tmp_path / "b" / synth.ANSWERS_FILE).read_bytes()


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), ("{not json", "not a list"), ('[{"prompt": "hi"}]', "not a list")],
)
def test_a_bad_answer_bank_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bank.json"
    if content is not None:
        path.write_text(content, "utf-8")
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        synth.read_answer_bank(path)
    with pytest.raises(ValueError, match=r"needs content\.source=llm"):
        fast_settings(tmp_path, answer_bank=path)  # templates: a bank would be ignored


@pytest.mark.parametrize(
    ("bank_name", "extra"),
    [
        ("synthetic_shared.json", ["content.prompt_splits=null"]),  # the codec recipes' corpus
        ("synthetic.json", []),  # the LM's corpus
    ],
)
def test_the_committed_banks_answer_every_conversation_of_their_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bank_name: str, extra: list[str]
) -> None:
    """Each committed bank answers all 60 conversations its README command plans, without the LLM: if
    planning or the prompt bank changed, the bank (and the claim that its corpus rebuilds) would be
    stale."""
    from hydra import compose, initialize_config_dir

    from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
    from e2e_voice.data.synth_cli import settings_from_config

    bank = REPO_ROOT / "data/answers" / bank_name
    overrides = ["num_conversations=60", *extra, f"content.answers={bank}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("synth_data", overrides=[*overrides, f"out_dir={tmp_path}"])
    settings = replace(settings_from_config(cfg), use_cache=False)

    def no_llm(self: object) -> object:
        raise AssertionError("the bank should answer every prompt")

    monkeypatch.setattr(synth.LLMAnswers, "_model", no_llm)
    llm = synth.LLMAnswers(settings)
    for i in range(settings.num_conversations):
        llm.conversation(plan(settings, i))
    assert llm.bank_misses == 0 and llm.bank is not None
    used = {synth.answer_key(r["history"], r["prompt"]) for rs in llm.records.values() for r in rs}
    assert used == set(llm.bank)  # and it holds nothing else
